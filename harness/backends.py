"""Where a test's nodes run: the backend a spec names, made ready for the runner.

* ``local`` -- :class:`harness.local_backend.LocalBackend`: processes on
  loopback, faults through proxies and signals.
* ``docker`` -- :class:`harness.docker_backend.DockerBackend`: one container
  per node on a private bridge network, faults by iptables and the freezer.
* ``ssh`` -- :class:`harness.ssh_backend.SshBackend`: nodes on hosts listed in
  ``spec.nodes_file``, reached with SSH.

Every backend implements :class:`nemesis.faults.Backend` plus the lifecycle
of :class:`RunBackend`; the runner sees nothing else, and waits for a leader
with :func:`wait_for_leader` (the one of :mod:`harness.poll`, for any of them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from harness.poll import wait_for_leader
from harness.remote import SHAPING_FAULTS, BackendError
from harness.spec import TestSpec
from nemesis.faults import Backend

__all__ = ["BackendError", "RunBackend", "make_backend", "wait_for_leader"]


class RunBackend(Backend, Protocol):
    """What the runner needs of a backend besides the faults."""

    def start(self, timeout: float = 60.0) -> None: ...

    def leader(self) -> str | None:
        """The leader's id alone: what :func:`wait_for_leader` polls."""

    def endpoints(self) -> list[tuple[str, str]]:
        """``(node id, "http://host:port")`` of every node's DynamoDB API."""

    def node_statuses(self) -> dict[str, dict[str, Any] | None]:
        """Each running node's ``/status``: its lease counters, after the final reads."""

    def log_files(self) -> list[Path]:
        """Node logs on this machine (the remote backends' after ``close``)."""

    def heal_all(self) -> None: ...

    def close(self) -> None:
        """Heal, stop every node, release every resource; safe twice and after a
        failed start."""


def make_backend(spec: TestSpec, directory: Path, seed: int) -> RunBackend:
    """The backend ``spec.backend`` names, not started; node state goes under ``directory``."""
    config = spec.node_config()
    shaping = bool(SHAPING_FAULTS & set(spec.fault_names))
    if spec.backend == "local":
        from harness.local_backend import LocalBackend

        return LocalBackend(directory, spec.nodes, config, seed)
    if spec.backend == "docker":
        from harness.docker_backend import DockerBackend

        return DockerBackend(directory, spec.nodes, config, seed, shaping=shaping)
    if spec.backend == "ssh":
        from harness.ssh_backend import SshBackend, load_nodes_file

        if not spec.nodes_file:
            raise BackendError("--nodes-file: required with --backend ssh")
        hosts = load_nodes_file(spec.nodes_file)
        if len(hosts) < spec.nodes:
            raise BackendError(f"{spec.nodes_file}: lists {len(hosts)} node(s), the test "
                               f"asks for {spec.nodes} (--nodes)")
        return SshBackend(directory, hosts[:spec.nodes], config, seed, shaping=shaping,
                          known_hosts=spec.known_hosts,
                          insecure_host_keys=spec.insecure_host_keys)
    raise BackendError(f"unknown backend {spec.backend!r}")

