"""The node's wheels, built on this host for another machine's Python.

The docker node image and the ssh backend's venvs install the store from a
wheelhouse made here, so neither needs a network where it installs.
:func:`ensure_wheelhouse` makes one for a target Python (version, machine and
libc, as :data:`PROBE` prints them there): ``project/`` the project's wheel,
``deps/`` the node's requirements (the ``node`` extra of pyproject.toml,
nothing else: no pandas, matplotlib or boto3) and their dependencies with
requirements-node.txt, ``pip/`` pip itself.  It is kept under
:func:`cache_dir`, keyed by the requirements, the target and a hash of the
project's source; the downloads are keyed apart, so a change of the source
only builds the project's wheel again.

The image build shares the rest of this module: input hashes, the cache
folder, a lock per build and timed steps.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
import zipfile
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
#: Bump when the wheelhouse layout changes.
WHEELHOUSE_RECIPE = "2"
REQUIREMENTS_FILE = "requirements-node.txt"
#: Python code that prints what a wheelhouse must fit: run by the target's python3.
PROBE = ("import json, platform, sys; print(json.dumps({'version': '%d.%d' % "
         "sys.version_info[:2], 'machine': platform.machine(), "
         "'libc': platform.libc_ver()}))")

Log = Callable[[str], None]


class WheelhouseError(RuntimeError):
    """The wheelhouse cannot be made; the message says what to do about it."""


# ------------------------------------------------------------------ hashing

def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def inputs_hash(parts: dict[str, Any]) -> str:
    """A stable hash of named inputs (strings, bytes, or nested dicts/lists)."""
    def norm(v: Any) -> Any:
        if isinstance(v, bytes):
            return "sha256:" + _sha256(v)
        if isinstance(v, dict):
            return {str(k): norm(x) for k, x in sorted(v.items())}
        if isinstance(v, (list, tuple)):
            return [norm(x) for x in v]
        return v
    return _sha256(json.dumps(norm(parts), sort_keys=True).encode())


def wheel_content_hash(path: Path) -> str:
    """A wheel's hash over its members' names and bytes, not the zip's timestamps, so
    the same source built twice hashes the same."""
    if path.suffix != ".whl":
        return _sha256(path.read_bytes())
    h = hashlib.sha256()
    with zipfile.ZipFile(path) as z:
        for name in sorted(z.namelist()):
            h.update(name.encode() + b"\0" + _sha256(z.read(name)).encode() + b"\n")
    return h.hexdigest()


def wheelhouse_hashes(wheels_dir: Path) -> dict[str, str]:
    """Content hash of every file of a wheelhouse, by path relative to it."""
    return {str(p.relative_to(wheels_dir)): wheel_content_hash(p)
            for p in sorted(wheels_dir.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ the project

def _pyproject(root: Path = ROOT) -> dict[str, Any]:
    path = root / "pyproject.toml"
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise WheelhouseError(
            f"{path} not found: the wheelhouse is built from a source checkout of "
            "faultline (pip install -e .)") from None


def node_requirements(root: Path = ROOT) -> list[str]:
    """The node's own requirements: the ``node`` extra of pyproject.toml."""
    extras = _pyproject(root)["project"].get("optional-dependencies", {})
    if "node" not in extras:
        raise WheelhouseError(f"{root / 'pyproject.toml'}: no 'node' extra "
                              "([project.optional-dependencies] node = [...])")
    return list(extras["node"])


def project_files(root: Path = ROOT) -> list[Path]:
    """The files the project's wheel is built from (relative to ``root``)."""
    include = (_pyproject(root).get("tool", {}).get("setuptools", {}).get("packages", {})
               .get("find", {}).get("include", ["*"]))
    files = [Path("pyproject.toml")]
    if (root / "README.md").exists():
        files.append(Path("README.md"))
    for top in sorted(root.iterdir()):
        if not (top.is_dir() and (top / "__init__.py").exists()
                and any(fnmatch(top.name, pat) for pat in include)):
            continue
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if d != "__pycache__" and
                                 not d.startswith("."))
            for name in sorted(filenames):
                if name.endswith((".pyc", ".pyo")) or name.startswith("."):
                    continue
                files.append((Path(dirpath) / name).relative_to(root))
    return files


def source_hash(root: Path = ROOT) -> str:
    return inputs_hash({str(p): (root / p).read_bytes() for p in project_files(root)})


# ------------------------------------------------------------------ cache, lock, steps

def cache_dir() -> Path:
    """Where wheelhouses and image build state are kept (``$FAULTLINE_CACHE_DIR``)."""
    d = os.environ.get("FAULTLINE_CACHE_DIR")
    if d:
        return Path(d)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "faultline"


@contextlib.contextmanager
def timed(log: Log, what: str) -> Iterator[None]:
    """Log ``what`` with the seconds the block took (the build prints every step's time)."""
    t0 = time.monotonic()
    yield
    log(f"{what} ({time.monotonic() - t0:.1f} s)")


@contextlib.contextmanager
def build_lock(path: Path, log: Log) -> Iterator[None]:
    """One builder at a time per cache dir (tests and CI may race)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another build to finish (lock {path})")
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# ------------------------------------------------------------------ the wheelhouse

def wheel_platforms(machine: str, libc: tuple[str, str] | list[str]) -> list[str]:
    """pip ``--platform`` tags a glibc base accepts (pip does not expand
    ``manylinux_2_X`` downwards by itself)."""
    name, version = libc
    m = re.match(r"(\d+)\.(\d+)", version or "")
    if name != "glibc" or not m:
        raise WheelhouseError(f"base libc is {name or 'unknown'} {version}: only glibc "
                              "bases are supported (Debian, python:3.11-slim)")
    major, minor = int(m.group(1)), int(m.group(2))
    tags = [f"manylinux_{major}_{v}_{machine}" for v in range(minor, 4, -1)]
    return tags + [f"manylinux2014_{machine}"]  # pip adds manylinux2010 and manylinux1


def ensure_wheelhouse(py: dict[str, Any], log: Log, cache: Path, rebuild: bool = False) -> Path:
    """The wheelhouse folder for the Python ``py`` describes (what :data:`PROBE`
    printed there), made or reused; see the module docstring for its layout."""
    with build_lock(cache / "wheelhouse.lock", log):  # image builds and ssh runs may race
        return _ensure_wheelhouse(py, log, cache, rebuild)


def _ensure_wheelhouse(py: dict[str, Any], log: Log, cache: Path, rebuild: bool) -> Path:
    reqs = node_requirements()
    platforms = wheel_platforms(py["machine"], py["libc"])
    deps_key = inputs_hash({"recipe": WHEELHOUSE_RECIPE, "reqs": reqs,
                            "python": py["version"], "platforms": platforms})
    key = inputs_hash({"deps": deps_key, "source": source_hash()})
    dest = cache / "wheelhouse" / key[:16]
    if dest.is_dir() and not rebuild:
        os.utime(dest)
        log(f"wheelhouse: {dest} (reused, {len(list(dest.glob('*/*.whl')))} wheels)")
        return dest
    deps = _ensure_deps(py, reqs, platforms, cache / "deps" / deps_key[:16], log, rebuild)
    with _replacing(dest) as out, tempfile.TemporaryDirectory(
            prefix="tmp-", dir=dest.parent) as scratch:
        stage = Path(scratch) / "src"
        for rel in project_files():
            (stage / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, stage / rel)
        (out / "project").mkdir(parents=True)
        with timed(log, "wheelhouse: project wheel built"):
            _run([*_PIP, "wheel", "-q", "--no-deps", "-w", str(out / "project"), str(stage)],
                 "pip wheel")
        for sub in ("deps", "pip"):
            shutil.copytree(deps / sub, out / sub)
    log(f"wheelhouse: {dest} ({len(list(dest.glob('*/*.whl')))} wheels)")
    return dest


_PIP = [sys.executable, "-m", "pip", "--disable-pip-version-check"]


def _ensure_deps(py: dict[str, Any], reqs: list[str], platforms: list[str], dest: Path,
                 log: Log, rebuild: bool) -> Path:
    """``deps/`` and ``pip/`` wheels for the base's Python, downloaded once."""
    if dest.is_dir() and not rebuild:
        os.utime(dest)
        return dest
    with _replacing(dest) as work:
        vtag = py["version"].replace(".", "")
        target = ["--only-binary=:all:", "--python-version", py["version"],
                  "--implementation", "cp", "--abi", f"cp{vtag}", "--abi", "abi3",
                  "--abi", "none"]
        for p in platforms:
            target += ["--platform", p]
        with timed(log, f"wheelhouse: {', '.join(reqs)}, their dependencies and pip "
                   f"downloaded for CPython {py['version']} {py['machine']}"):
            _run([*_PIP, "download", "-q", "--dest", str(work / "deps"), *target, *reqs],
                 "pip download")
            _run([*_PIP, "download", "-q", "--no-deps", "--dest", str(work / "pip"), *target,
                  "pip"], "pip download pip")
        (work / "deps" / REQUIREMENTS_FILE).write_text("\n".join(reqs) + "\n")
    return dest


@contextlib.contextmanager
def _replacing(dest: Path) -> Iterator[Path]:
    """A scratch folder beside ``dest`` to fill; when the block succeeds it
    replaces ``dest`` in one rename and older siblings are pruned, otherwise
    it is removed and ``dest`` is left as it was."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="tmp-", dir=dest.parent))
    try:
        yield work
        if dest.exists():
            shutil.rmtree(dest)
        work.rename(dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _prune(dest.parent, keep=dest)


def _prune(parent: Path, keep: Path, newest: int = 3) -> None:
    """Keep the ``newest`` wheelhouses (by last use), drop the rest."""
    dirs = sorted((d for d in parent.iterdir() if d.is_dir() and not d.name.startswith("tmp-")),
                  key=lambda d: d.stat().st_mtime, reverse=True)
    for d in dirs[newest:]:
        if d != keep:
            shutil.rmtree(d, ignore_errors=True)


def _run(cmd: list[str], what: str) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-15:])
        raise WheelhouseError(f"{what} failed (exit {r.returncode}):\n{tail}")
