"""Bug-report bundles (harness/bundle.py): what they hold, that they open
anywhere, that check and analyse take them, and that a damaged or altered
one is refused in one line."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from harness.bundle import MANIFEST, BundleError, bundle_files, export, open_bundle
from harness.cli import main
from test_cli import _saved_run


@pytest.fixture
def run(tmp_path: Path) -> Path:
    """A saved register run with a stale read, its logs, plots and node data."""
    (tmp_path / "register-partition-leader").mkdir()
    d = _saved_run(tmp_path / "register-partition-leader" / "20261207T100000", None)
    (d / "logs").mkdir()
    (d / "logs" / "n1.log").write_text("n1 started\n")
    (d / "cluster" / "n1" / "data").mkdir(parents=True)
    (d / "cluster" / "n1" / "data" / "log.bin").write_bytes(b"\0" * 4096)
    (d / "cluster" / "n1.toml").write_text('id = "n1"\n')
    (d / "rate.png").write_bytes(b"\x89PNG")
    (d / "schedule.jsonl").write_text("")
    return d


def test_a_bundle_holds_the_evidence_and_not_the_data(run: Path, tmp_path: Path) -> None:
    assert bundle_files(run) == ["cluster/n1.toml", "history.jsonl", "logs/n1.log", "rate.png",
                                 "schedule.jsonl", "test.json"]
    out = tmp_path / "bug.tar.gz"
    export(run, out)
    with tarfile.open(out) as tar:
        names = tar.getnames()
        manifest = json.load(tar.extractfile(f"20261207T100000/{MANIFEST}"))
    assert all(n.startswith("20261207T100000/") for n in names)  # relative, one folder
    assert not any("data" in n for n in names)
    assert manifest["run"] == "register-partition-leader/20261207T100000"
    assert set(manifest["files"]) == set(bundle_files(run))
    assert manifest["faultline"] and manifest["commit"]

    opened = open_bundle(out, tmp_path / "elsewhere")
    assert (opened / "history.jsonl").read_bytes() == (run / "history.jsonl").read_bytes()


def test_check_and_analyse_take_a_bundle(run: Path, tmp_path: Path, capsys,
                                         monkeypatch) -> None:
    out = tmp_path / "bug.tar.gz"
    export(run, out)
    assert main(["check", str(out)]) == 1
    printed = capsys.readouterr().out
    assert printed.startswith(f"{out}:history.jsonl  INVALID")
    monkeypatch.chdir(tmp_path)
    assert main(["analyse", str(out)]) == 1
    printed = capsys.readouterr().out
    assert f"unpacked into {tmp_path / 'bug' / '20261207T100000'}" in printed
    assert "verdict: INVALID" in printed
    assert (tmp_path / "bug" / "20261207T100000" / "results.json").is_file()
    assert main(["analyse", str(out)]) == 1  # again: beside the first, not over it
    assert (tmp_path / "bug-2" / "20261207T100000" / "results.json").is_file()


def test_export_refuses_a_folder_that_is_no_run(tmp_path: Path, capsys) -> None:
    assert main(["export", str(tmp_path), "-o", str(tmp_path / "x.tar.gz")]) == 65
    assert "not a run folder" in capsys.readouterr().err


def _rewrite(bundle: Path, out: Path, change) -> None:  # noqa: ANN001
    """Copy ``bundle`` to ``out`` with ``change(name, data) -> data | None``
    applied to each member (None drops it), plus any ``change.extra`` members."""
    with tarfile.open(bundle) as src, tarfile.open(out, "w:gz") as dst:
        for m in src.getmembers():
            data = change(m.name, src.extractfile(m).read())
            if data is None:
                continue
            m.size = len(data)
            dst.addfile(m, io.BytesIO(data))
        for name, data in getattr(change, "extra", ()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            dst.addfile(info, io.BytesIO(data))


def tampered(name: str, data: bytes) -> bytes:
    return data.replace(b'"put"', b'"get"') if name.endswith("history.jsonl") else data


def dropped(name: str, data: bytes) -> bytes | None:
    return None if name.endswith("test.json") else data


def extra(name: str, data: bytes) -> bytes:
    return data


extra.extra = [("20261207T100000/logs/n9.log", b"planted")]  # type: ignore[attr-defined]


def escaping(name: str, data: bytes) -> bytes:
    return data


escaping.extra = [("20261207T100000/../../outside.txt", b"x")]  # type: ignore[attr-defined]


@pytest.mark.parametrize(("change", "message"), [
    (tampered, "history.jsonl does not match its checksum: the bundle was altered"),
    (dropped, "test.json is missing: the bundle is incomplete"),
    (extra, "logs/n9.log is not in bundle.json: the bundle was altered"),
    (escaping, "'20261207T100000/../../outside.txt' is not a file inside the bundle"),
])
def test_an_altered_bundle_is_refused_in_one_line(run: Path, tmp_path: Path, change,
                                                  message, capsys) -> None:
    good, bad = tmp_path / "good.tar.gz", tmp_path / "bad.tar.gz"
    export(run, good)
    _rewrite(good, bad, change)
    with pytest.raises(BundleError, match=message):
        open_bundle(bad, tmp_path / "out")
    assert not (tmp_path / "outside.txt").exists()
    assert main(["check", str(bad)]) == 65
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_a_truncated_bundle_is_refused(run: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.tar.gz"
    export(run, good)
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(good.read_bytes()[:200])
    with pytest.raises(BundleError, match="cut.tar.gz: not a readable bundle"):
        open_bundle(cut, tmp_path / "out")
    assert main(["analyse", str(cut)]) == 65
    assert not (tmp_path / "cut").exists()  # the folder claimed for it is not left empty


def test_a_bundle_with_a_link_or_a_dot_folder_is_refused(run: Path, tmp_path: Path) -> None:
    good = tmp_path / "good.tar.gz"
    export(run, good)
    linked = tmp_path / "linked.tar.gz"
    with tarfile.open(good) as src, tarfile.open(linked, "w:gz") as dst:
        for m in src.getmembers():
            dst.addfile(m, src.extractfile(m))
        link = tarfile.TarInfo("20261207T100000/logs/n2.log")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        dst.addfile(link)
    with pytest.raises(BundleError, match="'20261207T100000/logs/n2.log' is not a file"):
        open_bundle(linked, tmp_path / "out")
    dotted = tmp_path / "dotted.tar.gz"
    with tarfile.open(dotted, "w:gz") as dst:
        dst.add(run, arcname=".")
    with pytest.raises(BundleError, match="not a faultline bundle"):
        open_bundle(dotted, tmp_path / "out2")
