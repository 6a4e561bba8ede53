"""The HTML timeline of a witness: what it shows, and that it is safe to open."""

from __future__ import annotations

import html
import math
import re

from checkers.history import Operation
from checkers.models import get_model
from checkers.report import Anomaly
from checkers.result import INVALID, VALID, CheckResult, KeyResult, Witness
from checkers.stats import Interval
from checkers.timeline import RunOverview, render_html, write_html

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


# ------------------------------------------------------------ a fault test's page

def run_page(t0=0):
    """p0 (on n1) writes 1; p1 (on n3, cut off by a partition) then reads 0."""
    s = 1_000_000_000
    w = Operation(0, 0, "write", "x", 1, 1, "ok", 0, 1, t0 + 1 * s, t0 + 2 * s, "n1")
    r = Operation(1, 1, "read", "x", None, 0, "ok", 2, 3, t0 + 3 * s, t0 + 4 * s, "n3")
    state = MODEL.describe_state(1)
    witness = Witness(failing_op=r, linearized=[w], states_after=[state], states=[state],
                      window=[w, r], explanation="read -> 0 cannot follow write 1")
    result = CheckResult(verdict=INVALID, model=MODEL.name, ops=3945, elapsed=0.135,
                         keys=[KeyResult(key="x", verdict=INVALID, ops=2, algorithm="wgl",
                                         witness=witness)])
    part = Interval("partition-leader", t0 + int(2.5 * s), t0 + 5 * s, "start-partition-leader",
                    "stop-partition-leader", {"groups": [["n3"], ["n1", "n2"]]})
    unlinked = Operation(7, 4, "read", "y", None, 3, "ok", 9, 10, t0 + 6 * s, t0 + 7 * s, "n2")
    run = RunOverview(ops=3945, t0=t0, end=t0 + 135 * s, faults=[part], anomalies=[
        Anomaly("not linearizable", r, "read -> 0 cannot follow write 1"),
        Anomaly("stale read", unlinked, "read y missed 1")])
    return render_html([result], title="run", describe=MODEL.describe_op, run=run)


def test_a_runs_page_counts_the_whole_history_on_the_runs_clock():
    page = run_page(t0=7_000_000_000_000)
    assert "<b>3,945 ops over 135.0 s</b> · 1 fault window · 2 anomalies" in page
    assert "seconds since the test started" in page
    # Times in tooltips and tables are seconds since t0, not the raw clock.
    assert "t=3.000 s" in page and "t=4.000 s" in page and "t=7003" not in page
    assert re.search(r"<td class=\"mono\">3\.000 s</td>", page)
    # The overview's op count is the whole history's; the check's time is named so.
    assert "<th class=\"num\">check time</th>" in page and ">3,945<" in page


def test_a_runs_page_draws_fault_bands_and_lists_anomalies_to_jump_between():
    page = run_page()
    # The strip: the band named with its targets and its times, each anomaly a mark.
    assert "<title>partition-leader n3: 2.5–5.0 s</title>" in page
    assert re.search(r'<a href="#h0-k0"><line class="anomaly"[^>]*><title>not linearizable '
                     r"at 3\.000 s", page)
    assert page.count('<line class="anomaly"') == 2
    # The list, in time order; an anomaly with a witness on the page links to it.
    items = re.findall(r"<li><span class=\"mono\">([\d.]+ s)</span> <b>([^<]+)</b> on (n\d)"
                       r".*?</li>", page)
    assert items == [("3.000 s", "not linearizable", "n3"), ("6.000 s", "stale read", "n2")]
    assert page.count('<a href="#h0-k0">witness</a>') == 1
    # The witness: the fault band behind the bars (read from 2 on, the write before it).
    svg = timeline_svg(page)
    assert 'fill-opacity=".35"' in svg and ">partition-leader n3</text>" in svg
    assert "a fault in effect" in page
    # Each lane names its process and the node it talks to.
    assert re.search(r'>p0<tspan class="lanenode"> n1</tspan>', page)
    assert re.search(r'>p1<tspan class="lanenode"> n3</tspan>', page)


def test_a_page_without_a_run_has_no_run_header():
    page = render([invalid_result()])
    assert "ops over" not in page and 'class="strip"' not in page
