"""Node image benchmark: prints figures, asserts nothing.

    python bench/image.py                  # warm: inputs unchanged -> the image is reused
    python bench/image.py --cold           # cold first, under scratch names (see below)
    python bench/image.py --cold --remove  # cold first: removes every faultline-node and
                                           # faultline-base image and the wheelhouse cache

Cold is the whole build: the base (python:3.11-slim pulled, else
debootstrapped; the scratch run below always debootstraps, after a pull of a
name that does not exist), the wheelhouse (pip's own download cache is kept)
and the image.  Warm is a second call with nothing changed.  Then the sizes of the
node image and of its base.

``--remove`` deletes the real images, which other runs may be using (images
that containers still use are not forced out: the bench stops and names the
containers).  Without it, ``--cold`` does the same work under scratch names
(faultline-bench-node, faultline-bench-base, a temporary cache folder; the
engine's build cache cannot help, the base being new) and removes them
afterwards, leaving the real images alone.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness import docker_image as di  # noqa: E402
from harness.wheelhouse import cache_dir  # noqa: E402


def _remove_all(client) -> list[str]:  # noqa: ANN001 - docker.DockerClient
    """Every faultline-node tag, then every faultline-base tag; the wheelhouse cache."""
    import docker.errors

    users = [c.name for c in client.containers.list(all=True)
             if any(t.split(":")[0] in (di.IMAGE_REPO, di.BASE_REPO)
                    for t in (c.image.tags if c.image else []))]
    if users:
        raise SystemExit(f"bench/image.py: containers use faultline images: {', '.join(users)}; "
                         "remove them first (faultline docker cleanup) or run warm only")
    removed = []
    for repo in (di.IMAGE_REPO, di.BASE_REPO):
        for img in client.images.list(name=repo):
            for tag in img.tags:
                try:
                    client.images.remove(tag, noprune=False)
                    removed.append(tag)
                except docker.errors.APIError as e:
                    raise SystemExit(f"bench/image.py: cannot remove {tag}: {e}") from None
    shutil.rmtree(cache_dir() / "wheelhouse", ignore_errors=True)
    shutil.rmtree(cache_dir() / "bases", ignore_errors=True)
    return removed


def _timed(label: str, base: str | None, steps: list[str]) -> tuple[str, float]:
    def log(line: str) -> None:
        steps.append(line)
        print(f"    {line}")

    print(f"{label}:")
    t0 = time.monotonic()
    tag = di.ensure_image(base, log=log)
    return tag, time.monotonic() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cold", action="store_true", help="measure a build from nothing first")
    p.add_argument("--remove", action="store_true",
                   help="allow --cold to remove the faultline images and the wheelhouse")
    p.add_argument("--base", metavar="IMAGE", help="a base the engine has (default: as "
                   "faultline docker build)")
    args = p.parse_args()
    if args.remove and not args.cold:
        p.error("--remove goes with --cold")
    try:
        client = di.docker_client()
    except di.DockerImageError as e:
        print(f"bench/image.py: {e}", file=sys.stderr)
        return 1
    if args.cold and not args.remove:
        return _scratch(args, client)
    return _bench(args, client)


def _scratch(args: argparse.Namespace, client) -> int:  # noqa: ANN001
    import os
    import tempfile

    names = (di.IMAGE_REPO, di.BASE_REPO, di.DEFAULT_BASE)
    di.IMAGE_REPO, di.BASE_REPO = "faultline-bench-node", "faultline-bench-base"
    di.DEFAULT_BASE = "faultline-bench-none:absent" if args.base is None else di.DEFAULT_BASE
    with tempfile.TemporaryDirectory(prefix="faultline-bench-") as cache:
        os.environ["FAULTLINE_CACHE_DIR"] = cache
        try:
            return _bench(args, client, remove_first=False)
        finally:
            for repo in (di.IMAGE_REPO, di.BASE_REPO):
                for img in client.images.list(name=repo):
                    for tag in img.tags:
                        client.images.remove(tag)
            di.IMAGE_REPO, di.BASE_REPO, di.DEFAULT_BASE = names
            print(f"(scratch images removed; {names[0]} and {names[1]} untouched)")


def _bench(args: argparse.Namespace, client, remove_first: bool = True) -> int:  # noqa: ANN001
    rows = []
    if args.cold:
        if remove_first:
            removed = _remove_all(client)
            print(f"removed {len(removed)} images: {', '.join(removed) or '-'}")
        steps: list[str] = []
        tag, secs = _timed("cold build", args.base, steps)
        rows.append(("cold", secs))
        for key, name in (("debootstrap done", "base: debootstrap"),
                          ("base: imported", "base: tar + docker import"),
                          ("step 1/3", "base, in all"), ("step 2/3", "wheelhouse"),
                          ("step 3/3", "image (docker build)")):
            for line in steps:
                if key in line and line.endswith(" s)"):
                    rows.append((f"  {name}", float(line.rsplit("(", 1)[1].split(" s")[0])))
    else:
        steps = []
        tag, secs = _timed("catching up (inputs changed since the last build?)", args.base,
                           steps)
        if not any("(reused:" in line for line in steps):
            rows.append(("rebuild after a change", secs))
    tag, secs = _timed("warm build (inputs unchanged)", args.base, [])
    rows.append(("warm", secs))
    img = client.images.get(tag)
    base_ref = img.labels.get(di.LABEL_BASE, "").split("@")[0]
    print()
    print(f"{'':<40} {'seconds':>8}")
    for name, secs in rows:
        print(f"{name:<40} {secs:>8.1f}")
    print()
    print(f"image {tag}: {img.attrs['Size'] / 1e6:.0f} MB")
    if base_ref:
        try:
            print(f"base  {base_ref}: {client.images.get(base_ref).attrs['Size'] / 1e6:.0f} MB")
        except Exception:  # noqa: BLE001 - the base was given by id or removed since
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
