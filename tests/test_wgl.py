"""The exact search on hand-written histories whose verdicts follow from the semantics."""

from __future__ import annotations

import pytest

from checkers.history import Event, pair
from checkers.models import get_model
from checkers.result import INVALID, UNKNOWN, VALID
from checkers.wgl import Budget, check_key


CCF = "ConditionalCheckFailedException: The conditional request failed"
REFUSED = "EndpointConnectionError: Could not connect to the endpoint URL"


def ops_of(*events: tuple) -> list:
    """Events as (process, type, f, value[, error]) tuples, in real-time order."""
    return pair([Event(i, e[1], e[0], e[2], None, e[3], error=e[4] if len(e) > 4 else None)
                 for i, e in enumerate(events)])


def verdict(model: str, *events: tuple) -> str:
    return check_key(get_model(model), None, ops_of(*events)).verdict


def test_sequential_register_is_valid():
    assert verdict("register",
                   (0, "invoke", "write", 1), (0, "ok", "write", 1),
                   (1, "invoke", "read", None), (1, "ok", "read", 1)) == VALID


def test_stale_read_after_completed_overwrite_is_invalid():
    assert verdict("register",
                   (0, "invoke", "write", 1), (0, "ok", "write", 1),
                   (0, "invoke", "write", 2), (0, "ok", "write", 2),
                   (1, "invoke", "read", None), (1, "ok", "read", 1)) == INVALID


def test_concurrent_write_may_be_seen_or_not():
    # p1's two reads overlap the write of 2: 1 then 2 is fine, 2 then 1 is not.
    base = [(0, "invoke", "write", 1), (0, "ok", "write", 1), (0, "invoke", "write", 2)]
    ok = base + [(1, "invoke", "read", None), (1, "ok", "read", 1),
                 (1, "invoke", "read", None), (1, "ok", "read", 2), (0, "ok", "write", 2)]
    bad = base + [(1, "invoke", "read", None), (1, "ok", "read", 2),
                  (1, "invoke", "read", None), (1, "ok", "read", 1), (0, "ok", "write", 2)]
    assert verdict("register", *ok) == VALID
    assert verdict("register", *bad) == INVALID


def test_unwritten_register_reads_nil_only_with_porcupine_conventions():
    h = [(0, "invoke", "write", 1), (0, "ok", "write", 1),
         (1, "invoke", "read", None), (1, "ok", "read", None)]
    assert verdict("etcd", *h) == INVALID       # nil means never written
    assert verdict("cas-register", *h) == VALID  # Knossos: nil reads match anything


def test_failed_cas_conventions_differ():
    h = [(0, "invoke", "write", 1), (0, "ok", "write", 1),
         (1, "invoke", "cas", [1, 2]), (1, "fail", "cas", [1, 2])]
    assert verdict("etcd", *h) == INVALID        # the compare must have found != 1
    assert verdict("cas-register", *h) == VALID  # the op never happened


def test_indeterminate_write_may_take_effect_late_or_never():
    later_read = [(0, "invoke", "write", 1), (0, "ok", "write", 1),
                  (1, "invoke", "write", 2), (1, "info", "write", None),
                  (2, "invoke", "read", None), (2, "ok", "read", 1),
                  (2, "invoke", "read", None), (2, "ok", "read", 2)]
    assert verdict("register", *later_read) == VALID
    flip_back = later_read + [(2, "invoke", "read", None), (2, "ok", "read", 1)]
    assert verdict("register", *flip_back) == INVALID


def test_indeterminate_cas_applies_only_if_compare_holds():
    h = [(0, "invoke", "write", 1), (0, "ok", "write", 1),
         (1, "invoke", "cas", [5, 7]), (1, "info", "cas", None),
         (2, "invoke", "read", None), (2, "ok", "read", 7)]
    assert verdict("cas-register", *h) == INVALID
    h2 = [(0, "invoke", "write", 5), (0, "ok", "write", 5)] + h[2:]
    assert verdict("cas-register", *h2) == VALID


def test_kv_append_order():
    ops = [(0, "invoke", "append", "a"), (0, "ok", "append", "a"),
           (1, "invoke", "append", "b"), (1, "ok", "append", "b"),
           (2, "invoke", "get", None), (2, "ok", "get", "ba")]
    assert verdict("kv", *ops) == INVALID
    ops[-1] = (2, "ok", "get", "ab")
    assert verdict("kv", *ops) == VALID


def test_dynamo_item_conditional_update_and_delete():
    h = [(0, "invoke", "put", 1), (0, "ok", "put", 1),
         (1, "invoke", "update", [1, 2]), (1, "ok", "update", [1, 2]),
         (0, "invoke", "delete", None), (0, "ok", "delete", None),
         (1, "invoke", "update", [None, 3]), (1, "ok", "update", [None, 3]),
         (2, "invoke", "get", None), (2, "ok", "get", 3)]
    assert verdict("dynamo-item", *h) == VALID
    # a ConditionalCheckFailed proves the item did not hold the expected value
    bad = h[:4] + [(2, "invoke", "update", [2, 9]), (2, "fail", "update", [2, 9], CCF)]
    assert verdict("dynamo-item", *bad) == INVALID


def test_dynamo_item_failure_constrains_only_when_the_store_said_so():
    # Seen under `kill`: a read of nil, then an update from nil refused by a
    # dead node.  The refusal says nothing of the item.
    h = [(0, "invoke", "get", None), (0, "ok", "get", None),
         (1, "invoke", "update", [None, 7]), (1, "fail", "update", [None, 7], REFUSED)]
    assert verdict("dynamo-item", *h) == VALID
    h[-1] = (1, "fail", "update", [None, 7], CCF)
    assert verdict("dynamo-item", *h) == INVALID
    # a cancelled transaction whose reason is the condition counts the same
    h[-1] = (1, "fail", "update", [None, 7],
             "TransactionCanceledException: Transaction cancelled [ConditionalCheckFailed]")
    assert verdict("dynamo-item", *h) == INVALID
    # Porcupine's convention has no error field: every failed cas is a mismatch
    etcd = [(0, "invoke", "read", None), (0, "ok", "read", None),
            (1, "invoke", "cas", [None, 7]), (1, "fail", "cas", [None, 7])]
    assert verdict("etcd", *etcd) == INVALID


def test_many_indeterminate_writes_nobody_read_are_decided_at_once():
    # A cut-off leader's clients leave indeterminate writes nobody observes;
    # with a failed compare that one of them may explain, the search used to
    # try every subset of them.
    h: list[tuple] = [(0, "invoke", "put", 1), (0, "ok", "put", 1)]
    for p in range(1, 31):
        h += [(p, "invoke", "put", 100 + p), (p, "info", "put", None)]
    h += [(40, "invoke", "update", [1, 5]), (40, "fail", "update", [1, 5], CCF),
          (41, "invoke", "get", None), (41, "ok", "get", 1)]
    res = check_key(get_model("dynamo-item"), "k", ops_of(*h), Budget(max_states=500))
    assert res.verdict == INVALID  # 1 was overwritten before the failed compare
    h[-1] = (41, "ok", "get", 130)  # ... and 130 is what overwrote it
    res = check_key(get_model("dynamo-item"), "k", ops_of(*h), Budget(max_states=500))
    assert res.verdict == VALID and res.explored < 500


def test_witness_names_the_failing_op_and_states():
    ops = ops_of((0, "invoke", "write", 1), (0, "ok", "write", 1),
                 (0, "invoke", "write", 2), (0, "ok", "write", 2),
                 (1, "invoke", "read", None), (1, "ok", "read", 1))
    res = check_key(get_model("register"), "k", ops)
    w = res.witness
    assert res.verdict == INVALID and w is not None
    assert w.failing_op is ops[2]
    assert w.states == ["2"]
    assert [op.input for op in w.linearized] == [1, 2]
    assert w.states_after == ["1", "2"]
    assert ops[2] in w.window and ops[1] in w.window
    assert "read -> 1" in w.explanation


def _hard_history(n: int) -> list:
    """n concurrent writers of distinct values and reads that no order explains."""
    evs = [(p, "invoke", "write", p) for p in range(n)]
    evs += [(n, "invoke", "read", None), (n, "ok", "read", -1)]
    evs += [(p, "ok", "write", p) for p in range(n)]
    return ops_of(*evs)


def test_state_budget_gives_unknown_with_reason():
    res = check_key(get_model("register"), None, _hard_history(14), Budget(max_states=100))
    assert res.verdict == UNKNOWN
    assert "state budget of 100" in (res.reason or "")


def test_time_budget_gives_unknown():
    res = check_key(get_model("register"), None, _hard_history(20),
                    Budget(time_limit=0.05, max_states=None))
    assert res.verdict == UNKNOWN and "time limit" in (res.reason or "")


@pytest.mark.parametrize("model", ["register", "cas-register", "etcd", "dynamo-item", "kv"])
def test_empty_history_is_valid(model):
    assert check_key(get_model(model), None, []).verdict == VALID


def test_unknown_op_for_model_is_a_clear_error():
    with pytest.raises(ValueError, match="has no operation 'frobnicate'"):
        check_key(get_model("register"), None,
                  ops_of((0, "invoke", "frobnicate", 1), (0, "ok", "frobnicate", 1)))
