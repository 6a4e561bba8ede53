"""The one check every path from a URL, or from inside a run folder, passes."""

from __future__ import annotations

from pathlib import Path, PurePosixPath


class PathEscape(ValueError):
    """A path that would leave the folder it was asked of."""


def safe_path(base: Path, rel: str) -> Path:
    """``base/rel`` resolved, or :class:`PathEscape` if ``rel`` is absolute,
    climbs with ``..``, or resolves (through a symlink) outside ``base``."""
    if not rel or "\x00" in rel or rel.startswith("/") or ".." in PurePosixPath(rel).parts:
        raise PathEscape(f"{rel!r} leaves {base}")
    base = base.resolve()
    target = (base / rel).resolve()
    if not target.is_relative_to(base):
        raise PathEscape(f"{rel!r} leaves {base}")
    return target
