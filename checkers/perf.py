"""Latency and throughput: figures and PNG plots with nemesis intervals shaded.

    paths = plot_all(ops, history.nemesis_events(), out_dir)
    # out_dir/latency-raw.png, latency-quantiles.png, rate.png
    latency_summary(ops)  # {"add": {"count": .., "p50": .., "p95": .., "p99": .., "max": ..}}

Latency is ``ret_time - call_time`` of ok and fail ops, in ms. An ``info``
op has no completion time (its outcome is unknown), so it has no latency:
the raw plot shows it as a triangle at its invocation time in a strip above
the latency axes, and the rate plot counts it at its invocation.

Time on every x axis is seconds since ``t0`` (a run passes the moment its
test started; default: the first time of the ops and nemesis events). Fault
intervals come from :func:`checkers.stats.parse_nemesis` and are shaded, one
colour per fault, named in the legend and, where there is room, above the
span with what they hit (``partition-leader n3``); instant nemesis events
(e.g. ``transfer-leader``) are dotted vertical lines.  Anomalies the
checkers found (:class:`checkers.report.Anomaly`) are red marks on the raw
latency plot at their op, so the fault that produced each is in view.

matplotlib is used through its object API on the Agg canvas (no pyplot, no
display, safe in worker threads).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Sequence

import matplotlib

matplotlib.use("Agg")  # before anything imports pyplot; we never do

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from checkers.history import Event, Operation  # noqa: E402
from checkers.report import Anomaly  # noqa: E402
from checkers.stats import Mark, history_bounds, parse_nemesis  # noqa: E402

__all__ = ["ops_frame", "latency_summary", "plot_all", "plot_latency_raw",
           "plot_latency_quantiles", "plot_rate", "choose_window", "WIDTH", "DPI",
           "RAW_HEIGHT", "RATE_HEIGHT", "quantiles_height"]

DPI = 100
WIDTH = 12.0        # inches: 1200 px
RAW_HEIGHT = 6.5    # 650 px
RATE_HEIGHT = 6.0   # 600 px
QUANTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))
_Q_STYLE = {"p50": ("#1f77b4", "-"), "p95": ("#ff7f0e", "-"),
            "p99": ("#d62728", "-"), "max": ("#7f7f7f", ":")}
_STATUS_MARK = {"ok": "o", "fail": "x", "info": "^"}
_STATUS_LINE = {"ok": "-", "fail": "--", "info": ":"}
_F_COLOURS = ["#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
              "#17becf", "#bcbd22", "#d62728", "#7f7f7f"]
_FAULT_COLOURS = ["#fdb462", "#80b1d3", "#b3de69", "#fb8072", "#bebada", "#ffed6f",
                  "#8dd3c7", "#fccde5", "#d9d9d9", "#ccebc5"]
#: Width of one character of an interval's name, as a fraction of the axes.
_CHAR_FRACTION = 0.0062
#: Rows of fault names above a plot.
_LABEL_ROWS = 2
_NICE_WINDOWS = (0.05, 0.1, 0.2, 0.25, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600)
_ANOMALY_COLOUR = "#d00000"
_ANOMALY_MARKERS = ("*", "D", "P", "X", "s", "v")


def quantiles_height(n_fs: int) -> float:
    """Height (inches) of the quantiles figure for ``n_fs`` panels."""
    return 1.4 + 2.4 * max(1, n_fs)


# ------------------------------------------------------------------ frames

def ops_frame(ops: Sequence[Operation], t0: int | None = None) -> pd.DataFrame:
    """One row per op with a call time: f, status, process, node, start_s,
    end_s and latency_ms (NaN for info ops)."""
    rows = [(op.id, op.f, op.status, str(op.process), op.node or "?", op.call_time,
             op.ret_time if op.status != "info" else None)
            for op in ops if op.call_time is not None]
    df = pd.DataFrame(rows, columns=["id", "f", "status", "process", "node", "call", "ret"])
    if t0 is None:
        t0 = int(df["call"].min()) if len(df) else 0
    call = df["call"].astype("float64")
    ret = df["ret"].astype("float64")
    df["start_s"] = (call - t0) / 1e9
    df["end_s"] = (ret - t0) / 1e9
    df["latency_ms"] = (ret - call) / 1e6
    return df.drop(columns=["call", "ret"])


def latency_summary(ops: Sequence[Operation]) -> dict[str, dict[str, Any]]:
    """Per f: ops with a latency (ok and fail) and their p50/p95/p99/max in
    ms, plus the count of info ops (no latency)."""
    df = ops_frame(ops)
    out: dict[str, dict[str, Any]] = {}
    for f, g in df.groupby("f", sort=True):
        lat = g["latency_ms"].dropna()
        row: dict[str, Any] = {"count": int(len(lat)),
                               "info": int((g["status"] == "info").sum())}
        for name, q in QUANTILES:
            row[name] = float(lat.quantile(q)) if len(lat) else None
        out[str(f)] = row
    return out


def choose_window(duration_s: float, target_bins: int = 60) -> float:
    """A round window (s) giving about ``target_bins`` bins over the duration."""
    want = max(duration_s, 1e-3) / target_bins
    for w in _NICE_WINDOWS:
        if w >= want:
            return float(w)
    return float(_NICE_WINDOWS[-1])


# ------------------------------------------------------------------- plots

class _Context:
    """What every plot shares: the frame, time origin, faults and colours."""

    def __init__(self, ops: Sequence[Operation], nemesis_events: Iterable[Event],
                 t0: int | None, anomalies: Sequence[Anomaly] = ()) -> None:
        events = list(nemesis_events)
        self.anomalies = [a for a in anomalies if a.time is not None]
        first, last = history_bounds(ops, events)
        self.t0 = t0 if t0 is not None else (first or 0)
        self.df = ops_frame(ops, self.t0)
        self.end_s = (((last or self.t0) - self.t0) / 1e9) or 1.0
        self.intervals, self.marks = parse_nemesis(events, end=last)
        fs = sorted(self.df["f"].unique())
        self.f_colour = {f: _F_COLOURS[i % len(_F_COLOURS)] for i, f in enumerate(fs)}
        names = list(dict.fromkeys(iv.name for iv in self.intervals))
        self.fault_colour = {n: _FAULT_COLOURS[i % len(_FAULT_COLOURS)]
                             for i, n in enumerate(names)}

    def shade(self, ax: Axes, *, labels: bool) -> None:
        """Fault intervals as spans, each named above it with what it hit in
        the first of ``_LABEL_ROWS`` rows where the name collides with none
        (composed faults share a window), and instants as dotted lines."""
        placed_until = [-math.inf] * _LABEL_ROWS  # right edge of each row's last name
        span = self.end_s * 1.01
        for iv in self.intervals:
            a = (iv.start - self.t0) / 1e9
            b = (iv.end - self.t0) / 1e9 if iv.end is not None else self.end_s
            ax.axvspan(a, b, color=self.fault_colour[iv.name], alpha=0.35, lw=0, zorder=0)
            if not labels:
                continue
            centre = (a + b) / 2 / span
            half = (len(iv.label) * _CHAR_FRACTION + 0.01) / 2
            row = next((r for r, edge in enumerate(placed_until) if centre - half >= edge), None)
            if row is not None:
                ax.annotate(iv.label, (centre, 1.0), xycoords="axes fraction",
                            xytext=(0, 1 + 11 * row), textcoords="offset points",
                            ha="center", va="bottom", fontsize=8, color="#444444",
                            annotation_clip=False)
                placed_until[row] = centre + half
        for m in self.marks:
            ax.axvline((m.time - self.t0) / 1e9, color="#555555", ls=":", lw=1, zorder=1)

    def fault_handles(self) -> list[Any]:
        hs: list[Any] = [Patch(facecolor=c, alpha=0.35, label=n)
                         for n, c in self.fault_colour.items()]
        for label in dict.fromkeys(_mark_label(m) for m in self.marks):
            hs.append(Line2D([], [], color="#555555", ls=":", label=label))
        return hs

    def mark_anomalies(self, ax: Axes) -> list[Any]:
        """Each anomaly at its op's invocation: at the op's latency when it has
        one, on the top edge when it has none (an info op); legend handles."""
        kinds = list(dict.fromkeys(a.kind for a in self.anomalies))
        handles: list[Any] = []
        for i, kind in enumerate(kinds):
            mine = [a for a in self.anomalies if a.kind == kind]
            style: dict[str, Any] = dict(
                ls="none", marker=_ANOMALY_MARKERS[i % len(_ANOMALY_MARKERS)], ms=11,
                mfc=_ANOMALY_COLOUR, mec="#000000", mew=0.6, zorder=6)
            at_latency: tuple[list[float], list[float]] = ([], [])
            on_top: list[float] = []
            for a in mine:
                call, ret = a.op.call_time, a.op.ret_time
                if call is None:
                    continue
                if ret is not None and a.op.status != "info":
                    at_latency[0].append((call - self.t0) / 1e9)
                    at_latency[1].append(max((ret - call) / 1e6, 1e-3))
                else:
                    on_top.append((call - self.t0) / 1e9)
            if on_top:
                ax.plot(on_top, [0.97] * len(on_top), transform=ax.get_xaxis_transform(),
                        clip_on=False, **style)
            if at_latency[0]:
                ax.plot(*at_latency, **style)
            handles.append(Line2D([], [], label=f"{kind} ({len(mine)})", **style))
        return handles

    def xaxis(self, ax: Axes) -> None:
        ax.set_xlim(0, self.end_s * 1.01)
        ax.set_xlabel("seconds since the test started")


def _mark_label(m: Mark) -> str:
    failed = isinstance(m.value, dict) and "error" in m.value
    return f"{m.f} (failed)" if failed else m.f


def _heading(handles: list[Any], title: str) -> list[Any]:
    """A legend section title as an invisible entry."""
    return [Line2D([], [], ls="none", label=title)] + handles if handles else []


def _legend(fig: Figure, handles: list[Any]) -> None:
    if handles:
        leg = fig.legend(handles=handles, loc="outside right upper", fontsize=9,
                         frameon=False, handlelength=2.2)
        for text, h in zip(leg.get_texts(), handles):
            if isinstance(h, Line2D) and h.get_linestyle() in ("None", "none", "") \
                    and h.get_marker() in (None, "None", "none", ""):
                text.set_fontweight("bold")


def _plain(v: float, _pos: Any = None) -> str:
    return f"{v:g}"


def _log_ms_axis(ax: Axes) -> None:
    """Plain numbers (0.5, 1, 2, 10, 200) on a log axis, not 2x10^1; the
    2 and 5 in between are labelled too when the axis spans few decades."""
    ax.yaxis.set_major_formatter(FuncFormatter(_plain))
    lo, hi = ax.get_ylim()
    decades = math.log10(hi / lo) if lo > 0 else 99
    if decades < 2.5:
        subs = (2.0, 3.0, 5.0) if decades < 1.5 else (2.0, 5.0)
        ax.yaxis.set_minor_locator(LogLocator(base=10, subs=subs))
        ax.yaxis.set_minor_formatter(FuncFormatter(_plain))
    else:
        ax.yaxis.set_minor_formatter(NullFormatter())


def _new_figure(height: float) -> Figure:
    return Figure(figsize=(WIDTH, height), dpi=DPI, layout="constrained")


def _empty(ax: Axes, what: str) -> None:
    ax.text(0.5, 0.5, what, transform=ax.transAxes, ha="center", va="center",
            fontsize=12, color="#666666")


def plot_latency_raw(ctx: _Context, path: Path, prefix: str = "") -> Path:
    fig = _new_figure(RAW_HEIGHT)
    strip, ax = fig.subplots(2, 1, sharex=True, height_ratios=[1, 6])
    df = ctx.df
    fs = list(ctx.f_colour)
    done = df[df["status"] != "info"].dropna(subset=["latency_ms"])
    # Draw the larger groups first so that rare points stay visible on top.
    groups = sorted(done.groupby(["f", "status"]), key=lambda kv: -len(kv[1]))
    # Dots shrink as they get denser, so that a crowd stays a texture.
    dot = 4.0 if len(done) < 2_000 else 2.5 if len(done) < 20_000 else 1.5
    for (f, status), g in groups:
        ok = status == "ok"
        ax.plot(g["start_s"], g["latency_ms"].clip(lower=1e-3), ls="none",
                marker=_STATUS_MARK.get(status, "o"), ms=dot if ok else dot + 2,
                mew=0 if ok else 1, color=ctx.f_colour[f], alpha=0.6 if ok else 0.9,
                zorder=2 if ok else 3, rasterized=True)
    info = df[df["status"] == "info"]
    for f, g in info.groupby("f"):
        ax_y = [fs.index(f)] * len(g)
        strip.plot(g["start_s"], ax_y, ls="none", marker="^", ms=6,
                   color=ctx.f_colour[f], zorder=2)
    strip.set_yticks(range(len(fs)), fs if fs else [], fontsize=7)
    strip.set_ylim(-0.7, max(len(fs), 1) - 0.3)
    strip.set_ylabel("info\n(no reply)", rotation=0, ha="right", va="center", fontsize=9)
    if info.empty:
        _empty(strip, "none")
    ctx.shade(strip, labels=True)
    ctx.shade(ax, labels=False)
    ax.set_yscale("log")
    anomalies = ctx.mark_anomalies(ax)
    _log_ms_axis(ax)
    ax.set_ylabel("latency (ms, log scale)")
    ax.grid(True, which="major", axis="y", alpha=0.3)
    ctx.xaxis(ax)
    strip.tick_params(labelbottom=False)
    if done.empty:
        _empty(ax, "no completed operations")
    fig.suptitle(prefix + "Latency of each operation, at its invocation time", fontsize=13)
    handles = _heading([Line2D([], [], ls="none", marker="s", ms=8, color=c, label=f)
                        for f, c in ctx.f_colour.items()], "operation")
    handles += _heading([Line2D([], [], ls="none", marker=_STATUS_MARK[s],
                                ms=5 if s == "ok" else 7, color="#333333", label=s)
                         for s in ("ok", "fail", "info")],
                        "outcome")
    handles += _heading(ctx.fault_handles(), "nemesis")
    handles += _heading(anomalies, "anomaly")
    _legend(fig, handles)
    fig.savefig(path, dpi=DPI)
    return path


def plot_latency_quantiles(ctx: _Context, path: Path, prefix: str = "",
                           window_s: float | None = None) -> Path:
    fs = list(ctx.f_colour) or ["(none)"]
    fig = _new_figure(quantiles_height(len(fs)))
    axes = fig.subplots(len(fs), 1, sharex=True, squeeze=False)[:, 0]
    w = window_s or choose_window(ctx.end_s, 40)
    done = ctx.df.dropna(subset=["latency_ms"]).copy()
    done["bin"] = np.floor(done["start_s"] / w)
    # A last window cut to under half its width by the end of the history
    # holds a handful of ops: its quantiles would be noise.
    n_bins = max(1, int(math.floor(ctx.end_s / w + 0.5)))
    done = done[done["bin"] < n_bins]
    for ax, f in zip(axes, fs):
        g = done[done["f"] == f]
        if g.empty:
            _empty(ax, "no completed operations")
        else:
            grouped = g.groupby("bin")["latency_ms"]
            x = (np.asarray(sorted(g["bin"].unique())) + 0.5) * w
            for name, q in QUANTILES:
                y = grouped.max() if name == "max" else grouped.quantile(q)
                colour, ls = _Q_STYLE[name]
                ax.plot(x, y.sort_index().clip(lower=1e-3).to_numpy(), color=colour, ls=ls,
                        marker="o", ms=2.5, lw=1.4)
            ax.set_yscale("log")
            _log_ms_axis(ax)
        ctx.shade(ax, labels=ax is axes[0])
        ax.set_ylabel("latency (ms)")
        ax.set_title(f, fontsize=10, loc="left", color=ctx.f_colour.get(f, "black"),
                     fontweight="bold")
        ax.grid(True, which="major", axis="y", alpha=0.3)
    ctx.xaxis(axes[-1])
    fig.suptitle(prefix + f"Latency quantiles per {_fmt_window(w)} window "
                 "(ok and fail ops, by invocation time)", fontsize=13)
    handles = _heading([Line2D([], [], color=_Q_STYLE[n][0], ls=_Q_STYLE[n][1], lw=1.6,
                               label=n) for n, _ in QUANTILES], "quantile")
    handles += _heading(ctx.fault_handles(), "nemesis")
    _legend(fig, handles)
    fig.savefig(path, dpi=DPI)
    return path


def plot_rate(ctx: _Context, path: Path, prefix: str = "",
              window_s: float | None = None) -> Path:
    fig = _new_figure(RATE_HEIGHT)
    ax = fig.subplots()
    df = ctx.df.copy()
    w = window_s or choose_window(ctx.end_s, 80)
    # Completions at their completion time; info ops at their invocation.
    df["t"] = df["end_s"].where(df["status"] != "info", df["start_s"])
    df = df.dropna(subset=["t"])
    # The last window is cut by the end of the history: its rate is over the
    # part it covers, and it is dropped when that is under half a window.
    n_bins = max(1, int(math.floor(ctx.end_s / w + 0.5)))
    lo = np.arange(n_bins) * w
    hi = np.minimum(lo + w, max(ctx.end_s, w / 2))
    centres = (lo + hi) / 2
    statuses_seen: list[str] = []
    for (f, status), g in sorted(df.groupby(["f", "status"]), key=lambda kv: kv[0]):
        b = np.floor(g["t"] / w).astype(int)
        counts = np.bincount(b[b < n_bins].clip(lower=0), minlength=n_bins)
        ax.plot(centres, counts / (hi - lo), color=ctx.f_colour[f], ls=_STATUS_LINE.get(status, "-"),
                lw=1.5 if status == "ok" else 1.2, drawstyle="default")
        if status not in statuses_seen:
            statuses_seen.append(status)
    if df.empty:
        _empty(ax, "no operations")
    ctx.shade(ax, labels=True)
    ax.set_ylabel("completions per second")
    ax.set_ylim(bottom=0)
    ax.grid(True, axis="y", alpha=0.3)
    ctx.xaxis(ax)
    fig.suptitle(prefix + f"Throughput per {_fmt_window(w)} window "
                 "(ok and fail at completion, info at invocation)", fontsize=13)
    handles = _heading([Line2D([], [], color=c, lw=2, label=f)
                        for f, c in ctx.f_colour.items()], "operation")
    handles += _heading([Line2D([], [], color="#333333", ls=_STATUS_LINE[s], lw=1.5, label=s)
                         for s in ("ok", "fail", "info")], "outcome")
    handles += _heading(ctx.fault_handles(), "nemesis")
    _legend(fig, handles)
    fig.savefig(path, dpi=DPI)
    return path


def _fmt_window(w: float) -> str:
    return f"{w:g} s" if w >= 1 else f"{w * 1000:g} ms"


def plot_all(ops: Sequence[Operation], nemesis_events: Iterable[Event],
             out_dir: str | Path, *, t0: int | None = None, title: str = "",
             window_s: float | None = None, anomalies: Sequence[Anomaly] = ()) -> list[Path]:
    """Write latency-raw.png, latency-quantiles.png and rate.png into
    ``out_dir`` (created if needed); return their paths.

    ``title`` prefixes each plot's title (e.g. the test name); ``window_s``
    overrides the automatic window of the quantile and rate plots;
    ``anomalies`` are marked on the raw latency plot.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ctx = _Context(ops, nemesis_events, t0, anomalies)
    pre = f"{title}\n" if title else ""  # its own line: a long name would run under the legend
    return [plot_latency_raw(ctx, out / "latency-raw.png", pre),
            plot_latency_quantiles(ctx, out / "latency-quantiles.png", pre, window_s),
            plot_rate(ctx, out / "rate.png", pre, window_s)]
