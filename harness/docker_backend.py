"""The docker backend: one container per node on a private bridge network.

``faultline run --backend docker`` makes, for one run:

* a bridge network ``faultline-<run>`` on a free /24 (from 10.213.0.0/16,
  avoiding every subnet the engine and this host already use), and
* one container per node from the node image (:func:`harness.docker_image.
  ensure_image`), at a fixed address (``.11``, ``.12``, ...), with
  ``NET_ADMIN`` and an init process; the container's main process only
  sleeps, so the container, its network namespace and its iptables rules
  outlive the node process, which ``docker exec`` starts (and restarts) with
  its log, config and data under ``/var/lib/faultline``.

Every container and the network carry the label :data:`LABEL` (value: the
run id), so :func:`cleanup` (``faultline docker cleanup``) finds whatever a
crashed harness left.  The harness reaches each node's API and admin
endpoint at the container's address, from the host.

Faults: partitions, one-way ones too, are iptables rules in the
``FAULTLINE`` chain inside the containers (:mod:`harness.remote`); pause and
resume freeze the whole container (cgroup freezer, through the Docker API);
kill is SIGKILL to the node process inside its container, restart execs it
again on the same data; clocks, leadership transfer, disk failpoints and
crashes go through the admin endpoint; delay and loss
use netem inside the containers when the kernel has it, else harness-owned
TCP proxies listening on the bridge's gateway address (chosen at start; the
run's log says which).

``close()`` heals, stops the nodes, copies each container's
``/var/lib/faultline`` (log, config, data) into the run's folder, removes the
containers and the network; a Ctrl-C during it is held until it is done.

The engine is the one ``docker.from_env()`` finds: ``DOCKER_HOST``
(``unix://``, ``tcp://`` or ``ssh://user@host``) selects another one.  With a
remote engine the harness must still be able to reach the containers'
addresses (run the harness on the engine's host, or route the subnet to it).
"""

from __future__ import annotations

import io
import ipaddress
import json
import logging
import os
import secrets
import shlex
import shutil
import sys
import tarfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

from harness import docker_image
from harness.remote import BackendError, RemoteBackend, RemoteNode

log = logging.getLogger("backend")

#: Label on every container and network the harness makes; its value is the run id.
LABEL = "faultline.run"
NODE_LABEL = "faultline.node"
#: The node image's interpreter (a venv with the project and its requirements).
IMAGE_PYTHON = "/opt/faultline/bin/python"
WORKDIR = "/var/lib/faultline"
#: Where run networks are carved from (one /24 each).
SUBNET_POOL = ipaddress.IPv4Network("10.213.0.0/16")
FIRST_HOST = 11


def docker_client() -> Any:
    """A client of the engine ``DOCKER_HOST`` names (or the local socket), or a
    one-line :class:`BackendError` saying which engine does not answer."""
    try:
        return docker_image.docker_client(timeout=120)
    except docker_image.DockerImageError as e:
        raise BackendError(f"docker backend: {e}") from None


def _used_subnets(client: Any) -> list[ipaddress.IPv4Network]:
    used = []
    for net in client.networks.list():
        for cfg in (net.attrs.get("IPAM") or {}).get("Config") or []:
            try:
                n = ipaddress.ip_network(cfg.get("Subnet", ""), strict=False)
            except ValueError:
                continue
            if isinstance(n, ipaddress.IPv4Network):
                used.append(n)
    try:  # this host's routes (the engine's host, when local)
        with open("/proc/net/route") as fh:
            for line in fh.read().splitlines()[1:]:
                f = line.split()
                dest, mask = (int(f[1], 16), int(f[7], 16))
                if mask:
                    used.append(ipaddress.IPv4Network(
                        (ipaddress.IPv4Address(dest.to_bytes(4, "little")),
                         bin(mask).count("1")), strict=False))
    except (OSError, ValueError, IndexError):
        pass
    return used


def free_subnets(client: Any) -> list[ipaddress.IPv4Network]:
    """The /24s of :data:`SUBNET_POOL` that overlap no network of the engine or route."""
    used = _used_subnets(client)
    return [s for s in SUBNET_POOL.subnets(new_prefix=24) if not any(s.overlaps(u) for u in used)]


class ContainerSet:
    """A labelled bridge network and one sleeping node-image container per name.

    Used by :class:`DockerBackend`, and by the ssh backend's tests to make
    hosts that run sshd."""

    def __init__(self, client: Any, run_id: str, image: str, names: list[str]) -> None:
        self.client, self.run_id, self.image, self.names = client, run_id, image, names
        self.network_name = f"faultline-{run_id}"
        self.network: Any = None
        self.subnet: ipaddress.IPv4Network | None = None
        self.containers: dict[str, Any] = {}
        self.addresses: dict[str, str] = {}

    @property
    def labels(self) -> dict[str, str]:
        return {LABEL: self.run_id}

    @property
    def gateway(self) -> str:
        assert self.subnet is not None
        return str(self.subnet.network_address + 1)

    def create(self) -> None:
        import docker.errors
        from docker.types import IPAMConfig, IPAMPool

        for subnet in free_subnets(self.client)[:20]:
            try:
                self.network = self.client.networks.create(
                    self.network_name, driver="bridge", labels=self.labels,
                    ipam=IPAMConfig(pool_configs=[IPAMPool(
                        subnet=str(subnet), gateway=str(subnet.network_address + 1))]))
                self.subnet = subnet
                break
            except docker.errors.APIError as e:  # taken meanwhile by someone else
                if "overlap" not in str(e).lower():
                    raise BackendError(f"docker backend: cannot create network "
                                       f"{self.network_name}: {e}") from None
        if self.network is None:
            raise BackendError(f"docker backend: no free /24 left in {SUBNET_POOL}")
        api = self.client.api
        for i, name in enumerate(self.names):
            ip = str(self.subnet.network_address + FIRST_HOST + i)
            host_config = api.create_host_config(cap_add=["NET_ADMIN"], init=True,
                                                 network_mode=self.network_name)
            netcfg = api.create_networking_config(
                {self.network_name: api.create_endpoint_config(ipv4_address=ip)})
            try:
                cid = api.create_container(
                    self.image, name=f"faultline-{self.run_id}-{name}", hostname=name,
                    labels={**self.labels, NODE_LABEL: name}, host_config=host_config,
                    networking_config=netcfg, detach=True)["Id"]
                api.start(cid)
            except docker.errors.APIError as e:
                raise BackendError(f"docker backend: cannot start the container of {name} "
                                   f"from {self.image}: {e}") from None
            self.containers[name] = self.client.containers.get(cid)
            self.addresses[name] = ip

    def enable_sshd(self, public_key: str) -> list[str]:
        """Start sshd in every container, root logging in with ``public_key``; each
        container gets host keys of its own (the image's are shared by all).  The
        known_hosts lines of the containers."""
        script = ("rm -f /etc/ssh/ssh_host_* && ssh-keygen -A >/dev/null && "
                  "mkdir -p /run/sshd /root/.ssh && chmod 700 /root/.ssh && "
                  f"printf '%s\\n' {shlex.quote(public_key.strip())} > /root/.ssh/authorized_keys && "
                  "chmod 600 /root/.ssh/authorized_keys && /usr/sbin/sshd && "
                  "cat /etc/ssh/ssh_host_ed25519_key.pub")
        known = []
        for name, c in self.containers.items():
            res = c.exec_run(["sh", "-c", script])
            if res.exit_code != 0:
                raise BackendError(f"sshd in {name}: {res.output.decode(errors='replace')}")
            kind, key = res.output.decode().split()[:2]
            known.append(f"{self.addresses[name]} {kind} {key}")
        return known

    def remove(self) -> list[str]:
        """Remove this run's containers and network (also ones not recorded yet)."""
        return _remove_labelled(self.client, f"{LABEL}={self.run_id}")


def _remove_labelled(client: Any, label: str) -> list[str]:
    import docker.errors

    removed = []
    for c in client.containers.list(all=True, filters={"label": label}):
        try:
            c.remove(force=True, v=True)
            removed.append(c.name)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            log.warning("could not remove container %s: %s", c.name, e)
    for net in client.networks.list(filters={"label": label}):
        try:
            net.remove()
            removed.append(net.name)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:
            log.warning("could not remove network %s: %s", net.name, e)
    return removed


def cleanup(client: Any = None, run_id: str | None = None) -> list[str]:
    """Remove every container and network carrying :data:`LABEL` -- of every run
    (runs still going included: it is the after-a-crash broom), or of ``run_id``
    only; their names."""
    return _remove_labelled(client or docker_client(),
                            LABEL if run_id is None else f"{LABEL}={run_id}")


def extract_tree(stream: io.BufferedIOBase | bytes, dest: Path) -> None:
    """Extract a ``get_archive`` tar (one top folder) into ``dest``, top folder
    dropped; only regular files and folders, never outside ``dest``."""
    data = stream if isinstance(stream, bytes) else stream.read()
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar.getmembers():
            parts = PurePosixPath(m.name).parts[1:]
            if not parts or ".." in parts or PurePosixPath(m.name).is_absolute():
                continue
            target = dest.joinpath(*parts)
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif m.isfile():
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(m)
                if src is not None:
                    with open(target, "wb") as out:
                        shutil.copyfileobj(src, out)


def _quiet_progress(line: str) -> None:
    """Image messages worth a line on stderr: those of a build, not of a reuse."""
    if any(w in line for w in ("building", "debootstrap", "downloaded", "built", "Step ",
                               "making", "imported")):
        print(f"docker: {line}", file=sys.stderr)
    else:
        log.info("docker: %s", line)


class DockerBackend(RemoteBackend):
    """Nodes in containers of one engine; see the module docstring."""

    name = "docker"
    freezes_hosts = True

    def __init__(self, directory: str | Path, n: int, config: dict[str, Any], seed: int, *,
                 shaping: bool = False, image: str | None = None, client: Any = None,
                 progress: Callable[[str], None] | None = None) -> None:
        super().__init__(directory, n, config, seed, shaping=shaping)
        self.image = image
        self.client = client
        self.run_id = f"{seed}-{secrets.token_hex(4)}"
        self.progress = progress or _quiet_progress
        self.hosts: ContainerSet | None = None

    def _provision(self) -> tuple[list[RemoteNode], str]:
        if self.client is None:
            self.client = docker_client()
        if self.image is None:
            try:
                self.image = docker_image.ensure_image(log=self.progress)
            except docker_image.DockerImageError as e:
                raise BackendError(f"docker backend: {e}") from None
        self.hosts = ContainerSet(self.client, self.run_id, self.image, self.node_ids)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "docker.json").write_text(json.dumps(  # what to look for if this crashes
            {"run_id": self.run_id, "label": f"{LABEL}={self.run_id}", "image": self.image,
             "network": self.hosts.network_name,
             "engine": os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")}, indent=2))
        self.hosts.create()
        nodes = [RemoteNode(id=nid, address=self.hosts.addresses[nid], workdir=WORKDIR,
                            python=IMAGE_PYTHON) for nid in self.node_ids]
        return nodes, self.hosts.gateway

    def _container(self, node: str) -> Any:
        assert self.hosts is not None
        return self.hosts.containers[node]

    def _sh(self, node: str, script: str, *, timeout: float = 60.0) -> tuple[int, str]:
        import docker.errors

        try:
            res = self._container(node).exec_run(["sh", "-c", script], user="root")
        except docker.errors.APIError as e:
            return 125, f"docker exec: {e}"
        return res.exit_code, (res.output or b"").decode(errors="replace")

    def _fetch(self, node: str, dest: Path) -> None:
        stream, _ = self._container(node).get_archive(WORKDIR)
        extract_tree(b"".join(stream), dest)

    def _freeze(self, node: str) -> None:
        self._container(node).pause()

    def _thaw(self, node: str) -> None:
        self._container(node).unpause()

    def _release(self) -> None:
        if self.client is None:
            return
        if self.hosts is None:  # interrupted before the containers were recorded
            self.hosts = ContainerSet(self.client, self.run_id, self.image or "", [])
        removed = self.hosts.remove()
        log.info("docker backend: removed %s", ", ".join(removed) or "nothing")
