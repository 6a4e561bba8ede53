"""The docker node image: apt sources, input hashes, the wheelhouse's inputs, how
the base is found, pulled or made, the CLI, and (marked ``docker``) a real build
checked from inside a container."""

from __future__ import annotations

import sys
import threading
import time
import tomllib
import types
import zipfile
from pathlib import Path

import pytest

from harness import docker_image as di
from harness import wheelhouse as wh
from harness.cli import EX_USAGE, main

ROOT = Path(__file__).resolve().parents[1]

ONE_LINE = """\
# the main archive
deb http://mirror.example/debian bookworm main contrib   # trailing comment
deb-src http://mirror.example/debian bookworm main
deb [arch=amd64 signed-by=/usr/share/keyrings/x.gpg] http://mirror.example/debian-security/ bookworm-security main
#deb http://mirror.example/debian sid main

deb http://mirror.example/debian bookworm-updates main
"""

DEB822 = """\
# comment before the first stanza
Types: deb deb-src
# http://snapshot.example/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb
URIs: http://disabled.example/debian
Suites: trixie
Components: main
Enabled: no

Types: deb
URIs: http://inline.example/debian
Suites: inline
Components: main extra
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mDMEZ
 -----END PGP PUBLIC KEY BLOCK-----
"""


# ------------------------------------------------------------------ apt sources

def test_one_line_sources():
    got = di.parse_one_line(ONE_LINE)
    assert [(s.type, s.uri, s.suite, s.components) for s in got] == [
        ("deb", "http://mirror.example/debian", "bookworm", ("main", "contrib")),
        ("deb-src", "http://mirror.example/debian", "bookworm", ("main",)),
        ("deb", "http://mirror.example/debian-security", "bookworm-security", ("main",)),
        ("deb", "http://mirror.example/debian", "bookworm-updates", ("main",)),
    ]
    assert got[2].signed_by == "/usr/share/keyrings/x.gpg"
    assert got[0].signed_by is None


def test_deb822_sources():
    got = di.parse_deb822(DEB822)
    assert [(s.type, s.uri, s.suite) for s in got] == [
        ("deb", "http://mirror.example/debian", "bookworm"),
        ("deb", "http://mirror.example/debian", "bookworm-updates"),
        ("deb-src", "http://mirror.example/debian", "bookworm"),
        ("deb-src", "http://mirror.example/debian", "bookworm-updates"),
        ("deb", "http://mirror.example/debian-security", "bookworm-security"),
        ("deb", "http://inline.example/debian", "inline"),
    ]
    assert got[0].components == ("main",)
    assert got[0].signed_by == "/usr/share/keyrings/debian-archive-keyring.gpg"
    assert got[-1].components == ("main", "extra")
    assert got[-1].signed_by is None  # an inline key is not a keyring path


def test_read_apt_sources_reads_what_apt_reads(tmp_path):
    etc = tmp_path / "etc" / "apt"
    (etc / "sources.list.d").mkdir(parents=True)
    (etc / "sources.list").write_text("deb http://a.example/debian bookworm main\n")
    (etc / "sources.list.d" / "b.sources").write_text(DEB822)
    (etc / "sources.list.d" / "c.list").write_text("deb http://c.example/x stable main\n")
    (etc / "sources.list.d" / "d.list.disabled").write_text("deb http://d.example/x y main\n")
    (etc / "sources.list.d" / "e.sources.bak").write_text(DEB822.replace("mirror", "bak"))
    got = di.read_apt_sources(tmp_path)
    uris = [s.uri for s in got]
    assert uris[0] == "http://a.example/debian"
    assert "http://c.example/x" in uris and "http://mirror.example/debian" in uris
    assert not any("d.example" in u or "bak" in u or "disabled" in u for u in uris)


def test_read_apt_sources_without_sources_list(tmp_path):
    (tmp_path / "etc" / "apt" / "sources.list.d").mkdir(parents=True)
    (tmp_path / "etc" / "apt" / "sources.list.d" / "debian.sources").write_text(DEB822)
    assert di.read_apt_sources(tmp_path)[0].suite == "bookworm"
    assert di.read_apt_sources(tmp_path / "nowhere") == []


def test_choose_mirror():
    sources = di.parse_one_line(
        "deb https://packages.example/apt cloud-sdk-bookworm main\n"
        "deb http://mirror.example/debian-security bookworm-security main\n"
        "deb-src http://src.example/debian trixie main\n"
        "deb http://mirror.example/debian bookworm main\n"
        "deb http://other.example/debian trixie main\n")
    assert di.choose_mirror(sources, "bookworm").uri == "http://mirror.example/debian"
    assert di.choose_mirror(sources, "trixie").uri == "http://other.example/debian"
    # unknown codename: the first release that is not a pocket (-security, ...)
    assert di.choose_mirror(sources, None).suite == "bookworm"
    with pytest.raises(di.DockerImageError, match="--base"):
        di.choose_mirror(di.parse_one_line("deb http://x.example/d sid-updates main\n"))


def test_host_codename(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "os-release").write_text('NAME="Debian"\nVERSION_CODENAME=bookworm\n')
    assert di.host_codename(tmp_path) == "bookworm"
    assert di.host_codename(tmp_path / "none") is None


# ------------------------------------------------------------------ input hashes

WHEELS = {"deps/msgpack-1.0-cp311.whl": "aa", "project/faultline-0.1.0.whl": "bb"}


def test_image_hash_is_stable_and_follows_every_input():
    h = di.image_inputs_hash(b"FROM x\n", "sha256:1", WHEELS)
    assert h == di.image_inputs_hash(b"FROM x\n", "sha256:1", dict(reversed(WHEELS.items())))
    assert h != di.image_inputs_hash(b"FROM x\nRUN true\n", "sha256:1", WHEELS)
    assert h != di.image_inputs_hash(b"FROM x\n", "sha256:2", WHEELS)
    assert h != di.image_inputs_hash(b"FROM x\n", "sha256:1", {**WHEELS, "deps/y.whl": "cc"})
    assert h != di.image_inputs_hash(b"FROM x\n", "sha256:1",
                                     {**WHEELS, "project/faultline-0.1.0.whl": "bc"})


def test_image_hash_of_the_real_dockerfile_changes_with_it():
    text = (ROOT / "docker" / "Dockerfile").read_bytes()
    h = di.image_inputs_hash(text, "sha256:1", WHEELS)
    assert h == di.image_inputs_hash(text, "sha256:1", WHEELS)
    assert h != di.image_inputs_hash(text + b"# a comment\n", "sha256:1", WHEELS)


def test_base_hash():
    src = di.AptSource("deb", "http://m.example/debian", "bookworm", ("main",))
    h = di.base_inputs_hash(src)
    assert h == di.base_inputs_hash(di.AptSource("deb", "http://m.example/debian",
                                                 "bookworm", ("main",), "/k.gpg"))
    assert h != di.base_inputs_hash(src, di.BASE_PACKAGES + ("curl",))
    assert h != di.base_inputs_hash(di.AptSource("deb", "http://n.example/debian",
                                                 "bookworm", ("main",)))


def _wheel(path: Path, files: dict[str, bytes], stamp: tuple) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(zipfile.ZipInfo(name, date_time=stamp), data)
    return path


def test_wheel_hash_ignores_timestamps_and_order(tmp_path):
    files = {"a/__init__.py": b"x = 1\n", "a-1.dist-info/RECORD": b"r"}
    one = _wheel(tmp_path / "one.whl", files, (2020, 1, 1, 0, 0, 0))
    two = _wheel(tmp_path / "two.whl", dict(reversed(files.items())), (2024, 5, 6, 7, 8, 10))
    three = _wheel(tmp_path / "three.whl", {**files, "a/__init__.py": b"x = 2\n"},
                   (2020, 1, 1, 0, 0, 0))
    assert wh.wheel_content_hash(one) == wh.wheel_content_hash(two)
    assert wh.wheel_content_hash(one) != wh.wheel_content_hash(three)
    (tmp_path / "reqs.txt").write_text("msgpack\n")
    assert len(wh.wheel_content_hash(tmp_path / "reqs.txt")) == 64


def test_wheelhouse_hashes(tmp_path):
    for sub in ("project", "deps"):
        (tmp_path / sub).mkdir()
    _wheel(tmp_path / "project" / "p.whl", {"p.py": b""}, (2020, 1, 1, 0, 0, 0))
    (tmp_path / "deps" / wh.REQUIREMENTS_FILE).write_text("msgpack\n")
    got = wh.wheelhouse_hashes(tmp_path)
    assert sorted(got) == ["deps/requirements-node.txt", "project/p.whl"]


def test_source_hash_and_files():
    files = wh.project_files()
    names = {str(p) for p in files}
    assert {"pyproject.toml", "system/node.py", "harness/docker_image.py",
            "system/raft/core.py"} <= names
    assert not any("__pycache__" in n or n.endswith(".pyc") or n.startswith("tests/")
                   for n in names)
    assert wh.source_hash() == wh.source_hash()


def test_source_hash_follows_the_source(tmp_path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.setuptools.packages.find]\ninclude = ["pkg*"]\n')
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "x.pyc").write_bytes(b"junk")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "__init__.py").write_text("")
    h = wh.source_hash(tmp_path)
    (tmp_path / "pkg" / "__pycache__" / "x.pyc").write_bytes(b"other junk")
    (tmp_path / "other" / "__init__.py").write_text("changed = 1\n")
    assert wh.source_hash(tmp_path) == h  # neither bytecode nor other packages count
    (tmp_path / "pkg" / "__init__.py").write_text("changed = 1\n")
    assert wh.source_hash(tmp_path) != h


def test_node_requirements_are_the_node_extra_and_in_the_dependencies():
    with open(ROOT / "pyproject.toml", "rb") as fh:
        project = tomllib.load(fh)["project"]
    reqs = wh.node_requirements()
    assert reqs == project["optional-dependencies"]["node"]
    assert {"msgpack", "sortedcontainers", "aiohttp", "lark"} <= {
        r.split(">")[0].split("=")[0].strip() for r in reqs}
    # `pip install -e .` must still give a local node everything it needs
    assert set(reqs) <= set(project["dependencies"])
    assert not any(r.startswith(("pandas", "matplotlib", "boto3")) for r in reqs)


def test_wheel_platforms():
    tags = wh.wheel_platforms("x86_64", ("glibc", "2.36"))
    assert tags[0] == "manylinux_2_36_x86_64"
    assert "manylinux_2_17_x86_64" in tags and "manylinux_2_5_x86_64" in tags
    assert tags[-1] == "manylinux2014_x86_64"
    with pytest.raises(wh.WheelhouseError, match="glibc"):
        wh.wheel_platforms("x86_64", ("", ""))


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("FAULTLINE_CACHE_DIR", str(tmp_path / "c"))
    assert wh.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("FAULTLINE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert wh.cache_dir() == tmp_path / "x" / "faultline"


# ------------------------------------------------------------------ the CLI

def test_cli_docker_build_bad_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["docker", "build", "--bogus"])
    assert e.value.code == EX_USAGE
    with pytest.raises(SystemExit) as e:
        main(["docker"])
    assert e.value.code == EX_USAGE


def test_cli_docker_build_reports_errors(monkeypatch, capsys):
    def fail(base, *, rebuild, log):
        assert (base, rebuild) == ("img:1", True)
        raise di.DockerImageError("the Docker engine is not answering at unix:///x")

    monkeypatch.setattr(di, "ensure_image", fail)
    assert main(["docker", "build", "--base", "img:1", "--rebuild"]) == 1
    assert "not answering" in capsys.readouterr().err


def test_cli_docker_build_prints_the_tag(monkeypatch, capsys):
    def build(base, *, rebuild, log):
        log("step 3/3 image ready (0.0 s)")
        return "faultline-node:0123456789ab"

    monkeypatch.setattr(di, "ensure_image", build)
    assert main(["docker", "build"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "faultline-node:0123456789ab" and "image ready" in out[0]


def test_cli_docker_cleanup(monkeypatch, capsys):
    fake = types.ModuleType("harness.docker_backend")
    fake.cleanup = lambda: ["container faultline-n1", "network faultline-x"]
    monkeypatch.setitem(sys.modules, "harness.docker_backend", fake)
    assert main(["docker", "cleanup"]) == 0
    out = capsys.readouterr().out
    assert "removed container faultline-n1" in out and "2 removed" in out
    fake.cleanup = lambda: []
    assert main(["docker", "cleanup"]) == 0
    assert "nothing to remove" in capsys.readouterr().out

    def broken():
        raise RuntimeError("engine not answering")

    fake.cleanup = broken
    assert main(["docker", "cleanup"]) == 1
    assert "engine not answering" in capsys.readouterr().err


# ------------------------------------------------------------------ a real image

@pytest.fixture(scope="module")
def docker_engine():
    try:
        return di.docker_client()
    except di.DockerImageError as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def node_image(docker_engine) -> str:
    """The node image; skips, saying why, where it cannot be had (no registry
    and no debootstrap, say)."""
    lines: list[str] = []
    try:
        tag = di.ensure_image(log=lines.append)
    except di.DockerImageError as e:
        pytest.skip(f"no node image: {e}")
    assert tag.startswith(f"{di.IMAGE_REPO}:"), lines
    return tag


CHECKS = r"""
set -e
cd /
python -m system.node --help | head -1
iptables --version
ip -V
pkill -V | head -1
sshd -t && echo sshd-config-ok
test -d /run/sshd && echo run-sshd-ok
python -c 'import importlib.util as u, sys
for m in ("aiohttp", "msgpack", "lark", "sortedcontainers", "system.node", "harness"):
    assert u.find_spec(m), m
for m in ("pandas", "matplotlib", "boto3"):
    assert u.find_spec(m) is None, m
print("python", sys.version.split()[0], sys.prefix)'
"""


@pytest.mark.docker
def test_node_image_has_what_a_node_needs(docker_engine, node_image):
    out = docker_engine.containers.run(node_image, ["sh", "-c", CHECKS], remove=True,
                                       network_disabled=True).decode()
    assert "usage: faultline node" in out
    assert "iptables v" in out and "iproute2" in out and "procps" in out
    assert "sshd-config-ok" in out and "run-sshd-ok" in out
    assert "python 3.11" in out and "/opt/faultline" in out
    img = docker_engine.images.get(node_image)
    assert f"{di.IMAGE_REPO}:latest" in img.tags
    assert img.labels.get(di.LABEL_INPUTS, "").startswith(node_image.split(":")[1])


@pytest.mark.docker
def test_node_image_is_reused(docker_engine, node_image):
    before = wh.source_hash()
    lines: list[str] = []
    tag = di.ensure_image(log=lines.append)
    again: list[str] = []
    assert di.ensure_image(log=again.append) == tag
    if wh.source_hash() == before:  # nobody edited the project meanwhile
        assert any("image: " + tag + " (reused" in line for line in again), again


# ------------------------------------------------------------------ clear errors

def test_engine_not_answering(monkeypatch, tmp_path):
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no.sock")
    with pytest.raises(di.DockerImageError, match="not answering"):
        di.ensure_image(log=lambda line: None)


class FakeEngine:
    """An engine holding the images ``have``; a pull of one of ``pullable`` adds it,
    of anything else fails, and with ``hang`` a pull says nothing until released."""

    def __init__(self, have=(), pullable=(), hang=False):
        self.have, self.pullable, self.hang = set(have), set(pullable), hang
        self.pulls: list[str] = []
        self.release = threading.Event()
        self.images = types.SimpleNamespace(get=self._get)
        self.api = types.SimpleNamespace(pull=self._pull)

    def _get(self, ref):
        import docker.errors

        if ref not in self.have:
            raise docker.errors.ImageNotFound(ref)
        return types.SimpleNamespace(id=f"sha256:{ref}")

    def _pull(self, ref, stream, decode):
        import docker.errors

        assert stream and decode
        self.pulls.append(ref)
        if self.hang:
            self.release.wait(30)

        def events():
            if ref not in self.pullable:
                raise docker.errors.APIError("no route to a registry")
            yield {"status": f"Pulling from {ref}"}
            self.have.add(ref)
            yield {"status": "Downloaded newer image"}
        return events()


SOURCES = "deb http://mirror.example/debian bookworm main\n"


@pytest.fixture
def debian_host(monkeypatch):
    """Apt sources of a Debian host; the tag a base debootstrapped from them gets."""
    monkeypatch.setattr(di, "read_apt_sources", lambda: di.parse_one_line(SOURCES))
    monkeypatch.setattr(di, "host_codename", lambda: "bookworm")
    source = di.parse_one_line(SOURCES)[0]
    return f"{di.BASE_REPO}:bookworm-{di.base_inputs_hash(source)[:12]}"


def test_debootstrap_missing_says_how_to_get_it(monkeypatch, debian_host, tmp_path):
    monkeypatch.setattr(di.shutil, "which", lambda *a, **k: None)
    engine = FakeEngine()
    with pytest.raises(di.DockerImageError) as e:
        di.resolve_base(engine, None, lambda line: None, tmp_path)
    assert "cannot be pulled (no route to a registry)" in str(e.value)
    assert "apt-get install debootstrap" in str(e.value)
    assert engine.pulls == [di.DEFAULT_BASE]


def test_the_default_base_is_pulled_when_the_engine_can(debian_host, tmp_path):
    engine, lines = FakeEngine(pullable={di.DEFAULT_BASE}), []
    ref, img = di.resolve_base(engine, None, lines.append, tmp_path)
    assert ref == di.DEFAULT_BASE and img.id == f"sha256:{di.DEFAULT_BASE}"
    assert engine.pulls == [di.DEFAULT_BASE] and f"base: pulling {di.DEFAULT_BASE}" in lines


def test_a_base_made_before_is_reused_without_a_pull(debian_host, tmp_path):
    engine = FakeEngine(have={debian_host}, pullable={di.DEFAULT_BASE})
    assert di.resolve_base(engine, None, lambda line: None, tmp_path)[0] == debian_host
    assert engine.pulls == []
    engine.have.add(di.DEFAULT_BASE)  # python:3.11-slim in the engine comes first
    assert di.resolve_base(engine, None, lambda line: None, tmp_path)[0] == di.DEFAULT_BASE


def test_a_given_base_is_pulled_and_one_that_cannot_be_is_an_error(tmp_path):
    engine = FakeEngine(pullable={"debian:12"})
    assert di.resolve_base(engine, "debian:12", lambda line: None, tmp_path)[0] == "debian:12"
    with pytest.raises(di.DockerImageError, match="'nope:1' is not in the engine and "
                                                  "cannot be pulled .no route to a registry"):
        di.resolve_base(engine, "nope:1", lambda line: None, tmp_path)


def test_a_pull_that_says_nothing_is_given_up_after_the_stall_time():
    engine = FakeEngine(pullable={"slow:1"}, hang=True)
    t0 = time.monotonic()
    try:
        img, why = di.pull_image(engine, "slow:1", lambda line: None, stall=0.2)
    finally:
        engine.release.set()
    assert img is None and why == "no progress for 0.2 s"
    assert time.monotonic() - t0 < 5


@pytest.mark.docker
def test_a_pull_the_engine_cannot_do_fails_quickly(docker_engine):
    """On a machine with no registry (or none that has the name) the fallback to
    debootstrap comes quickly, within the stall time at worst."""
    t0 = time.monotonic()
    img, why = di.pull_image(docker_engine, "faultline-test-absent:none", lambda line: None)
    assert img is None and why
    assert time.monotonic() - t0 < di.PULL_STALL_S + 10
