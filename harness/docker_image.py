"""The node image of the docker backend, made offline when no registry answers.

:func:`ensure_image` returns the tag of an image that runs ``python -m
system.node`` (and has iptables, iproute2, sshd and pkill for the faults and
the ssh backend), building what is missing in three steps:

1. base: the ``base`` given (pulled if the engine lacks it), or
   ``python:3.11-slim`` if the engine has it, or a base debootstrapped here
   before, or ``python:3.11-slim`` pulled, or else a minimal Debian root
   filesystem made on this host with debootstrap from the suite and mirror of
   the host's own apt sources, then ``docker import``-ed as
   ``faultline-base:<suite>-<hash>``.  A pull gives up after
   :data:`PULL_STALL_S` seconds without progress, so a machine without a
   registry falls back to debootstrap quickly.
2. wheelhouse: :func:`harness.wheelhouse.ensure_wheelhouse` for the base's
   Python.
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
import json
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.wheelhouse import (PROBE, ROOT, Log, WheelhouseError, build_lock, cache_dir,
                                ensure_wheelhouse, inputs_hash, timed, wheelhouse_hashes)

DOCKERFILE = ROOT / "docker" / "Dockerfile"
IMAGE_REPO = "faultline-node"
BASE_REPO = "faultline-base"
DEFAULT_BASE = "python:3.11-slim"
#: What the debootstrapped base holds (the Dockerfile installs the same when missing).
BASE_PACKAGES = ("python3", "python3-venv", "iptables", "iproute2", "openssh-server",
                 "procps", "ca-certificates")
#: Bump when the way the base root filesystem is made changes.
BASE_RECIPE = "minbase-1"
#: Seconds a pull may go without a word from the engine before the build gives up on
#: it: the Docker API has no pull timeout, and an engine without a route to a
#: registry can wait minutes on a connect.
PULL_STALL_S = 25.0
LABEL_INPUTS = "faultline.image.inputs"
#: faultline-node images kept when a new one is built (older ones are untagged).
KEEP_IMAGES = 4
LABEL_BASE = "faultline.image.base"


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

def image_inputs_hash(dockerfile: bytes, base_id: str, wheels: dict[str, str]) -> str:
    """What the node image is made of: the Dockerfile, the base image's id and the
    content hash of every file of the wheelhouse."""
    return inputs_hash({"dockerfile": dockerfile, "base": base_id, "wheels": wheels})


def base_inputs_hash(source: AptSource, packages: tuple[str, ...] = BASE_PACKAGES) -> str:
    return inputs_hash({"recipe": BASE_RECIPE, "uri": source.uri, "suite": source.suite,
                        "components": sorted(source.components), "packages": sorted(packages)})


# ------------------------------------------------------------------ helpers

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
        raise DockerImageError(f"the Docker engine is not answering at {host}: {_reason(e)} "
                               "(is dockerd running? is DOCKER_HOST right?)") from None
    return client


def _image(client, ref: str):  # noqa: ANN202 - Image | None
    import docker.errors

    try:
        return client.images.get(ref)
    except docker.errors.ImageNotFound:
        return None


def _reason(e: BaseException) -> str:
    """An engine error in one line (an APIError's explanation, without the URL)."""
    text = getattr(e, "explanation", None) or str(e)
    return (str(text).strip().splitlines() or [type(e).__name__])[0][:200]


def _tail(path: Path, n: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# ------------------------------------------------------------------ step 1: base

def pull_image(client, ref: str, log: Log, stall: float = PULL_STALL_S) -> tuple[Any, str]:
    """Pull ``ref`` into the engine: ``(Image, "")``, or ``(None, why not)``.  Gives
    up when the engine reports nothing for ``stall`` seconds; a slow pull that
    makes progress goes on.  (A pull given up on may still finish in the engine.)"""
    events: queue.Queue[dict[str, Any] | BaseException | None] = queue.Queue()

    def pump() -> None:
        try:
            for event in client.api.pull(ref, stream=True, decode=True):
                events.put(event)
        except Exception as e:  # noqa: BLE001 - APIError, connection errors: the reason
            events.put(e)
        events.put(None)

    threading.Thread(target=pump, name="docker-pull", daemon=True).start()
    log(f"base: pulling {ref}")
    while True:
        try:
            event = events.get(timeout=stall)
        except queue.Empty:
            return None, f"no progress for {stall:g} s"
        if event is None:
            break
        if isinstance(event, BaseException):
            return None, _reason(event)
        if "error" in event:
            return None, str(event["error"]).strip()[:200]
    img = _image(client, ref)
    return (img, "") if img is not None else (None, "the pull ended without the image")


def _debootstrap_source() -> tuple[AptSource, str]:
    """The host's Debian release, and the tag of a base debootstrapped from it."""
    source = choose_mirror(read_apt_sources(), host_codename())
    return source, f"{BASE_REPO}:{source.suite}-{base_inputs_hash(source)[:12]}"


def _made_base(client) -> tuple[str, Any] | None:
    """A base debootstrapped here before, if the engine still has it."""
    try:
        _, tag = _debootstrap_source()
    except DockerImageError:  # no Debian release in the apt sources: none was made
        return None
    img = _image(client, tag)
    return (tag, img) if img is not None else None


def _base_from_debootstrap(client, log: Log, cache: Path,
                           why_not_pulled: str) -> tuple[str, Any]:
    source, tag = _debootstrap_source()
    digest = base_inputs_hash(source)
    tool = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin:/sbin")
    if tool is None:
        raise DockerImageError(
            f"{DEFAULT_BASE} is not in the engine and cannot be pulled ({why_not_pulled}), "
            "so the base image is made with debootstrap, which is missing: apt-get install "
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
        log(f"base: making {tag} with debootstrap ({source.suite} from {source.uri}; "
            f"log in {logfile}, takes minutes)")
        with timed(log, "base: debootstrap done"):
            with open(logfile, "w") as fh:
                rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL).returncode
            if rc != 0:
                raise DockerImageError(f"debootstrap failed (exit {rc}); the end of "
                                       f"{logfile}:\n{_tail(logfile)}")
        _slim_rootfs(rootfs)
        with timed(log, f"base: imported {tag}"):
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
    """(reference, Image) of the base; see step 1 of the module docstring.  A base
    made here before is reused ahead of a pull, so a machine without a registry
    waits for a failing pull once, not on every build."""
    if base is not None:
        img = _image(client, base)
        if img is not None:
            log(f"base: {base} (given)")
            return base, img
        img, why = pull_image(client, base, log)
        if img is None:
            raise DockerImageError(f"base image {base!r} is not in the engine and cannot be "
                                   f"pulled ({why}): load it first (docker load / docker "
                                   "import) or leave --base out to build one")
        return base, img
    img = _image(client, DEFAULT_BASE)
    if img is not None:
        log(f"base: {DEFAULT_BASE} (found in the engine)")
        return DEFAULT_BASE, img
    made = _made_base(client)
    if made is not None:
        log(f"base: {made[0]} (made here before, reused)")
        return made
    img, why = pull_image(client, DEFAULT_BASE, log)
    if img is not None:
        return DEFAULT_BASE, img
    log(f"base: cannot pull {DEFAULT_BASE} ({why}); making one with debootstrap")
    return _base_from_debootstrap(client, log, cache, why)


def base_python(client, base_ref: str, base_id: str, cache: Path) -> dict[str, Any]:
    """The base's Python version, machine and libc (cached per image id)."""
    path = cache / "bases" / f"{base_id.replace(':', '-')}.json"
    with contextlib.suppress(FileNotFoundError, ValueError):
        return json.loads(path.read_text())
    try:
        out = client.containers.run(base_id, ["python3", "-c", PROBE], entrypoint=[],
                                    remove=True, network_disabled=True)
    except Exception as e:  # noqa: BLE001 - ContainerError, APIError
        raise DockerImageError(f"base {base_ref}: cannot run python3 in it ({e}); the "
                               "base needs Python 3.11+") from None
    info = json.loads(out.decode().strip().splitlines()[-1])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(info))
    return info


# ------------------------------------------------------------------ step 3: image

def ensure_image(base: str | None = None, *, rebuild: bool = False,
                 log: Log = print) -> str:
    """The tag of a node image whose inputs are the current ones; built if needed.

    ``base``: the base image (pulled if the engine lacks it); by default
    python:3.11-slim, else a debootstrapped Debian base (step 1 above).
    ``rebuild``: make the wheelhouse and the image again even when inputs are
    unchanged (the base is kept: remove ``faultline-base`` images to redo it).
    """
    cache = cache_dir()
    t0 = time.monotonic()
    client = docker_client()
    with build_lock(cache / "build.lock", log):
        with timed(log, "step 1/3 base ready"):
            base_ref, base_img = resolve_base(client, base, log, cache)
            py = base_python(client, base_ref, base_img.id, cache)
        with timed(log, "step 2/3 wheelhouse ready"):
            try:
                wheels_dir = ensure_wheelhouse(py, log, cache, rebuild)
            except WheelhouseError as e:
                raise DockerImageError(f"wheelhouse: {e}") from None
        dockerfile = DOCKERFILE.read_bytes()
        wheels = wheelhouse_hashes(wheels_dir)
        digest = image_inputs_hash(dockerfile, base_img.id, wheels)
        tag = f"{IMAGE_REPO}:{digest[:12]}"
        with timed(log, "step 3/3 image ready"):
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
