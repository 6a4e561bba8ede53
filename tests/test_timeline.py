"""The HTML timeline of a witness: what it shows, and that it is safe to open."""

from __future__ import annotations

import html
import math
import re

from checkers.history import Operation
from checkers.models import get_model
from checkers.result import INVALID, VALID, CheckResult, KeyResult, Witness
from checkers.timeline import render_html, write_html

MODEL = get_model("register")


def op(id, process, f, input, output, status, call, ret, *, key=None):
    t = lambda p: None if p == math.inf else 1_000_000 * p
    return Operation(id, process, f, key, input, output, status, call, ret, t(call), t(ret))


def invalid_result(read_value=0, write_value=1, key="x", extra_ops=()):
    """p0 writes 1 and completes; then p1 reads 0: not linearizable."""
    w = op(0, 0, "write", write_value, write_value, "ok", 0, 1, key=key)
    r = op(1, 1, "read", None, read_value, "ok", 2, 3, key=key)
    state = MODEL.describe_state(write_value)
    witness = Witness(
        failing_op=r, linearized=[w], states_after=[state], states=[state],
        window=[w, r] + list(extra_ops),
        explanation=f"{MODEL.describe_op(r)} by process 1 cannot follow "
                    f"{MODEL.describe_op(w)}: the register holds {state}")
    key_result = KeyResult(key=key, verdict=INVALID, ops=2, algorithm="wgl", witness=witness)
    valid_key = KeyResult(key="y", verdict=VALID, ops=4, algorithm="wgl")
    return CheckResult(verdict=INVALID, model=MODEL.name, ops=6, elapsed=0.01,
                       keys=[key_result, valid_key], path="histories/bad.jsonl")


def timeline_svg(page):
    """The SVG of the first timeline (the one that scrolls, with the bars)."""
    start = page.index('<div class="scroll"')
    return page[start:page.index("</svg>", start)]


def render(results):
    return render_html(results, title="check", describe=MODEL.describe_op)


def test_failing_op_label_and_explanation_appear():
    result = invalid_result()
    page = render([result])
    w = result.keys[0].witness
    assert MODEL.describe_op(w.failing_op) == "read -> 0"
    # Text is escaped, so the label appears as its HTML escape.
    assert html.escape("read -> 0") in page
    assert html.escape(w.explanation) in page
    # The state the model could have been in is listed.
    assert re.search(r"could have been in:.*<code>1</code>", page)
    # The failing op is drawn as a failing bar and a red marker.
    assert re.search(r'<rect class="bar failing" data-op="1"', page)
    assert 'class="badmark" data-op="1"' in page


def test_every_window_op_is_an_svg_rect_with_its_id():
    p2 = op(2, 2, "write", 2, None, "info", 1, math.inf, key="x")
    result = invalid_result(extra_ops=[p2])
    page = render([result])
    svg = timeline_svg(page)
    for o in result.keys[0].witness.window:
        assert re.search(rf'<rect class="bar[^"]*" data-op="{o.id}"', svg), o
    # The indeterminate op fades out (a gradient fill) to the right edge.
    m = re.search(r'<rect class="bar info" data-op="2"[^>]*fill="url\(#([^)]+)\)"', svg)
    assert m and f'<linearGradient id="{m.group(1)}"' in svg
    # The linearization is numbered: marker 1 on the write.
    assert re.search(r'<g class="mark" data-op="0"[^>]*>.*?<text[^>]*>1</text>', svg)


def test_tooltip_has_op_details():
    page = render([invalid_result()])
    m = re.search(r'<rect class="bar failing" data-op="1" data-tip="([^"]*)"', page)
    tip = m.group(1)
    for part in ("op 1", "process 1", "f: read", "output: 0", "status: ok",
                 "call: event 2", "ret: event 3"):
        assert part in tip


def test_page_needs_no_network():
    page = render([invalid_result()])
    assert "http://" not in page and "https://" not in page
    # No protocol-relative references either (//host/...).
    assert not re.search(r'(src|href|url\()\s*=?\s*["\']?//', page)
    assert not re.search(r'\b(src|href)="(?!#)', page)
    assert "@import" not in page and "url(http" not in page


def test_values_are_escaped():
    evil = "<script>alert('x')</script>"
    result = invalid_result(read_value=evil, key="<b>k</b>")
    result.path = "<img src=x onerror=alert(1)>"
    page = render([result])
    assert evil not in page
    assert "<b>k</b>" not in page
    assert "<img src=x" not in page
    assert "&lt;script&gt;alert(" in page
    # The only script element is the page's own.
    assert page.count("<script>") == 1


def test_valid_only_result_has_summary_without_timeline():
    result = CheckResult(verdict=VALID, model="register", ops=10, elapsed=0.002,
                         keys=[KeyResult(key=k, verdict=VALID, ops=5, algorithm="wgl")
                               for k in ("a", "b")], path="good.jsonl")
    page = render([result])
    assert "good.jsonl" in page and "valid" in page
    assert html.escape("'a'") in page and html.escape("'b'") in page
    assert "<svg class=\"tl\"" not in page
    assert 'class="witness"' not in page


def test_unknown_key_shows_reason():
    k = KeyResult(key=None, verdict="unknown", ops=100, algorithm="wgl",
                  reason="time limit of 1 s reached after 12345 states")
    result = CheckResult(verdict="unknown", model="register", ops=100, elapsed=1.0, keys=[k])
    page = render([result])
    assert "time limit of 1 s reached after 12345 states" in page
    assert 'href="#h0-k0"' in page and 'id="h0-k0"' in page


def test_large_window_is_capped(tmp_path):
    ops = [op(i, i % 20, "write", i, i, "ok", 2 * i, 2 * i + 1) for i in range(300)]
    failing = op(300, 0, "read", None, -1, "ok", 600, 601)
    w = Witness(failing_op=failing, linearized=ops, states_after=[str(o.input) for o in ops],
                states=["299"], window=ops + [failing], explanation="read -> -1 cannot follow")
    result = CheckResult(verdict=INVALID, model="register", ops=301, elapsed=0.1,
                         keys=[KeyResult(key=None, verdict=INVALID, ops=301,
                                         algorithm="wgl", witness=w)])
    path = tmp_path / "t.html"
    write_html(path, [result], title="big", describe=MODEL.describe_op, max_bars=50)
    page = path.read_text(encoding="utf-8")
    svg = timeline_svg(page)
    assert len(re.findall(r'<rect class="bar', svg)) == 50
    assert "Truncated" in page
    assert 'data-op="300"' in svg  # the failing op is always drawn


def test_describe_errors_do_not_break_the_page():
    def describe(o):
        raise ValueError("no such op")
    page = render_html([invalid_result()], title="t", describe=describe)
    assert html.escape("read nil") in page
