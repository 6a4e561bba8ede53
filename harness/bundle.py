"""A bug-report bundle: one run folder's evidence as one ``.tar.gz``.

What another engineer needs to see a bug and check it again, nothing they do
not (the nodes' data directories stay behind): test.json (the test, its seed),
schedule.jsonl, history.jsonl, results.json, summary.txt and timeline.html
(the witness), the plots, nodes.json, the node logs and configurations, and
``bundle.json``: the faultline version, the git commit it ran, and a SHA-256
per file.  Paths inside are relative to the run folder, so a bundle opens
anywhere; opening one checks every file against bundle.json, so a truncated
or edited bundle is refused with one line instead of being half-believed.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path, PurePosixPath

MANIFEST = "bundle.json"
FORMAT = 1
#: What a bundle takes of a run folder: these files where present, and the
#: node logs and configurations; never the nodes' data.
TOP_FILES = ("test.json", "schedule.jsonl", "history.jsonl", "results.json", "summary.txt",
             "timeline.html", "nodes.json", "setup-failed.txt")
PATTERNS = ("*.png", "logs/*.log", "cluster/*.toml", "cluster/cluster.json")


class BundleError(ValueError):
    """A bundle that cannot be made or opened, in one line."""


def is_bundle(path: str | Path) -> bool:
    return str(path).endswith((".tar.gz", ".tgz")) and Path(path).is_file()


def bundle_files(run: Path) -> list[str]:
    """The run folder's files a bundle takes, relative, sorted."""
    found = {name for name in TOP_FILES if (run / name).is_file()}
    for pattern in PATTERNS:
        found.update(p.relative_to(run).as_posix() for p in run.glob(pattern)
                     if p.is_file() and not p.is_symlink())
    return sorted(found)


def export(run: Path, out: Path) -> list[str]:
    """Write ``run``'s bundle to ``out``; the files it holds."""
    if not (run / "history.jsonl").is_file() or not (run / "test.json").is_file():
        raise BundleError(f"{run}: not a run folder (it needs test.json and history.jsonl)")
    files = bundle_files(run)
    manifest = {"format": FORMAT, "faultline": _version(), "commit": _commit(),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "run": f"{run.parent.name}/{run.name}",
                "files": {rel: _sha256((run / rel).read_bytes()) for rel in files}}
    top = PurePosixPath(run.name)
    with tarfile.open(out, "w:gz") as tar:
        data = json.dumps(manifest, indent=2).encode()
        info = tarfile.TarInfo(str(top / MANIFEST))
        info.size, info.mtime = len(data), int(datetime.now().timestamp())
        tar.addfile(info, io.BytesIO(data))
        for rel in files:
            tar.add(run / rel, arcname=str(top / rel), recursive=False)
    return files


def open_bundle(bundle: Path, into: Path) -> Path:
    """Unpack ``bundle`` under ``into`` and check it; the run folder it holds."""
    try:
        with tarfile.open(bundle, "r:gz") as tar:
            members = tar.getmembers()
            for m in members:
                parts = PurePosixPath(m.name).parts
                if not (m.isfile() or m.isdir()) or m.name.startswith("/") or ".." in parts:
                    raise BundleError(f"{bundle}: {m.name!r} is not a file inside the bundle: "
                                      "the bundle was altered")
            tops = {parts[0] for m in members if (parts := PurePosixPath(m.name).parts)}
            if len(tops) != 1:
                raise BundleError(f"{bundle}: not a faultline bundle (one folder expected, "
                                  f"found {len(tops)})")
            # files and folders inside it only, checked above; Python's own check too
            # where it has one (3.11.4 on)
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(into, members=members, **safe)
    except (tarfile.TarError, EOFError, OSError, UnicodeDecodeError, ValueError) as e:
        raise BundleError(f"{bundle}: not a readable bundle ({type(e).__name__}: "
                          f"{e or 'truncated?'})") from None
    run = into / tops.pop()
    try:
        listed = json.loads((run / MANIFEST).read_text())["files"]
        if not isinstance(listed, dict) or not all(isinstance(v, str) for v in listed.values()):
            raise TypeError("files is not a map of paths to checksums")
    except (OSError, ValueError, KeyError, TypeError):
        raise BundleError(f"{bundle}: not a faultline bundle (no readable {MANIFEST})") from None
    present = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()} - {MANIFEST}
    if extra := sorted(present - set(listed)):
        raise BundleError(f"{bundle}: {extra[0]} is not in {MANIFEST}: the bundle was altered")
    for rel, digest in sorted(listed.items()):
        path = run / rel
        if not path.is_file():
            raise BundleError(f"{bundle}: {rel} is missing: the bundle is incomplete")
        if _sha256(path.read_bytes()) != digest:
            raise BundleError(f"{bundle}: {rel} does not match its checksum: the bundle was "
                              "altered or damaged")
    return run


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _version() -> str:
    try:
        return metadata.version("faultline")
    except metadata.PackageNotFoundError:
        return "unknown"


def _commit() -> str:
    """The git commit of the code that made the bundle, where it is a checkout."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"
