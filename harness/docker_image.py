"""The node image of the docker backend, built without a container registry.

:func:`ensure_image` returns the tag of an image that runs ``python -m
system.node`` (and has iptables, iproute2, sshd and pkill for the faults and
the ssh backend), building what is missing in three steps:

1. base: the ``base`` given, or ``python:3.11-slim`` if the engine already
   has it, or else a minimal Debian root filesystem made on this host with
   debootstrap from the suite and mirror of the host's own apt sources, then
   ``docker import``-ed as ``faultline-base:<suite>-<hash>``.  Nothing is
   ever pulled.
2. wheelhouse: the project's wheel and the node's requirements (the ``node``
   extra of pyproject.toml, nothing else: no pandas, matplotlib or boto3),
   fetched by pip on the host for the base image's Python and platform and
   kept under ``~/.cache/faultline`` (``$FAULTLINE_CACHE_DIR``), keyed by a
   hash of the project's source.
3. image: ``docker build`` of docker/Dockerfile with ``--build-arg BASE`` and
   the wheelhouse as the build context (``pip install --no-index``: the
   build needs no network), tagged ``faultline-node:<hash12>`` and
   ``faultline-node:latest``, where the hash covers the Dockerfile, the base
   image's id and every wheel.  Unchanged inputs reuse the image.

Everything goes through the Docker SDK (``docker`` package), the build too
(the legacy builder: ``ARG`` before ``FROM`` works there).
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
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
IMAGE_REPO = "faultline-node"
BASE_REPO = "faultline-base"
DEFAULT_BASE = "python:3.11-slim"
#: What the debootstrapped base holds (the Dockerfile installs the same when missing).
BASE_PACKAGES = ("python3", "python3-venv", "iptables", "iproute2", "openssh-server",
                 "procps", "ca-certificates")
#: Bump when the way the base root filesystem is made changes.
BASE_RECIPE = "minbase-1"
#: Bump when the wheelhouse layout changes.
WHEELHOUSE_RECIPE = "2"
REQUIREMENTS_FILE = "requirements-node.txt"
LABEL_INPUTS = "faultline.image.inputs"
#: faultline-node images kept when a new one is built (older ones are untagged).
KEEP_IMAGES = 4
LABEL_BASE = "faultline.image.base"

Log = Callable[[str], None]


class DockerImageError(RuntimeError):
    """The image cannot be had; the message says what to do about it."""


# ------------------------------------------------------------------ apt sources

@dataclass(frozen=True)
class AptSource:
    """One enabled (type, URI, suite) line of the host's apt sources."""

    type: str
    uri: str
    suite: str
    components: tuple[str, ...]
    signed_by: str | None = None


def parse_one_line(text: str) -> list[AptSource]:
    """``deb [opt=val ...] URI SUITE COMPONENT...`` lines (sources.list)."""
    out = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        opts: dict[str, str] = {}
        m = re.match(r"^(\S+)\s+\[([^\]]*)\]\s*(.*)$", line)
        if m:
            kind, options, rest = m.groups()
            for opt in options.split():
                k, _, v = opt.partition("=")
                opts[k.lower()] = v
        else:
            kind, _, rest = line.partition(" ")
        words = rest.split()
        if kind not in ("deb", "deb-src") or len(words) < 2:
            continue
        out.append(AptSource(kind, words[0].rstrip("/"), words[1], tuple(words[2:]),
                             opts.get("signed-by")))
    return out


def parse_deb822(text: str) -> list[AptSource]:
    """Stanzas of ``Types: / URIs: / Suites: / Components:`` (``*.sources``)."""
    stanzas: list[dict[str, str]] = []
    cur: dict[str, str] = {}
    last = None
    for raw in text.splitlines() + [""]:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if cur:
                stanzas.append(cur)
            cur, last = {}, None
            continue
        if raw[0] in " \t" and last is not None:  # a continuation line
            cur[last] += "\n" + raw.strip()
            continue
        key, sep, value = raw.partition(":")
        if not sep:
            continue
        last = key.strip().lower()
        cur[last] = value.strip()
    out = []
    for st in stanzas:
        if st.get("enabled", "yes").strip().lower() in ("no", "false", "0"):
            continue
        signed = st.get("signed-by")
        if signed and "\n" in signed:  # an inline key block, not a path
            signed = None
        for kind in st.get("types", "").split():
            if kind not in ("deb", "deb-src"):
                continue
            for uri in st.get("uris", "").split():
                for suite in st.get("suites", "").split():
                    out.append(AptSource(kind, uri.rstrip("/"), suite,
                                         tuple(st.get("components", "").split()), signed))
    return out


def read_apt_sources(root: str | os.PathLike[str] = "/") -> list[AptSource]:
    """Every enabled source apt itself would read under ``root``, in apt's order."""
    etc = Path(root) / "etc" / "apt"
    out: list[AptSource] = []
    files = [etc / "sources.list"]
    d = etc / "sources.list.d"
    if d.is_dir():
        files += sorted(p for p in d.iterdir() if p.suffix in (".list", ".sources"))
    for f in files:
        try:
            text = f.read_text()
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            continue
        out += parse_deb822(text) if f.suffix == ".sources" else parse_one_line(text)
    return out


def host_codename(root: str | os.PathLike[str] = "/") -> str | None:
    try:
        text = (Path(root) / "etc" / "os-release").read_text()
    except FileNotFoundError:
        return None
    m = re.search(r"^VERSION_CODENAME=\"?([^\"\n]*)\"?$", text, re.M)
    return m.group(1) or None if m else None


def choose_mirror(sources: list[AptSource], codename: str | None = None) -> AptSource:
    """The ``deb`` source of the release itself: suite = the host's codename when
    known, else the first suite that is not an -updates/-security/... pocket."""
    debs = [s for s in sources if s.type == "deb" and "main" in s.components]
    for s in debs:
        if codename and s.suite == codename:
            return s
    for s in debs:
        if "-" not in s.suite and "/" not in s.suite:
            return s
    raise DockerImageError(
        "no Debian release found in the host's apt sources (/etc/apt/sources.list, "
        "/etc/apt/sources.list.d/): cannot debootstrap a base; pass --base IMAGE "
        "with an image the engine already has")


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


def image_inputs_hash(dockerfile: bytes, base_id: str, wheels: dict[str, str]) -> str:
    """What the node image is made of: the Dockerfile, the base image's id and the
    content hash of every file of the wheelhouse."""
    return inputs_hash({"dockerfile": dockerfile, "base": base_id, "wheels": wheels})


def base_inputs_hash(source: AptSource, packages: tuple[str, ...] = BASE_PACKAGES) -> str:
    return inputs_hash({"recipe": BASE_RECIPE, "uri": source.uri, "suite": source.suite,
                        "components": sorted(source.components), "packages": sorted(packages)})


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


def _pyproject(root: Path = ROOT) -> dict[str, Any]:
    path = root / "pyproject.toml"
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise DockerImageError(
            f"{path} not found: the node image is built from a source checkout of "
            "faultline (pip install -e .)") from None


def node_requirements(root: Path = ROOT) -> list[str]:
    """The node's own requirements: the ``node`` extra of pyproject.toml."""
    extras = _pyproject(root)["project"].get("optional-dependencies", {})
    if "node" not in extras:
        raise DockerImageError(f"{root / 'pyproject.toml'}: no 'node' extra "
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


# ------------------------------------------------------------------ helpers

def cache_dir() -> Path:
    d = os.environ.get("FAULTLINE_CACHE_DIR")
    if d:
        return Path(d)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "faultline"


@contextlib.contextmanager
def _step(log: Log, what: str) -> Iterator[None]:
    t0 = time.monotonic()
    yield
    log(f"{what} ({time.monotonic() - t0:.1f} s)")


@contextlib.contextmanager
def _lock(path: Path, log: Log) -> Iterator[None]:
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


def docker_client(timeout: int = 600):  # noqa: ANN201 - docker.DockerClient
    """A client of an engine that answers (``DOCKER_HOST``, else the local
    socket), or :class:`DockerImageError` saying which engine does not."""
    try:
        import docker
    except ImportError:
        raise DockerImageError("the docker Python package is missing: pip install "
                               "'docker>=7' (or pip install -e .)") from None
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except Exception as e:  # noqa: BLE001 - DockerException, requests and OS errors
        host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
        reason = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise DockerImageError(f"the Docker engine is not answering at {host}: {reason} "
                               "(is dockerd running? is DOCKER_HOST right?)") from None
    return client


def _image(client, ref: str):  # noqa: ANN202 - Image | None
    import docker.errors

    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# ------------------------------------------------------------------ step 1: base

def _base_from_debootstrap(client, log: Log, cache: Path) -> tuple[str, Any]:
    source = choose_mirror(read_apt_sources(), host_codename())
    digest = base_inputs_hash(source)
    tag = f"{BASE_REPO}:{source.suite}-{digest[:12]}"
    img = _image(client, tag)
    if img is not None:
        log(f"base: {tag} (reused)")
        return tag, img
    tool = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin:/sbin")
    if tool is None:
        raise DockerImageError(
            f"{DEFAULT_BASE} is not in the engine and no registry can be assumed, so the "
            "base image is made with debootstrap, which is missing: apt-get install "
            "debootstrap (or pass --base IMAGE with an image the engine has)")
    if os.geteuid() != 0:
        raise DockerImageError("debootstrap needs root to make the base image: run "
                               "`faultline docker build` once as root, or pass --base IMAGE")
    cache.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="base-", dir=cache))
    rootfs, tarball, logfile = work / "rootfs", work / "rootfs.tar", cache / "debootstrap.log"
    try:
        cmd = [tool, "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}",
               f"--components={','.join(source.components)}"]
        if source.signed_by and Path(source.signed_by).is_file():
            cmd.append(f"--keyring={source.signed_by}")
        cmd += [source.suite, str(rootfs), source.uri]
        log(f"base: {DEFAULT_BASE} not in the engine; making {tag} with debootstrap "
            f"({source.suite} from {source.uri}; log in {logfile}, takes minutes)")
        with _step(log, "base: debootstrap done"):
            with open(logfile, "w") as fh:
                rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL).returncode
            if rc != 0:
                raise DockerImageError(f"debootstrap failed (exit {rc}); the end of "
                                       f"{logfile}:\n{_tail(logfile)}")
        _slim_rootfs(rootfs)
        with _step(log, f"base: imported {tag}"):
            subprocess.run(["tar", "--numeric-owner", "--xattrs", "-C", str(rootfs),
                            "-cf", str(tarball), "."], check=True)
            shutil.rmtree(rootfs, ignore_errors=True)
            repo, _, version = tag.partition(":")
            client.api.import_image_from_file(
                str(tarball), repository=repo, tag=version,
                changes=["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                         "ENV LANG=C.UTF-8", 'CMD ["/bin/bash"]',
                         f"LABEL faultline.base.inputs={digest}"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    img = _image(client, tag)
    if img is None:
        raise DockerImageError(f"docker import did not produce {tag}")
    return tag, img


def _slim_rootfs(rootfs: Path) -> None:
    """Drop what a node never reads: downloaded packages, apt lists, docs (but
    the copyright files), man pages, translations."""
    for rel in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for p in (rootfs / rel).glob("*"):
            if p.is_file() and p.name != "lock":
                p.unlink()
    for rel in ("usr/share/man", "usr/share/info", "usr/share/locale"):
        for p in (rootfs / rel).glob("*"):
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    for p in (rootfs / "usr/share/doc").glob("*/*"):
        if p.name != "copyright":
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    with contextlib.suppress(FileNotFoundError):
        (rootfs / "etc/resolv.conf").unlink()  # the engine mounts its own
    (rootfs / "etc/hostname").write_text("localhost\n")


def resolve_base(client, base: str | None, log: Log, cache: Path) -> tuple[str, Any]:
    """(reference, Image) of the base, made when needed; never pulled."""
    if base is not None:
        img = _image(client, base)
        if img is None:
            raise DockerImageError(f"base image {base!r} is not in the engine and nothing "
                                   "is pulled here: load it first (docker load / docker "
                                   "import) or leave --base out to build one")
        log(f"base: {base} (given)")
        return base, img
    img = _image(client, DEFAULT_BASE)
    if img is not None:
        log(f"base: {DEFAULT_BASE} (found in the engine)")
        return DEFAULT_BASE, img
    return _base_from_debootstrap(client, log, cache)


_PROBE = ("import json, platform, sys; print(json.dumps({'version': '%d.%d' % "
          "sys.version_info[:2], 'machine': platform.machine(), "
          "'libc': platform.libc_ver()}))")


def base_python(client, base_ref: str, base_id: str, cache: Path) -> dict[str, Any]:
    """The base's Python version, machine and libc (cached per image id)."""
    path = cache / "bases" / f"{base_id.replace(':', '-')}.json"
    with contextlib.suppress(FileNotFoundError, ValueError):
        return json.loads(path.read_text())
    try:
        out = client.containers.run(base_id, ["python3", "-c", _PROBE], entrypoint=[],
                                    remove=True, network_disabled=True)
    except Exception as e:  # noqa: BLE001 - ContainerError, APIError
        raise DockerImageError(f"base {base_ref}: cannot run python3 in it ({e}); the "
                               "base needs Python 3.11+") from None
    info = json.loads(out.decode().strip().splitlines()[-1])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info))
    return info


def wheel_platforms(machine: str, libc: tuple[str, str] | list[str]) -> list[str]:
    """pip ``--platform`` tags a glibc base accepts (pip does not expand
    ``manylinux_2_X`` downwards by itself)."""
    name, version = libc
    m = re.match(r"(\d+)\.(\d+)", version or "")
    if name != "glibc" or not m:
        raise DockerImageError(f"base libc is {name or 'unknown'} {version}: only glibc "
                               "bases are supported (Debian, python:3.11-slim)")
    major, minor = int(m.group(1)), int(m.group(2))
    tags = [f"manylinux_{major}_{v}_{machine}" for v in range(minor, 4, -1)]
    return tags + [f"manylinux2014_{machine}"]  # pip adds manylinux2010 and manylinux1


# ------------------------------------------------------------------ step 2: wheelhouse

def ensure_wheelhouse(py: dict[str, Any], log: Log, cache: Path, rebuild: bool = False) -> Path:
    """The build context's wheels for the base's Python: ``project/`` (the project's
    wheel), ``deps/`` (the node requirements and their dependencies, with
    requirements-node.txt) and ``pip/`` (pip, run from its wheel in the build).
    The downloads are kept apart, keyed by the requirements, so a change of the
    source only builds the project's wheel again."""
    with _lock(cache / "wheelhouse.lock", log):  # the ssh backend calls this directly too
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
        with _step(log, "wheelhouse: project wheel built"):
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
        with _step(log, f"wheelhouse: {', '.join(reqs)}, their dependencies and pip "
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


def wheelhouse_hashes(wheels_dir: Path) -> dict[str, str]:
    """Content hash of every file of a wheelhouse, by path relative to it."""
    return {str(p.relative_to(wheels_dir)): wheel_content_hash(p)
            for p in sorted(wheels_dir.rglob("*")) if p.is_file()}


def _run(cmd: list[str], what: str) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        tail = "\n".join((r.stderr or r.stdout).strip().splitlines()[-15:])
        raise DockerImageError(f"{what} failed (exit {r.returncode}):\n{tail}")


# ------------------------------------------------------------------ step 3: image

def ensure_image(base: str | None = None, *, rebuild: bool = False,
                 log: Log = print) -> str:
    """The tag of a node image whose inputs are the current ones; built if needed.

    ``base``: an image the engine already has (never pulled); default
    python:3.11-slim when present, else a debootstrapped Debian base.
    ``rebuild``: make the wheelhouse and the image again even when inputs are
    unchanged (the base is kept: remove ``faultline-base`` images to redo it).
    """
    cache = cache_dir()
    t0 = time.monotonic()
    client = docker_client()
    with _lock(cache / "build.lock", log):
        with _step(log, "step 1/3 base ready"):
            base_ref, base_img = resolve_base(client, base, log, cache)
            py = base_python(client, base_ref, base_img.id, cache)
        with _step(log, "step 2/3 wheelhouse ready"):
            wheels_dir = ensure_wheelhouse(py, log, cache, rebuild)
        dockerfile = DOCKERFILE.read_bytes()
        wheels = wheelhouse_hashes(wheels_dir)
        digest = image_inputs_hash(dockerfile, base_img.id, wheels)
        tag = f"{IMAGE_REPO}:{digest[:12]}"
        with _step(log, "step 3/3 image ready"):
            img = None if rebuild else _image(client, tag)
            if img is not None:
                log(f"image: {tag} (reused: Dockerfile, base and wheels unchanged)")
            else:
                img = _build(client, tag, base_ref, base_img.id, dockerfile, wheels_dir,
                             digest, log, nocache=rebuild)
                _prune_images(client, img.id, log)
            img.tag(IMAGE_REPO, "latest")
    log(f"image: {tag} (also {IMAGE_REPO}:latest), {img.attrs['Size'] / 1e6:.0f} MB; "
        f"total {time.monotonic() - t0:.1f} s")
    return tag


def _build(client, tag: str, base_ref: str, base_id: str, dockerfile: bytes,
           wheels_dir: Path, digest: str, log: Log, nocache: bool = False):  # noqa: ANN202
    import docker.errors

    log(f"image: building {tag} FROM {base_ref}")
    with tempfile.TemporaryDirectory(prefix="context-", dir=wheels_dir.parent.parent) as ctx:
        (Path(ctx) / "Dockerfile").write_bytes(dockerfile)
        shutil.copytree(wheels_dir, Path(ctx) / "wheels")
        image_id, steps, cached = None, 0, 0
        try:
            for chunk in client.api.build(
                    path=ctx, tag=tag, buildargs={"BASE": base_ref}, rm=True, forcerm=True,
                    pull=False, nocache=nocache, decode=True,
                    labels={LABEL_INPUTS: digest, LABEL_BASE: f"{base_ref}@{base_id}"}):
                if "error" in chunk:
                    detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
                    raise DockerImageError(f"docker build of {tag} failed: {detail.strip()}")
                line = chunk.get("stream", "").strip()
                if line.startswith("Step "):
                    steps += 1
                    log(f"image:   {line if len(line) <= 100 else line[:97] + '...'}")
                elif line.startswith("---> Using cache"):
                    cached += 1
                aux = chunk.get("aux")
                if isinstance(aux, dict) and "ID" in aux:
                    image_id = aux["ID"]
        except docker.errors.APIError as e:
            raise DockerImageError(f"docker build of {tag} failed: {e}") from None
    img = _image(client, tag) or (image_id and client.images.get(image_id))
    if not img:
        raise DockerImageError(f"docker build of {tag} produced no image")
    log(f"image: built {tag}, {cached} of {steps} steps from the engine's build cache")
    return img


def _prune_images(client, current: str, log: Log, newest: int = KEEP_IMAGES) -> None:
    """Untag all but the ``newest`` faultline-node images (and the current one); an
    image a container still uses, running or not, is left alone."""
    import docker.errors

    images = sorted(client.images.list(name=IMAGE_REPO), key=lambda i: i.attrs["Created"],
                    reverse=True)
    removed = 0
    for img in images[newest:]:
        if img.id == current:
            continue
        for tag in img.tags:
            try:
                client.images.remove(tag)
                removed += 1
            except docker.errors.APIError:  # in use by a container: keep it
                break
    if removed:
        log(f"image: removed {removed} older {IMAGE_REPO} images (the {newest} newest stay)")


def image_size(tag: str) -> int:
    """Bytes of an image (as ``docker images`` shows)."""
    return int(docker_client().images.get(tag).attrs["Size"])


if __name__ == "__main__":  # python -m harness.docker_image [BASE]
    try:
        print(ensure_image(sys.argv[1] if len(sys.argv) > 1 else None))
    except DockerImageError as err:
        print(f"faultline docker build: {err}", file=sys.stderr)
        sys.exit(1)
