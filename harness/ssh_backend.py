"""The ssh backend: nodes on hosts reached over SSH (paramiko), Jepsen-style.

``faultline run --backend ssh --nodes-file NODES.toml`` runs node ``n1`` on
the first host of the file, ``n2`` on the second, and so on::

    # NODES.toml: top-level keys are defaults for every node
    user = "root"
    key = "~/.ssh/id_ed25519"
    [[nodes]]
    host = "10.0.0.11"
    [[nodes]]
    host = "10.0.0.12"
    port = 2222
    # address = "10.1.0.12"  # the IP peers and the harness use (default: host, resolved)
    # python = "/opt/venv/bin/python"  # default: the node image's venv, else a new venv
    # workdir = "/tmp/faultline"       # run folders go under it
    # sudo = true                      # not root: run every command with sudo -n

(or the same as JSON: ``{"user": ..., "nodes": [{"host": ...}, ...]}``).

Host keys are checked against ``known_hosts`` (default ``~/.ssh/known_hosts``);
an unknown or changed key stops the run, unless ``insecure_host_keys``
(``--insecure-host-keys``) accepts any key, with a warning.

On each host the harness ships the project's source (the files its wheel is
made of) into ``<workdir>/<run>/src`` and runs the node with it first on
``PYTHONPATH``, under a Python that has the node's requirements: the one the
file names, else the node image's venv (``/opt/faultline``) when present,
else a venv it makes in ``<workdir>/venv`` from a wheelhouse built on this
machine (:func:`harness.wheelhouse.ensure_wheelhouse`; no network needed on
the host).  The node runs detached (nohup, setsid) with its log, config and
data in ``<workdir>/<run>/<node>``.  Faults are those of
:class:`harness.remote.RemoteBackend`: iptables in the ``FAULTLINE`` chain
(root needed), SIGKILL / restart, SIGSTOP / SIGCONT, clocks, disk failpoints
and crashes by the admin endpoint, delay and loss by netem or harness
proxies.  ``close()`` copies each node's folder back over SFTP, removes the
chain and the run's folder, and disconnects.
"""

from __future__ import annotations

import io
import json
import logging
import os
import secrets
import socket
import stat
import sys
import tarfile
import tomllib
import warnings
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from harness.remote import BackendError, RemoteBackend, RemoteNode, chain_teardown_script, q
from harness.wheelhouse import (PROBE, REQUIREMENTS_FILE, ROOT, WheelhouseError, cache_dir,
                                ensure_wheelhouse, project_files)

log = logging.getLogger("backend")

IMAGE_PYTHON = "/opt/faultline/bin/python"
CONNECT_TIMEOUT = 15.0


@dataclass
class SshHost:
    """One line of the nodes file."""

    host: str
    port: int = 22
    user: str = "root"
    #: private key file; None: the SSH agent and ~/.ssh/id_* keys
    key: str | None = None
    #: the node's IP as peers see it; None: ``host`` resolved here
    address: str | None = None
    python: str | None = None
    workdir: str = "/tmp/faultline"
    sudo: bool = False

    @property
    def label(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


_TYPES: dict[str, type] = {"host": str, "port": int, "user": str, "key": str, "address": str,
                           "python": str, "workdir": str, "sudo": bool}


def load_nodes_file(path: str | os.PathLike[str]) -> list[SshHost]:
    """The hosts of a nodes file (TOML, or JSON when it ends in .json or starts with
    ``{``); a :class:`BackendError` names the file and the field that is wrong."""
    path = str(path)
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise BackendError(f"{path}: cannot read the nodes file: {e.strerror or e}") from None
    try:
        if path.endswith(".json"):
            data = json.loads(text)
        else:
            try:
                data = tomllib.loads(text)
            except tomllib.TOMLDecodeError:
                if not text.lstrip().startswith(("{", "[{")):
                    raise
                data = json.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as e:
        raise BackendError(f"{path}: not valid TOML or JSON: {e}") from None
    if isinstance(data, list):
        data = {"nodes": data}
    if not isinstance(data, dict):
        raise BackendError(f"{path}: expected a table with a 'nodes' list")
    nodes = data.get("nodes")
    if not isinstance(nodes, list) or not nodes:
        raise BackendError(f"{path}: 'nodes': expected a non-empty list of nodes "
                           "([[nodes]] tables with at least host = ...)")
    defaults = {k: v for k, v in data.items() if k != "nodes"}
    _check_fields(path, "", defaults, need_host=False)
    hosts = []
    for i, entry in enumerate(nodes):
        where = f"nodes[{i}]"
        if not isinstance(entry, dict):
            raise BackendError(f"{path}: {where}: expected a table, got {entry!r}")
        merged = {**defaults, **entry}
        _check_fields(path, f"{where}.", merged, need_host=True)
        host = SshHost(**merged)
        if host.key:
            host.key = os.path.expanduser(host.key)
            if not Path(host.key).is_file():
                raise BackendError(f"{path}: {where}.key: no such file {host.key}")
        if not 0 < host.port < 65536:
            raise BackendError(f"{path}: {where}.port: {host.port} is not a TCP port")
        hosts.append(host)
    return hosts


def _check_fields(path: str, where: str, data: dict[str, Any], need_host: bool) -> None:
    known = {f.name for f in fields(SshHost)}
    for key, value in data.items():
        if key not in known:
            raise BackendError(f"{path}: {where}{key}: unknown field; expected one of "
                               f"{', '.join(sorted(known))}")
        want = _TYPES[key]
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            raise BackendError(f"{path}: {where}{key}: expected {want.__name__}, "
                               f"got {value!r}")
    if need_host and not data.get("host"):
        raise BackendError(f"{path}: {where}host: missing")


def source_tarball() -> bytes:
    """The project's source (what its wheel is built from) as a .tar.gz."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for rel in project_files():
            tar.add(ROOT / rel, arcname=str(rel))
    return buf.getvalue()


class SshBackend(RemoteBackend):
    """Nodes on SSH hosts; see the module docstring."""

    name = "ssh"

    def __init__(self, directory: str | Path, hosts: list[SshHost], config: dict[str, Any],
                 seed: int, *, shaping: bool = False, known_hosts: str | None = None,
                 insecure_host_keys: bool = False,
                 progress: Callable[[str], None] | None = None) -> None:
        super().__init__(directory, len(hosts), config, seed, shaping=shaping)
        self.hosts = dict(zip(self.node_ids, hosts))
        self.known_hosts = os.path.expanduser(known_hosts) if known_hosts else None
        self.insecure_host_keys = insecure_host_keys
        self.run_id = f"run-{seed}-{secrets.token_hex(4)}"
        self.progress = progress or (lambda m: print(f"ssh: {m}", file=sys.stderr))
        self._clients: dict[str, Any] = {}

    # ------------------------------------------------------------ connecting

    def _connect(self, nid: str) -> Any:
        import paramiko

        h = self.hosts[nid]
        client = paramiko.SSHClient()
        if self.insecure_host_keys:
            client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        else:
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            try:
                if self.known_hosts:
                    client.load_host_keys(self.known_hosts)
                else:
                    client.load_system_host_keys()
            except OSError as e:
                raise BackendError(f"ssh backend: cannot read known hosts "
                                   f"{self.known_hosts}: {e.strerror or e}") from None
        try:
            client.connect(h.host, port=h.port, username=h.user, key_filename=h.key,
                           look_for_keys=h.key is None, allow_agent=h.key is None,
                           timeout=CONNECT_TIMEOUT, banner_timeout=CONNECT_TIMEOUT,
                           auth_timeout=CONNECT_TIMEOUT)
        except paramiko.BadHostKeyException:
            raise BackendError(f"ssh node {nid} ({h.label}): its host key does not match "
                               f"{self.known_hosts or '~/.ssh/known_hosts'}") from None
        except paramiko.SSHException as e:
            hint = ""
            if "known_hosts" in str(e) or "not found in" in str(e):
                hint = (f": host key unknown to {self.known_hosts or '~/.ssh/known_hosts'} "
                        f"(add it with ssh-keyscan -p {h.port} {h.host}, or pass "
                        "--insecure-host-keys)")
            raise BackendError(f"ssh node {nid} ({h.label}): {e}{hint}") from None
        except OSError as e:
            raise BackendError(f"ssh node {nid} ({h.label}): cannot connect: "
                               f"{e.strerror or e}") from None
        transport = client.get_transport()
        if transport is not None:
            transport.set_keepalive(15)
        self._clients[nid] = client
        return client

    def _provision(self) -> tuple[list[RemoteNode], str]:
        if self.insecure_host_keys:
            warnings.warn("ssh backend: host keys are NOT checked (--insecure-host-keys)",
                          stacklevel=2)
            self.progress("WARNING: host keys are not checked (--insecure-host-keys)")
        self.each(self._connect)
        tarball = source_tarball()
        nodes = self.each(lambda nid: self._install(nid, tarball))
        sock = self._clients[self.node_ids[0]].get_transport().sock
        return [nodes[nid] for nid in self.node_ids], sock.getsockname()[0]

    def _install(self, nid: str, tarball: bytes) -> RemoteNode:
        """Ship the source, find (or make) a Python for the node; the node."""
        h = self.hosts[nid]
        base = f"{h.workdir}/{self.run_id}"
        self.run(nid, f"mkdir -p {q(base)}/src {q(base)}/{nid}", what="mkdir")
        self._upload(nid, tarball, f"{base}/src.tar.gz")
        self.run(nid, f"tar -xzf {q(base)}/src.tar.gz -C {q(base)}/src && rm {q(base)}/src.tar.gz",
                 what="unpacking the source")
        python = h.python or self._find_python(nid)
        node = RemoteNode(id=nid, address=h.address or _resolve(h.host), workdir=f"{base}/{nid}",
                          python=python, pythonpath=f"{base}/src")
        rc, out = self._sh(nid, f"cd / && PYTHONPATH={q(base)}/src {q(python)} -c "
                                f"{q('import system.node')}")
        if rc != 0:
            raise BackendError(f"ssh node {nid} ({h.label}): {python} cannot run the node: "
                               f"{out.strip().splitlines()[-1] if out.strip() else rc}; name a "
                               "python with aiohttp and msgpack (python = ... in the nodes file)")
        return node

    def _find_python(self, nid: str) -> str:
        h = self.hosts[nid]
        venv = f"{h.workdir}/venv/bin/python"
        rc, out = self._sh(nid, f"for p in {IMAGE_PYTHON} {q(venv)}; do "
                                '[ -x "$p" ] && "$p" -c "import aiohttp, msgpack" 2>/dev/null '
                                '&& { echo "$p"; exit 0; }; done; exit 1')
        if rc == 0:
            return out.strip().splitlines()[-1]
        return self._make_venv(nid)

    def _make_venv(self, nid: str) -> str:
        """A venv in ``<workdir>/venv`` with the node's requirements, installed
        offline from a wheelhouse built here for the host's Python."""
        h = self.hosts[nid]
        out = self.run(nid, f"python3 -c {q(PROBE)}", what="probing python3")
        py = json.loads(out.strip().splitlines()[-1])
        self.progress(f"{nid}: making a venv in {h.workdir}/venv (Python {py['version']})")
        try:
            wheels = ensure_wheelhouse(py, self.progress, cache_dir())
        except WheelhouseError as e:
            raise BackendError(f"ssh node {nid}: cannot make its wheelhouse: {e}") from None
        remote = f"{h.workdir}/wheels-{self.run_id}"
        files = sorted(p for p in wheels.rglob("*") if p.is_file())
        dirs = sorted({str(p.parent.relative_to(wheels)) for p in files})
        self.run(nid, "mkdir -p " + " ".join(q(f"{remote}/{d}") for d in dirs), what="mkdir")
        for f in files:
            self._upload(nid, f.read_bytes(), f"{remote}/{f.relative_to(wheels)}")
        venv = f"{h.workdir}/venv"
        links = " ".join(f"--find-links {q(f'{remote}/{d}')}" for d in dirs)
        # pip from its wheel when the wheelhouse has one (no ensurepip needed), else the venv's
        script = (f"whl=$(find {q(remote)} -name 'pip-*.whl' | head -n 1); "
                  f"req=$(find {q(remote)} -name {REQUIREMENTS_FILE} | head -n 1); "
                  f'if [ -n "$whl" ]; then python3 -m venv --without-pip {q(venv)} && '
                  f'pip="{venv}/bin/python $whl/pip"; else python3 -m venv {q(venv)} && '
                  f'pip="{venv}/bin/pip"; fi && '
                  f'$pip install -q --no-index --disable-pip-version-check {links} -r "$req"; '
                  f"rc=$?; rm -rf {q(remote)}; exit $rc")
        self.run(nid, script, timeout=600, what="making the venv")
        return f"{venv}/bin/python"

    # ------------------------------------------------------------ channel

    def _sh(self, node: str, script: str, *, timeout: float = 60.0) -> tuple[int, str]:
        client = self._clients.get(node)
        if client is None:
            return 255, f"ssh node {node}: not connected"
        cmd = "sh -c " + q(script)
        if self.hosts[node].sudo:
            cmd = "sudo -n " + cmd
        try:
            chan = client.get_transport().open_session(timeout=CONNECT_TIMEOUT)
            chan.settimeout(timeout)
            chan.set_combine_stderr(True)
            chan.exec_command(cmd)
            out = bytearray()
            while True:
                chunk = chan.recv(65536)
                if not chunk:
                    break
                out += chunk
            rc = chan.recv_exit_status()
            chan.close()
        except Exception as e:  # noqa: BLE001 - socket, paramiko and EOF errors alike
            return 255, f"ssh node {node}: {type(e).__name__}: {e}"
        return rc, out.decode(errors="replace")

    def _upload(self, node: str, data: bytes, path: str) -> None:
        with self._clients[node].open_sftp() as sftp:
            sftp.putfo(io.BytesIO(data), path)

    def _fetch(self, node: str, dest: Path) -> None:
        workdir = self.nodes[node].workdir
        if self.hosts[node].sudo:
            self._sh(node, f"chmod -R a+rX {q(workdir)}")
        with self._clients[node].open_sftp() as sftp:
            _get_tree(sftp, workdir, dest)

    def _release(self) -> None:
        def release(nid: str) -> None:
            try:
                base = f"{self.hosts[nid].workdir}/{self.run_id}"
                rc, out = self._sh(nid, f"{chain_teardown_script()}; rm -rf {q(base)}")
                if rc != 0:
                    log.warning("%s: cleanup: %s", nid, out.strip()[-200:])
            finally:
                self._clients.pop(nid).close()
        self.each(release, list(self._clients))


def _get_tree(sftp: Any, remote: str, local: Path) -> None:
    local.mkdir(parents=True, exist_ok=True)
    for attr in sftp.listdir_attr(remote):
        src, dst = f"{remote}/{attr.filename}", local / attr.filename
        if stat.S_ISDIR(attr.st_mode or 0):
            _get_tree(sftp, src, dst)
        elif stat.S_ISREG(attr.st_mode or 0):
            sftp.get(src, str(dst))


def _resolve(host: str) -> str:
    try:
        return socket.gethostbyname(host)
    except OSError as e:
        raise BackendError(f"ssh backend: cannot resolve {host}: {e}") from None
