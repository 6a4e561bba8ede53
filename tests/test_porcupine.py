"""Every history of Porcupine's published test data gets Porcupine's verdict."""

from __future__ import annotations

from pathlib import Path

import pytest

from checkers import importers
from checkers.check import check_histories
from checkers.result import INVALID, VALID

WORDS = {"linearizable": VALID, "not-linearizable": INVALID}


def test_every_listed_history_gets_its_verdict(shared_data: Path):
    root = shared_data / "porcupine"
    expected = dict(line.split("\t") for line in
                    (root / "verdicts.tsv").read_text().splitlines() if line)
    assert len(expected) == 108
    histories = [importers.load(str(root / rel)) for rel in expected]
    results = check_histories(histories)
    got = {str(Path(r.path).relative_to(root)): r.verdict for r in results}
    wrong = {rel: (got[rel], want) for rel, want in expected.items()
             if got[rel] != WORDS[want]}
    assert not wrong
    # both kinds really occur, and every invalid one carries a witness
    assert {r.verdict for r in results} == {VALID, INVALID}
    for r in results:
        for k in r.keys:
            assert k.verdict != INVALID or (k.witness is not None and k.witness.window)


@pytest.mark.parametrize("name, model", [("jepsen/etcd_000.log", "etcd"),
                                         ("kv/c10-ok.txt", "kv")])
def test_format_implies_the_tools_model(shared_data: Path, name: str, model: str):
    h = importers.load(str(shared_data / "porcupine" / "test_data" / name))
    [r] = check_histories([h])
    assert r.model == model
