"""`faultline` as a person runs it, in a fresh process, for the tests that
drive whole commands (imported by test modules: tests/ is on sys.path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: A small, quick cluster for short runs: 3 nodes, 1-s elections.
FAST = ["--nodes", "3", "--concurrency", "6", "--election-timeout-ms", "1000",
        "--heartbeat-ms", "100", "--quiet-period", "1"]


def faultline(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """``faultline ARGS`` from the repository root, output captured, CI-style
    (plain progress lines, no live terminal line)."""
    return subprocess.run([sys.executable, "-m", "harness.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "CI": "1"})
