"""A self-contained HTML page of verdicts and witness timelines.

In the spirit of Porcupine's visualization and Knossos's ``linear.svg``: one
lane per process, ops as bars from invocation to completion along the event
order, the linearization found as numbered markers joined by a line, and the
op that cannot be placed in red with the states the model could have been in.

The page of a fault test (``run``: :class:`RunOverview`) also shows the
whole run on its own clock, seconds since the test started: a header that
counts the whole history, a strip with the fault windows as bands and every
anomaly as a mark, a list of the anomalies to jump between, and the fault
windows as bands behind each witness's bars.

The page needs no network access: the CSS, the SVG (generated here) and the
few lines of JavaScript (tooltips and hover highlighting only) are inline.
Every piece of text from a history is escaped, so values can be anything.

    write_html("timeline.html", results, title="check", describe=model.describe_op)
"""

from __future__ import annotations

import bisect
import html
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from checkers.history import Operation
from checkers.report import Anomaly
from checkers.result import INVALID, UNKNOWN, VALID, CheckResult, KeyResult, Witness
from checkers.stats import Interval

__all__ = ["render_html", "write_html", "RunOverview"]

#: Bars drawn in one timeline at most (the ops nearest the failing op win).
MAX_BARS = 2000
#: Bars drawn in the whole page at most; later timelines become a note.
MAX_TOTAL_BARS = 20000
#: Rows of the linearized-prefix table at most (its last rows are kept).
MAX_PREFIX_ROWS = 300
#: States listed for a failing op at most.
MAX_STATES = 100
#: Valid keys listed by name in the summary at most.
MAX_VALID_KEYS = 500
#: Anomalies listed at most (the page says how many more).
MAX_ANOMALIES = 300
#: One colour per fault name, as in the plots.
FAULT_COLOURS = ["#fdb462", "#80b1d3", "#b3de69", "#fb8072", "#bebada", "#ffed6f",
                 "#8dd3c7", "#fccde5", "#d9d9d9", "#ccebc5"]

# Geometry of a timeline, in pixels.
_LABELS = 76        # the fixed column of lane labels
_LEFT = 12          # padding before the first event
_RIGHT = 56         # room for the "never" edge of indeterminate ops
_AXIS = 34          # axis with event positions
_LANE = 38          # one lane
_BAR = 22           # one bar
_BAR_TOP = 5        # bar offset inside its lane
_CHAR = 6.7         # width of one character of the 11px monospace label
_MARK_R = 8         # radius of a linearization marker
_MIN_WIDTH = 1000   # timelines narrower than this are spread out
_STRIP_W = 1000     # the run strip
_STRIP_PAD = 16
_BAND_LABEL_EVERY = 600  # a fault band's name repeats this often along a timeline
#: Checkers whose witnesses are anomalies, not keys.
_NOT_KEYED = ("set", "bank")
_NICE_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600)


@dataclass
class RunOverview:
    """The fault test a page reports on, on the run's own clock: what its
    header counts, the fault windows it draws as bands, the anomalies it lists.
    ``t0`` (monotonic ns) is when the test started: every time on the page is
    seconds since then."""

    ops: int
    t0: int
    #: the history's last time (ns)
    end: int
    faults: Sequence[Interval] = ()
    anomalies: Sequence[Anomaly] = ()

    def at(self, t: int) -> float:
        return (t - self.t0) / 1e9

    @property
    def duration_s(self) -> float:
        return max(self.at(self.end), 0.0)

    def colour(self, fault: str) -> str:
        names = list(dict.fromkeys(iv.name for iv in self.faults))
        return FAULT_COLOURS[names.index(fault) % len(FAULT_COLOURS)]


@dataclass
class _Page:
    """What every part of one page shares."""

    desc: Callable[[Operation], str]
    max_bars: int
    #: bars the page may still draw
    budget: int
    run: RunOverview | None

    def clock(self, t: int | None) -> str:
        """A time as the page shows it: seconds since the test started when
        the page belongs to a run, the history's own clock otherwise."""
        if t is None:
            return "–"
        if self.run is None:
            return f"{t / 1e9:.6f} s"
        return f"{self.run.at(t):.3f} s"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _val(v: Any) -> str:
    """A value as Jepsen prints it: nil, strings quoted, the rest as is."""
    if v is None:
        return "nil"
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, tuple):
        return "[" + " ".join(_val(x) for x in v) + "]"
    return str(v)


def _key(key: Any) -> str:
    return "(single key)" if key is None else _val(key)


def _secs(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def _pos(p: float) -> str:
    return "never" if p == math.inf else str(int(p))


def _badge(verdict: str) -> str:
    return f'<span class="badge {_e(verdict)}">{_e(verdict)}</span>'


def _safe_describe(describe: Callable[[Operation], str]) -> Callable[[Operation], str]:
    cache: dict[int, str] = {}

    def d(op: Operation) -> str:
        k = id(op)
        if k not in cache:
            try:
                cache[k] = str(describe(op))
            except Exception:  # a witness page should never fail on a label
                cache[k] = f"{op.f} {_val(op.input)}"
        return cache[k]
    return d


def _proc_order(p: Any) -> tuple[int, Any]:
    return (0, p) if isinstance(p, int) else (1, str(p))


def _tip(page: _Page, op: Operation, label: str, role: str) -> str:
    lines = [label, f"op {op.id} · process {op.process}" + (f" · {role}" if role else ""),
             f"f: {op.f}", f"input: {_val(op.input)}", f"output: {_val(op.output)}",
             f"status: {op.status}",
             f"call: event {op.call} · t={page.clock(op.call_time)}",
             "ret: never (indeterminate)" if op.ret == math.inf
             else f"ret: event {_pos(op.ret)} · t={page.clock(op.ret_time)}"]
    if op.node:
        lines.append(f"node: {op.node}")
    if op.error is not None:
        lines.append(f"error: {_val(op.error)}")
    return "\n".join(lines)


# ------------------------------------------------------------------ the page

_CSS = """
:root { --ok:#5b8def; --okd:#2f5fb8; --info:#e59a2f; --fail:#9aa0a6; --bad:#d93025;
  --lin:#137333; --ink:#202124; --muted:#5f6368; --line:#dadce0; --bg:#fff; --soft:#f6f8fa; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
  color: var(--ink); background: var(--bg); margin: 0 24px 48px; }
h1 { font-size: 22px; margin: 20px 0 4px; }
h2 { font-size: 18px; margin: 28px 0 6px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
code, .mono, td.mono { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace; font-size: 12.5px; }
a { color: #1a73e8; text-decoration: none; } a:hover { text-decoration: underline; }
.muted { color: var(--muted); }
.badge { display: inline-block; min-width: 58px; text-align: center; font-size: 12px; font-weight: 600;
  padding: 1px 7px; border-radius: 10px; color: #fff; text-transform: uppercase; letter-spacing: .03em; }
.badge.valid { background: #188038; } .badge.invalid { background: var(--bad); }
.badge.unknown { background: #b06000; }
table { border-collapse: collapse; margin: 6px 0 10px; }
th, td { text-align: left; padding: 3px 10px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--soft); font-weight: 600; font-size: 13px; }
td.num, th.num { text-align: right; }
tr.failing td { background: #fce8e6; }
tr.hl td { background: #fff3c4 !important; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; margin: 12px 0; }
.card h3 { margin-top: 2px; }
ul.keys { list-style: none; padding-left: 0; margin: 6px 0; }
ul.keys li { margin: 3px 0; }
.validkeys { margin: 6px 0; }
.failure { border-left: 4px solid var(--bad); background: #fdf3f2; padding: 8px 12px; margin: 10px 0; border-radius: 0 6px 6px 0; }
.failure .op { font-weight: 600; color: var(--bad); }
.states code, .state { display: inline-block; background: #fff; border: 1px solid #f1b5ae; border-radius: 4px;
  padding: 0 5px; margin: 2px 3px 2px 0; }
.note { background: #fef7e0; border: 1px solid #f9e3a7; padding: 4px 10px; border-radius: 4px; display: inline-block; margin: 4px 0; }
.legend { display: flex; flex-wrap: wrap; gap: 14px; align-items: center; margin: 6px 0; font-size: 12.5px; color: var(--muted); }
.legend span.sw { display: inline-block; width: 26px; height: 12px; vertical-align: -2px; margin-right: 5px; border-radius: 2px; }
.tlwrap { display: flex; border: 1px solid var(--line); border-radius: 6px; background: #fff; overflow: hidden; }
.tlwrap > svg { flex: none; border-right: 1px solid var(--line); }
.scroll { overflow-x: auto; flex: 1 1 auto; }
.tablewrap { max-height: 420px; overflow: auto; display: inline-block; border: 1px solid var(--line); border-radius: 6px; }
.tablewrap table { margin: 0; }
.tablewrap th { position: sticky; top: 0; }
svg.tl { display: block; font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, "DejaVu Sans Mono", monospace; }
svg.tl .lane { fill: #fafbfc; } svg.tl .lane.odd { fill: #f1f3f4; }
svg.tl .lanelabel { font-size: 12px; fill: var(--ink); font-weight: 600; }
svg.tl .tick { font-size: 10px; fill: var(--muted); }
svg.tl .grid { stroke: #e8eaed; stroke-width: 1; }
svg.tl .bar { stroke-width: 1.2; cursor: default; }
svg.tl .bar.ok { fill: #c9dafc; stroke: var(--okd); }
svg.tl .bar.fail { fill: #eceff1; stroke: var(--fail); stroke-dasharray: 4 2; }
svg.tl .bar.failing { fill: #f8c9c4; stroke: var(--bad); stroke-width: 2.2; }
svg.tl .dim { opacity: .38; }
svg.tl .label { font-size: 11px; fill: #1f2a44; pointer-events: none; }
svg.tl .failing-label { fill: #8c1d18; font-weight: 700; }
svg.tl .lin { fill: none; stroke: var(--lin); stroke-width: 1.6; stroke-opacity: .75; }
svg.tl .mark circle, svg.tl .mark rect { fill: var(--lin); stroke: #fff; stroke-width: 1.2; }
svg.tl .mark text { font-size: 9px; font-weight: 700; fill: #fff; text-anchor: middle; pointer-events: none; }
svg.tl .badmark circle { fill: var(--bad); stroke: #fff; stroke-width: 1.2; }
svg.tl .badmark text { font-size: 10px; font-weight: 700; fill: #fff; text-anchor: middle; pointer-events: none; }
svg.tl .badline { stroke: var(--bad); stroke-width: 1.6; stroke-dasharray: 4 3; fill: none; }
svg.tl .hl .bar, svg.tl .bar.hl { stroke: #000; stroke-width: 2.6; }
svg.tl .never { font-size: 10px; fill: var(--muted); }
svg.tl .lanenode { font-weight: normal; fill: var(--muted); }
svg .bandlabel { font-size: 10px; fill: #444; }
svg.strip { display: block; font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
svg.strip .tick { font-size: 10px; fill: var(--muted); }
svg.strip .axis { stroke: #9aa0a6; stroke-width: 1; }
svg.strip .anomaly { stroke: var(--bad); stroke-width: 1.6; }
svg.strip a:hover .anomaly { stroke-width: 3; }
.anomalies { max-height: 260px; overflow: auto; border: 1px solid var(--line); border-radius: 6px;
  padding: 6px 10px 6px 38px; margin: 6px 0 12px; }
.anomalies li { margin: 2px 0; }
#tip { position: fixed; z-index: 10; pointer-events: none; display: none; max-width: 520px; white-space: pre-wrap;
  background: #202124; color: #f1f3f4; padding: 7px 10px; border-radius: 6px; font: 12px/1.4 ui-monospace, Menlo, Consolas, "DejaVu Sans Mono", monospace;
  box-shadow: 0 2px 8px rgba(0,0,0,.25); }
"""

_JS = """
(function () {
  var tip = document.getElementById('tip');
  function scope(el) { return el.closest('.witness') || document; }
  function mark(el, on) {
    var id = el.getAttribute('data-op'); if (id === null) return;
    var els = scope(el).querySelectorAll('[data-op="' + id + '"]');
    for (var i = 0; i < els.length; i++) els[i].classList.toggle('hl', on);
  }
  document.addEventListener('mouseover', function (ev) {
    var el = ev.target.closest && ev.target.closest('[data-op]');
    if (!el) return;
    mark(el, true);
    var t = el.getAttribute('data-tip');
    if (t) { tip.textContent = t; tip.style.display = 'block'; }
  });
  document.addEventListener('mouseout', function (ev) {
    var el = ev.target.closest && ev.target.closest('[data-op]');
    if (!el) return;
    mark(el, false); tip.style.display = 'none';
  });
  var sc = document.querySelectorAll('.scroll[data-focus]');
  for (var i = 0; i < sc.length; i++) {
    var f = parseFloat(sc[i].getAttribute('data-focus'));
    if (f > sc[i].clientWidth) sc[i].scrollLeft = f + 40 - sc[i].clientWidth;
  }
  document.addEventListener('mousemove', function (ev) {
    if (tip.style.display !== 'block') return;
    var x = ev.clientX + 14, y = ev.clientY + 14, w = tip.offsetWidth, h = tip.offsetHeight;
    if (x + w > window.innerWidth - 8) x = Math.max(8, ev.clientX - w - 14);
    if (y + h > window.innerHeight - 8) y = Math.max(8, ev.clientY - h - 14);
    tip.style.left = x + 'px'; tip.style.top = y + 'px';
  });
})();
"""


def render_html(results: list[CheckResult], *, title: str,
                describe: Callable[[Operation], str], run: RunOverview | None = None,
                max_bars: int = MAX_BARS, max_total_bars: int = MAX_TOTAL_BARS) -> str:
    """One self-contained HTML page: a summary, then a witness per bad key.

    ``describe`` labels an op (a model's ``describe_op``); ``run`` is the
    fault test the results come from, if any.  A timeline draws at most
    ``max_bars`` ops, the page at most ``max_total_bars``; what is left out
    is said on the page.
    """
    page = _Page(_safe_describe(describe), max_bars, max_total_bars, run)
    out: list[str] = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>", f"<style>{_CSS}</style>", "</head><body>",
        f"<h1>{_e(title)}</h1>",
    ]
    total = len(results)
    counts = {v: sum(r.verdict == v for r in results) for v in (VALID, INVALID, UNKNOWN)}
    out.append(f'<p class="muted">{total} histor{"y" if total == 1 else "ies"}: '
               + ", ".join(f"{n} {v}" for v, n in counts.items() if n) + "</p>")
    if run is not None:
        out.append(_run_header(run, _anchors(results)))
    out.append(_overview(results))
    for ri, r in enumerate(results):
        out.append(_history_card(ri, r))
    for ri, r in enumerate(results):
        for ki, k in enumerate(r.keys):
            if k.verdict == VALID:
                continue
            out.append(_key_section(page, ri, r, ki, k))
    out.append('<div id="tip"></div>')
    out.append(f"<script>{_JS}</script>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_html(path: str | os.PathLike[str], results: list[CheckResult], *,
               title: str, describe: Callable[[Operation], str], **kw: Any) -> None:
    """Write :func:`render_html`'s page to ``path`` (UTF-8)."""
    page = render_html(results, title=title, describe=describe, **kw)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(page)


def _title(r: CheckResult, k: KeyResult) -> str:
    """A witness's name: ``key 'k7'`` for a register, the anomaly itself
    (``stale-read at 12.412 s on n3``) for checkers whose witnesses are not keys."""
    if r.model in _NOT_KEYED:
        return _e(k.key)
    return f'key <span class="mono">{_e(_key(k.key))}</span>'


def _anchors(results: list[CheckResult]) -> dict[int, str]:
    """The section of each witness, by its failing op (``id``)."""
    return {id(k.witness.failing_op): f"h{ri}-k{ki}" for ri, r in enumerate(results)
            for ki, k in enumerate(r.keys) if k.verdict != VALID and k.witness is not None}


def _run_header(run: RunOverview, anchors: dict[int, str]) -> str:
    """The whole run: its size and length, a strip of its fault windows and
    anomalies, and the list of anomalies, each linked to its witness."""
    n = len(run.anomalies)
    out = [f'<p><b>{run.ops:,} ops over {run.duration_s:.1f} s</b> · {len(run.faults)} fault '
           f"window{'s' if len(run.faults) != 1 else ''} · {n} anomal{'y' if n == 1 else 'ies'}"
           ' <span class="muted">· every time on this page is seconds since the test '
           "started</span></p>", _strip(run, anchors)]
    if run.anomalies:
        out.append(f"<h3>Anomalies ({n:,}, in time order)</h3>")
        out.append('<ol class="anomalies">')
        for a in run.anomalies[:MAX_ANOMALIES]:
            at = f"{run.at(a.time):.3f} s" if a.time is not None else "–"
            node = f" on {_e(a.op.node)}" if a.op.node else ""
            sid = anchors.get(id(a.op))
            jump = f' <a href="#{sid}">witness</a>' if sid else ""
            out.append(f'<li><span class="mono">{at}</span> <b>{_e(a.kind)}</b>{node}: '
                       f'<span class="mono">{_e(a.text)}</span>{jump}</li>')
        out.append("</ol>")
        if n > MAX_ANOMALIES:
            out.append(f'<div class="note">{n - MAX_ANOMALIES:,} more anomalies are in '
                       "results.json.</div>")
    return "\n".join(out)


def _strip(run: RunOverview, anchors: dict[int, str]) -> str:
    """The run on one axis: fault windows as named bands, anomalies as red marks."""
    span = max(run.duration_s, 1e-3)
    inner = _STRIP_W - 2 * _STRIP_PAD
    top, bottom = 18, 50

    def x(seconds: float) -> float:
        return _STRIP_PAD + min(max(seconds / span, 0.0), 1.0) * inner

    g = [f'<svg class="strip" width="{_STRIP_W}" height="{bottom + 22}" role="img">',
         f'<rect x="{_STRIP_PAD}" y="{top}" width="{inner}" height="{bottom - top}" '
         'fill="#f6f8fa"/>']
    placed = -math.inf
    for iv in run.faults:
        a, b = x(run.at(iv.start)), x(run.at(iv.end_or(run.end)))
        g.append(f'<rect x="{a:.1f}" y="{top}" width="{max(b - a, 1.5):.1f}" '
                 f'height="{bottom - top}" fill="{run.colour(iv.name)}" fill-opacity=".6">'
                 f"<title>{_e(iv.label)}: {run.at(iv.start):.1f}–"
                 f"{run.at(iv.end_or(run.end)):.1f} s</title></rect>")
        if a >= placed:
            g.append(f'<text class="bandlabel" x="{a:.1f}" y="{top - 5}">{_e(iv.label)}</text>')
            placed = a + len(iv.label) * 5.6 + 8
    for an in run.anomalies:
        if an.time is None:
            continue
        ax = x(run.at(an.time))
        mark = (f'<line class="anomaly" x1="{ax:.1f}" y1="{top - 2}" x2="{ax:.1f}" '
                f'y2="{bottom + 2}"><title>{_e(an.kind)} at {run.at(an.time):.3f} s: '
                f"{_e(an.text)}</title></line>")
        sid = anchors.get(id(an.op))
        g.append(f'<a href="#{sid}">{mark}</a>' if sid else mark)
    g.append(f'<line class="axis" x1="{_STRIP_PAD}" y1="{bottom}" x2="{_STRIP_PAD + inner}" '
             f'y2="{bottom}"/>')
    step = next((s for s in _NICE_STEPS if span / s <= 12), _NICE_STEPS[-1])
    for i in range(int(span / step) + 1):
        tx = x(i * step)
        g.append(f'<line class="axis" x1="{tx:.1f}" y1="{bottom}" x2="{tx:.1f}" y2="{bottom + 4}"/>'
                 f'<text class="tick" x="{tx:.1f}" y="{bottom + 15}" text-anchor="middle">'
                 f"{i * step:g} s</text>")
    g.append("</svg>")
    return "\n".join(g)


def _overview(results: list[CheckResult]) -> str:
    rows = ['<table class="overview"><tr><th>history</th><th>verdict</th>'
            '<th class="num">ops</th><th class="num">check time</th><th>model</th>'
            '<th>keys</th></tr>']
    for ri, r in enumerate(results):
        n = {v: sum(k.verdict == v for k in r.keys) for v in (VALID, INVALID, UNKNOWN)}
        keys = f"{len(r.keys)}" + (" (" + ", ".join(
            f"{c} {v}" for v, c in n.items() if c) + ")" if r.keys else "")
        rows.append(f'<tr><td class="mono"><a href="#h{ri}">{_e(r.path or f"history {ri + 1}")}</a></td>'
                    f"<td>{_badge(r.verdict)}</td><td class=\"num\">{r.ops:,}</td>"
                    f'<td class="num">{_secs(r.elapsed)}</td><td>{_e(r.model)}</td>'
                    f"<td>{_e(keys)}</td></tr>")
    rows.append("</table>")
    return "\n".join(rows)


def _history_card(ri: int, r: CheckResult) -> str:
    out = [f'<div class="card" id="h{ri}"><h3>{_badge(r.verdict)} '
           f'<span class="mono">{_e(r.path or f"history {ri + 1}")}</span></h3>',
           f'<div class="muted">model {_e(r.model)} · {r.ops:,} ops · '
           f'checked in {_secs(r.elapsed)} · '
           f"{len(r.keys)} key{'s' if len(r.keys) != 1 else ''}</div>"]
    if r.reason:
        out.append(f"<p>{_e(r.reason)}</p>")
    bad = [(ki, k) for ki, k in enumerate(r.keys) if k.verdict != VALID]
    if bad:
        out.append('<ul class="keys">')
        for ki, k in bad:
            extra = [f"{k.ops:,} ops", _e(k.algorithm)]
            if k.elapsed:
                extra.append(_secs(k.elapsed))
            if k.explored:
                extra.append(f"{k.explored:,} states explored")
            link = f'<a href="#h{ri}-k{ki}">{_title(r, k)}</a>'
            line = f"<li>{_badge(k.verdict)} {link} <span class=\"muted\">· {' · '.join(extra)}</span>"
            if k.witness is not None:
                line += (f'<br><span class="muted">failing op:</span> '
                         f'<span class="mono">{_e(k.witness.explanation)}</span>')
            elif k.reason:
                line += f'<br><span class="muted">reason:</span> {_e(k.reason)}'
            out.append(line + "</li>")
        out.append("</ul>")
    good = [k for k in r.keys if k.verdict == VALID]
    if good:
        names = ", ".join(_e(_key(k.key)) for k in good[:MAX_VALID_KEYS])
        if len(good) > MAX_VALID_KEYS:
            names += f", … and {len(good) - MAX_VALID_KEYS} more"
        body = f'<span class="mono">{names}</span>'
        summary = f"{_badge(VALID)} {len(good)} valid key{'s' if len(good) != 1 else ''}"
        if len(good) > 12:
            out.append(f'<details class="validkeys"><summary>{summary}</summary>{body}</details>')
        else:
            out.append(f'<div class="validkeys">{summary}: {body}</div>')
    out.append("</div>")
    return "\n".join(out)


# -------------------------------------------------------------- a bad key

#: How the failure box words a witness, by its kind (the key's algorithm): a
#: set checker's witness is a stale read, not an op that cannot be linearized.
_WORDING = {"": ("cannot be linearized", "The model could have been in"),
            "stale-read": ("is a stale read", "What it missed"),
            "lost": ("is the first final read", "The lost elements"),
            "phantom": ("returned elements it must not hold", "Those elements"),
            "duplicate": ("returned elements it must not hold", "Those elements"),
            "early": ("returned elements it must not hold", "Those elements"),
            "failed-seen": ("returned elements it must not hold", "Those elements"),
            "bank": ("is a bad read", "What it saw")}


def _key_section(page: _Page, ri: int, r: CheckResult, ki: int, k: KeyResult) -> str:
    sid = f"h{ri}-k{ki}"
    desc = page.desc
    out = [f'<section class="witness" id="{sid}">',
           f'<h2>{_badge(k.verdict)} {_title(r, k)} '
           f'<span class="muted" style="font-size:13px;font-weight:normal">in '
           f'<a class="mono" href="#h{ri}">{_e(r.path or f"history {ri + 1}")}</a></span></h2>',
           f'<div class="muted">{k.ops:,} ops · {_e(k.algorithm)}'
           + (f" · {_secs(k.elapsed)}" if k.elapsed else "")
           + (f" · {k.explored:,} states explored" if k.explored else "") + "</div>"]
    if k.reason:
        out.append(f"<p><b>Reason:</b> {_e(k.reason)}</p>")
    w = k.witness
    if w is None:
        if k.verdict == INVALID and not k.reason:
            out.append('<p class="muted">The checker gave no witness for this key.</p>')
        out.append("</section>")
        return "\n".join(out)
    fail_label = desc(w.failing_op)
    verb, states_head = _WORDING.get(k.algorithm, _WORDING[""])
    states = w.states[:MAX_STATES]
    more = len(w.states) - len(states)
    out.append('<div class="failure">'
               f'<div>Op <span class="op mono">{_e(fail_label)}</span> '
               f'(op {w.failing_op.id}, process <span class="mono">{_e(w.failing_op.process)}</span>, '
               f"events {w.failing_op.call}–{_pos(w.failing_op.ret)}) {verb}.</div>"
               f'<div class="mono">{_e(w.explanation)}</div>'
               f'<div class="states">{states_head}: '
               + ("".join(f"<code>{_e(s)}</code>" for s in states) or '<span class="muted">no state</span>')
               + (f' <span class="muted">… and {more} more</span>' if more > 0 else "")
               + "</div></div>")
    out.append(f'<div class="muted">Window: {len(w.window):,} ops · linearized prefix: '
               f"{len(w.linearized):,} ops before the failing op.</div>")
    ops, notes = _select(w, page.max_bars)
    if page.budget <= 0:
        out.append('<p class="note">Timeline left out: the page already draws '
                   "as many bars as it can hold. The tables below still give the witness.</p>")
    else:
        if len(ops) > page.budget:
            ops = _nearest(ops, w.failing_op, page.budget)
            notes.append(f"the page's bar budget is nearly spent: this timeline draws {len(ops)} ops")
        page.budget -= len(ops)
        for n in notes:
            out.append(f'<div class="note">Truncated: {_e(n)}.</div>')
        out.append(_legend(bool(page.run and page.run.faults)))
        out.append(_svg(page, sid, w, ops))
    out.append(_window_table(page, w))
    if w.linearized:
        out.append(_prefix_table(w, desc))
    out.append("</section>")
    return "\n".join(out)


def _nearest(ops: Sequence[Operation], failing: Operation, n: int) -> list[Operation]:
    """The ``n`` ops nearest the failing op in call order (it comes first)."""
    rest = sorted((o for o in ops if o is not failing), key=lambda o: abs(o.call - failing.call))
    keep = ([failing] if any(o is failing for o in ops) else []) + rest
    return sorted(keep[:n], key=lambda o: o.call)


def _select(w: Witness, max_bars: int) -> tuple[list[Operation], list[str]]:
    """The ops of the timeline: the window (and failing op) and the linearized
    ops that overlap the window's span of events, at most ``max_bars``."""
    notes: list[str] = []
    window = list(w.window)
    ids = {id(o) for o in window}
    if id(w.failing_op) not in ids:
        window.append(w.failing_op)
        ids.add(id(w.failing_op))
    lo = min(o.call for o in window)
    hi = max(max(o.call for o in window),
             max((o.ret for o in window if o.ret != math.inf), default=lo))
    extra = [o for o in w.linearized if id(o) not in ids and o.call <= hi and o.ret >= lo]
    if len(window) > max_bars:
        notes.append(f"the window has {len(window):,} ops; the timeline draws the "
                     f"{max_bars:,} nearest the failing op")
        return _nearest(window, w.failing_op, max_bars), notes
    room = max_bars - len(window)
    if len(extra) > room:
        notes.append(f"{len(extra)} linearized ops overlap the window; the timeline "
                     f"draws {room} of them, those nearest the failing op")
        extra = sorted(extra, key=lambda o: abs(o.call - w.failing_op.call))[:room]
    return sorted(window + extra, key=lambda o: o.call), notes


def _legend(faults: bool) -> str:
    def sw(style: str) -> str:
        return f'<span class="sw" style="{style}"></span>'
    band = (f'<span>{sw("background:#fdb462;opacity:.5")}a fault in effect (named above)</span>'
            if faults else "")
    return ('<div class="legend">' + band +
            f'<span>{sw("background:#c9dafc;border:1px solid #2f5fb8")}ok</span>'
            f'<span>{sw("background:linear-gradient(90deg,#e59a2f,rgba(229,154,47,0));border:1px solid #e59a2f;border-right:none")}indeterminate (info): may take effect any time after its call</span>'
            f'<span>{sw("background:#eceff1;border:1px dashed #9aa0a6")}failed</span>'
            f'<span>{sw("background:#f8c9c4;border:2px solid #d93025")}the op that cannot be linearized</span>'
            f'<span>{sw("background:#c9dafc;opacity:.38;border:1px solid #2f5fb8")}outside the window</span>'
            '<span><svg width="44" height="16" style="vertical-align:-4px"><polyline points="6,8 38,8" '
            'stroke="#137333" stroke-width="1.6" fill="none"/><circle cx="8" cy="8" r="7" fill="#137333"/>'
            '<text x="8" y="11" font-size="9" font-weight="700" fill="#fff" text-anchor="middle">1</text>'
            '<circle cx="36" cy="8" r="7" fill="#137333"/><text x="36" y="11" font-size="9" '
            'font-weight="700" fill="#fff" text-anchor="middle">2</text></svg>linearization found, in order</span>'
            '<span class="muted">x axis: event position · hover a bar for details</span>'
            "</div>")


def _svg(page: _Page, sid: str, w: Witness, ops: list[Operation]) -> str:
    desc = page.desc
    # Columns: the distinct event positions of the drawn ops, in order.
    cols = sorted({o.call for o in ops} | {int(o.ret) for o in ops if o.ret != math.inf})
    col = {p: i for i, p in enumerate(cols)}
    ncols = len(cols)
    labels = {id(o): desc(o) for o in ops}
    # Column width: enough for most labels of finite bars to fit.
    needs = sorted((len(labels[id(o)]) * _CHAR + 14) / max(1, col[int(o.ret)] - col[o.call])
                   for o in ops if o.ret != math.inf)
    step = needs[int(len(needs) * 0.9)] if needs else 60.0
    step = min(max(step, 24.0), 160.0)
    step = max(step, (_MIN_WIDTH - _LABELS - _LEFT - _RIGHT) / (ncols + 1))
    if ncols * step > 80000:
        step = max(12.0, 80000 / ncols)

    tick_w = len(str(cols[-1])) * 6.2 + 14     # room for one axis label
    left = max(_LEFT, tick_w / 2 - step / 2)

    def x(p: float) -> float:
        if p == math.inf:
            return left + (ncols + 0.5) * step
        return left + (col[int(p)] + 0.5) * step
    x_never = x(math.inf)
    width = int(x_never + _RIGHT)

    # Lanes: one per process, more rows when its ops overlap (an info op
    # followed by more ops of the same process).
    by_proc: dict[Any, list[Operation]] = {}
    for o in ops:
        by_proc.setdefault(o.process, []).append(o)
    row_of: dict[int, int] = {}
    lanes: list[tuple[Any, int, int]] = []   # (process, first row, rows)
    nrows = 0
    for p in sorted(by_proc, key=_proc_order):
        ends: list[float] = []
        for o in sorted(by_proc[p], key=lambda o: o.call):
            for i, end in enumerate(ends):
                if end < o.call:
                    ends[i] = o.ret
                    row_of[id(o)] = nrows + i
                    break
            else:
                ends.append(o.ret)
                row_of[id(o)] = nrows + len(ends) - 1
        lanes.append((p, nrows, len(ends)))
        nrows += len(ends)
    height = _AXIS + nrows * _LANE + 8

    def y(o: Operation) -> float:
        return _AXIS + row_of[id(o)] * _LANE + _BAR_TOP

    window_ids = {id(o) for o in w.window} | {id(w.failing_op)}
    lin_index = {id(o): i + 1 for i, o in enumerate(w.linearized)}
    fid = f"fade-{sid}"
    labels_svg = [f'<svg class="tl" width="{_LABELS}" height="{height}" role="img">',
                  f'<text class="tick" x="8" y="{_AXIS - 10}">event</text>']
    g: list[str] = [
        f'<svg class="tl" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img">',
        f'<defs><linearGradient id="{fid}" x1="0" x2="1" y1="0" y2="0">'
        '<stop offset="0" stop-color="#e59a2f" stop-opacity=".85"/>'
        '<stop offset=".35" stop-color="#e59a2f" stop-opacity=".55"/>'
        '<stop offset="1" stop-color="#e59a2f" stop-opacity="0"/></linearGradient></defs>']
    # Lane backgrounds and labels.
    for li, (p, first, rows) in enumerate(lanes):
        top = _AXIS + first * _LANE
        band = f'class="lane{" odd" if li % 2 else ""}" x="0" y="{top}" height="{rows * _LANE}"'
        g.append(f'<rect {band} width="{width}"/>')
        labels_svg.append(f'<rect {band} width="{_LABELS}"/>')
        name = str(p) if not isinstance(p, int) else f"p{p}"
        node = next((o.node for o in by_proc[p] if o.node), None)
        short = name if len(name) <= 8 else name[:7] + "…"
        on = f'<tspan class="lanenode"> {_e(node)}</tspan>' if node else ""
        labels_svg.append(f'<text class="lanelabel" x="8" y="{top + _BAR_TOP + _BAR / 2 + 4}">'
                          f"<title>process {_e(p)}{' on ' + _e(node) if node else ''}</title>"
                          f"{_e(short)}{on}</text>")
    if page.run is not None:
        g += _fault_bands(page.run, ops, x, height)
    # Axis: event positions, a tick every so many columns.
    every = max(1, math.ceil(tick_w / step))
    for i, p in enumerate(cols):
        xx = x(p)
        if i % every or x_never - xx < tick_w / 2 + 20:
            continue
        g.append(f'<line class="grid" x1="{xx:.1f}" y1="{_AXIS - 6}" x2="{xx:.1f}" y2="{height}"/>')
        g.append(f'<text class="tick" x="{xx:.1f}" y="{_AXIS - 10}" text-anchor="middle">{p}</text>')
    g.append(f'<line class="grid" x1="{x_never:.1f}" y1="{_AXIS - 6}" x2="{x_never:.1f}" '
             f'y2="{height}" stroke-dasharray="3 3"/>')
    g.append(f'<text class="never" x="{x_never:.1f}" y="{_AXIS - 10}" text-anchor="middle">never</text>')
    # Bars.
    for o in ops:
        x1, x2 = x(o.call), x(o.ret)
        bw = max(x2 - x1, 6.0)
        yy = y(o)
        label = labels[id(o)]
        failing = o is w.failing_op
        cls = ["bar", "failing" if failing else ("fail" if o.status == "fail" else
                                                 "info" if o.ret == math.inf else "ok")]
        role = ("cannot be linearized" if failing else
                f"linearized #{lin_index[id(o)]}" if id(o) in lin_index else "")
        fill = f' fill="url(#{fid})" stroke="none"' if o.ret == math.inf and not failing else ""
        gcls = "op" + ("" if id(o) in window_ids else " dim")
        g.append(f'<g class="{gcls}">')
        g.append(f'<rect class="{" ".join(cls)}" data-op="{o.id}" '
                 f'data-tip="{_e(_tip(page, o, label, role))}" x="{x1:.1f}" y="{yy}" '
                 f'width="{bw:.1f}" height="{_BAR}" rx="3"{fill}/>')
        if o.ret == math.inf and not failing:
            # An outline on three sides, fading with the bar.
            g.append(f'<path d="M{x1 + bw:.1f},{yy} H{x1:.1f} V{yy + _BAR} H{x1 + bw:.1f}" '
                     f'fill="none" stroke="#c77c12" stroke-opacity=".7" stroke-width="1.2" '
                     'pointer-events="none"/>')
        room = int((bw - 10) / _CHAR)
        if o.ret == math.inf:
            room = min(room, max(int((min(bw, 3 * step) - 10) / _CHAR), len(label)))
        text = label if len(label) <= room else (label[:room - 1] + "…" if room >= 3 else "")
        if text:
            g.append(f'<text class="label{" failing-label" if failing else ""}" '
                     f'x="{x1 + 5:.1f}" y="{yy + 11}">{_e(text)}</text>')
        g.append("</g>")
    # Linearization markers, joined in order, then the failing op.
    pts: list[tuple[float, float, int, Operation]] = []
    prev = -math.inf
    for o in w.linearized:
        if id(o) not in row_of:
            continue
        x1, x2 = x(o.call), x(o.ret)
        lo, hi = x1 + _MARK_R + 3, max(x1 + _MARK_R + 3, x2 - _MARK_R - 3)
        px = min(max(lo, prev + 3), hi)
        prev = px
        pts.append((px, y(o) + _BAR, lin_index[id(o)], o))
    f = w.failing_op
    fpt = None
    if id(f) in row_of:
        x1, x2 = x(f.call), x(f.ret)
        lo, hi = x1 + _MARK_R + 3, max(x1 + _MARK_R + 3, x2 - _MARK_R - 3)
        fpt = (min(max(lo, prev + 3), hi), y(f) + _BAR)
    if len(pts) > 1:
        g.append('<polyline class="lin" points="'
                 + " ".join(f"{px:.1f},{py:.1f}" for px, py, _, _ in pts) + '"/>')
    if pts and fpt:
        g.append(f'<line class="badline" x1="{pts[-1][0]:.1f}" y1="{pts[-1][1]:.1f}" '
                 f'x2="{fpt[0]:.1f}" y2="{fpt[1]:.1f}"/>')
    for px, py, n, o in pts:
        s = str(n)
        tip = _e(f"linearized #{n}: {labels[id(o)]}")
        if len(s) <= 2:
            shape = f'<circle cx="{px:.1f}" cy="{py:.1f}" r="{_MARK_R}"/>'
        else:
            wd = len(s) * 5.6 + 6
            shape = (f'<rect x="{px - wd / 2:.1f}" y="{py - _MARK_R}" width="{wd:.1f}" '
                     f'height="{2 * _MARK_R}" rx="{_MARK_R}"/>')
        g.append(f'<g class="mark" data-op="{o.id}" data-tip="{tip}">{shape}'
                 f'<text x="{px:.1f}" y="{py + 3.2:.1f}">{s}</text></g>')
    if fpt:
        g.append(f'<g class="badmark" data-op="{f.id}" data-tip="{_e("cannot be linearized: " + labels[id(f)])}">'
                 f'<circle cx="{fpt[0]:.1f}" cy="{fpt[1]:.1f}" r="{_MARK_R}"/>'
                 f'<text x="{fpt[0]:.1f}" y="{fpt[1] + 3.5:.1f}">✗</text></g>')
    g.append("</svg>")
    labels_svg.append("</svg>")
    # Open scrolled to the failing op (the script reads data-focus).
    focus = (x(f.ret) if f.ret != math.inf else x(f.call) + 4 * step) + step + 16
    return ('<div class="tlwrap">' + "\n".join(labels_svg)
            + f'<div class="scroll" data-focus="{focus:.0f}">' + "\n".join(g) + "</div></div>")


def _fault_bands(run: RunOverview, ops: list[Operation], x: Callable[[float], float],
                 height: int) -> list[str]:
    """The fault windows behind a witness's bars.  Its axis is event order, not
    time, so a band runs from the first drawn event at or after the fault
    started to the last one before it stopped (between two events when none
    fell inside)."""
    stamps = sorted({(o.call, o.call_time) for o in ops if o.call_time is not None}
                    | {(int(o.ret), o.ret_time) for o in ops
                       if o.ret != math.inf and o.ret_time is not None})
    if not stamps:
        return []
    xs = [x(p) for p, _ in stamps]
    times = [t for _, t in stamps]
    half = (xs[1] - xs[0]) / 2 if len(xs) > 1 else 20.0

    def edge(i: int) -> float:
        """The x between drawn events i - 1 and i."""
        if i <= 0:
            return xs[0] - half
        if i >= len(xs):
            return xs[-1] + half
        return (xs[i - 1] + xs[i]) / 2

    out: list[str] = []
    placed = -math.inf
    for iv in run.faults:
        i = bisect.bisect_left(times, iv.start)
        j = bisect.bisect_right(times, iv.end_or(run.end))
        if (i == j and i in (0, len(times))) or i > j:
            continue  # entirely before or after the events drawn
        a, b = edge(i), edge(j)
        if b - a < 4:
            a, b = a - 2, a + 2
        out.append(f'<rect x="{a:.1f}" y="{_AXIS - 6}" width="{b - a:.1f}" '
                   f'height="{height - _AXIS + 6}" fill="{run.colour(iv.name)}" '
                   f'fill-opacity=".35" pointer-events="none"/>')
        # named every so often, so that the name is in view wherever the timeline is scrolled
        width = len(iv.label) * 5.6 + 10
        at = max(a + 3, placed)
        while at + width <= max(b, a + 3 + width):
            out.append(f'<text class="bandlabel" x="{at:.1f}" y="11">{_e(iv.label)}</text>')
            placed = at + width
            at += max(width, _BAND_LABEL_EVERY)
    return out


def _window_table(page: _Page, w: Witness) -> str:
    desc, max_rows = page.desc, page.max_bars
    lin_index = {id(o): i + 1 for i, o in enumerate(w.linearized)}
    rows = list(w.window)
    note = ""
    if len(rows) > max_rows:
        rows = _nearest(rows, w.failing_op, max_rows)
        note = (f'<div class="note">Showing {len(rows):,} of {len(w.window):,} window ops, '
                "those nearest the failing op.</div>")
    out = [f"<h3>Window ({len(w.window):,} ops, in call order)</h3>", note,
           '<div class="tablewrap"><table><tr><th class="num">op</th><th>process</th><th>op</th>'
           '<th>status</th><th class="num">call</th><th class="num">ret</th>'
           "<th>call time</th><th>ret time</th><th>role</th></tr>"]
    for o in rows:
        failing = o is w.failing_op
        role = ("cannot be linearized" if failing else
                f"linearized #{lin_index[id(o)]}" if id(o) in lin_index else "")
        label = desc(o)
        cls = ' class="failing"' if failing else ""
        out.append(f'<tr data-op="{o.id}" data-tip="{_e(_tip(page, o, label, role))}"{cls}>'
                   f'<td class="num">{o.id}</td><td class="mono">{_e(o.process)}</td>'
                   f'<td class="mono">{_e(label)}</td><td>{_e(o.status)}</td>'
                   f'<td class="num">{o.call}</td><td class="num">{_pos(o.ret)}</td>'
                   f'<td class="mono">{page.clock(o.call_time)}</td>'
                   f'<td class="mono">{page.clock(o.ret_time)}</td>'
                   f"<td>{_e(role)}</td></tr>")
    out.append("</table></div>")
    return "\n".join(out)


def _prefix_table(w: Witness, desc: Callable[[Operation], str]) -> str:
    n = len(w.linearized)
    start = max(0, n - MAX_PREFIX_ROWS)
    out = [f"<h3>Linearized prefix ({n:,} ops, in linearization order)</h3>"]
    if start:
        out.append(f'<div class="note">The first {start:,} ops are left out; '
                   f"the last {n - start} are shown.</div>")
    out.append('<div class="tablewrap"><table><tr><th class="num">#</th><th class="num">op</th>'
               '<th>process</th><th>op</th><th class="num">call</th><th class="num">ret</th>'
               "<th>state after</th></tr>")
    for i in range(start, n):
        o = w.linearized[i]
        state = w.states_after[i] if i < len(w.states_after) else "?"
        out.append(f'<tr data-op="{o.id}"><td class="num">{i + 1}</td><td class="num">{o.id}</td>'
                   f'<td class="mono">{_e(o.process)}</td><td class="mono">{_e(desc(o))}</td>'
                   f'<td class="num">{o.call}</td><td class="num">{_pos(o.ret)}</td>'
                   f'<td class="mono">{_e(state)}</td></tr>')
    f = w.failing_op
    states = ", ".join(w.states[:MAX_STATES]) + (" …" if len(w.states) > MAX_STATES else "")
    out.append(f'<tr class="failing" data-op="{f.id}"><td class="num">✗</td><td class="num">{f.id}</td>'
               f'<td class="mono">{_e(f.process)}</td><td class="mono">{_e(desc(f))}</td>'
               f'<td class="num">{f.call}</td><td class="num">{_pos(f.ret)}</td>'
               f'<td class="mono">cannot follow: state was one of {_e(states) or "none"}</td></tr>')
    out.append("</table></div>")
    return "\n".join(out)
