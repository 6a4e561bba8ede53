"""Claiming a new folder of a name that may be taken: ``NAME``, ``NAME-2``, ..."""

from __future__ import annotations

import os
from pathlib import Path


def claim_folder(path: Path, *, first: int = 2) -> Path:
    """Make and return ``path``, or if it exists ``path-<first>``, then the next
    number up: the first that ``os.mkdir`` creates.

    Made here, not just found free, because two runs started in the same second
    (or two unpacks of one bundle) must never share a folder: ``os.mkdir`` fails
    on an existing folder, so of two concurrent claims only one gets each name
    (a check for existence and a later mkdir would give both the same one).
    The parent folders are made as needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    folder, n = path, first
    while True:
        try:
            os.mkdir(folder)
            return folder
        except FileExistsError:
            folder = path.with_name(f"{path.name}-{n}")
            n += 1
