"""The pages of ``faultline serve``: the listing, a run, its files, its
archive, a campaign and its files; a campaign's runs have the same pages as
any run, under the campaign's URL.

Every path a URL names, and every file of a run a page reads, passes
:func:`~harness.serve.paths.safe_path` before it is opened: no ``..``, nothing
absolute, and once resolved (symlinks followed) it lies inside the folder it
was asked of (the results folder, then the campaign folder, then the run
folder).  Pages read only the index and the one run or campaign they show.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import re
import signal
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable
from urllib.parse import quote, urlencode

import jinja2
from aiohttp import web

from harness.campaign.record import CampaignRun
from harness.campaign.report import TABLE_HEADER, summarise, table_cells
from harness.campaign.spec import RunKey
from harness.serve.index import (CAMPAIGNS, INCOMPLETE, STATUSES, VERDICTS, CampaignRecord,
                                 ResultsIndex, RunRecord, is_run, load_run, read_campaign)
from harness.serve.paths import PathEscape, safe_path

INDEX: web.AppKey[ResultsIndex] = web.AppKey("index", ResultsIndex)
TEMPLATES: web.AppKey[jinja2.Environment] = web.AppKey("templates", jinja2.Environment)

#: Runs on one page of the listing.
PAGE_SIZE = 200
#: Anomalies and schedule events a run page lists at most (the files have them all).
LISTED_ANOMALIES = 50
LISTED_EVENTS = 1000
#: The most of summary.txt a run page shows.
SUMMARY_BYTES = 1 << 20
CHUNK = 1 << 18
TEXT_SUFFIXES = frozenset({".log", ".txt", ".json", ".jsonl", ".toml", ".csv", ".edn"})
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".png": "image/png",
                 ".svg": "image/svg+xml", ".gz": "application/gzip"}
#: A campaign's figures (harness/campaign/report.py), a comparison's
#: (harness/compare.py) first.
CAMPAIGN_FIGURES = ("compare.png", "expectations.png", "first_anomaly.png")
#: The files of a campaign folder its page links to, where present.
CAMPAIGN_LINKS = ("report.html", "summary.csv", "junit.xml", "campaign.toml", "runs.jsonl")
#: The listing's filters: query parameter -> what it matches in a record.
FILTERS: dict[str, Callable[[RunRecord], tuple[str, ...]]] = {
    "workload": lambda r: (r.workload,) if r.workload else (),
    "nemesis": lambda r: r.nemesis or ("none",),
    "bug": lambda r: r.bugs or ("none",),
    "read_path": lambda r: (r.read_path,) if r.read_path else (),
    "verdict": lambda r: (r.status,),
}


def make_app(results_dir: Path, *, min_interval: float = 2.0) -> web.Application:
    """The results browser over ``results_dir``, scanned once here."""
    app = web.Application(middlewares=[web.normalize_path_middleware()])
    app[INDEX] = ResultsIndex(results_dir, min_interval=min_interval)
    env = jinja2.Environment(loader=jinja2.PackageLoader("harness", "templates"),
                             autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters.update(secs=_secs, size=_size, urlpath=lambda s: quote(s, safe="/"))
    app[TEMPLATES] = env
    app.router.add_get("/", index_page)
    campaign = "/campaign/{campaign}/{campaign_stamp}/"
    app.router.add_get(campaign, campaign_page)
    app.router.add_get(campaign + "file/{path:.*}", folder_file)
    for run in ("/run/{name}/{stamp}/", campaign + "run/{cell}/{label}/{stamp}/"):
        app.router.add_get(run, run_page)
        app.router.add_get(run + "archive.tar.gz", run_archive)
        app.router.add_get(run + "file/{path:.*}", folder_file)
    return app


def _render(request: web.Request, template: str, **context: Any) -> web.Response:
    html = request.app[TEMPLATES].get_template(template).render(**context)
    return web.Response(text=html, content_type="text/html")


async def index_page(request: web.Request) -> web.Response:
    runs = request.app[INDEX].runs()
    chosen = {k: request.query[k] for k in FILTERS if request.query.get(k)}
    shown = [r for r in runs if all(v in FILTERS[k](r) for k, v in chosen.items())]
    options = {k: sorted({v for r in runs for v in get(r)}) for k, get in FILTERS.items()}
    options["verdict"] = [s for s in STATUSES if s in options["verdict"]]
    pages = max(1, -(-len(shown) // PAGE_SIZE))
    page = min(max(_int(request.query.get("page"), 1), 1), pages)
    counts = {s: sum(r.status == s for r in shown) for s in STATUSES}
    return _render(request, "index.html", runs=shown[(page - 1) * PAGE_SIZE:page * PAGE_SIZE],
                   campaigns=request.app[INDEX].campaigns(), total=len(runs),
                   matched=len(shown), counts=counts, options=options,
                   chosen=chosen, page=page, pages=pages,
                   page_url=lambda n: "?" + urlencode({**chosen, "page": n}))


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def _inside(base: Path, rel: str) -> Path:
    """``base/rel`` as :func:`safe_path` resolves it; 400 if it leaves ``base``."""
    try:
        return safe_path(base, rel)
    except PathEscape:
        raise web.HTTPBadRequest(text="that path leaves the folder it names\n") from None


def _campaign(request: web.Request) -> CampaignRecord:
    """The campaign a URL names: 400 if its parts try to leave the results
    folder, 404 if it is not a campaign the index holds."""
    index = request.app[INDEX]
    name, stamp = request.match_info["campaign"], request.match_info["campaign_stamp"]
    _inside(index.root, f"{CAMPAIGNS}/{name}/{stamp}")
    rec = index.campaign(name, stamp)
    if rec is None:
        raise web.HTTPNotFound(text=f"no campaign {name}/{stamp} in {index.root}\n")
    return rec


def _record(request: web.Request) -> RunRecord:
    """The run a URL names, of the results folder (held by the index) or of
    a campaign (read now: the index keeps no campaign's runs): 400 if its
    parts try to leave the folder, 404 if it is no run."""
    m = request.match_info
    if "campaign" in m:
        campaign = _campaign(request)
        name = f"{m['cell']}/{m['label']}"
        path = _inside(campaign.path, f"runs/{name}/{m['stamp']}")
        if not is_run(path):
            raise web.HTTPNotFound(text=f"no run {name}/{m['stamp']} in {campaign.path}\n")
        return load_run(name, m["stamp"], path, campaign)
    index = request.app[INDEX]
    _inside(index.root, f"{m['name']}/{m['stamp']}")
    rec = index.run(m["name"], m["stamp"])
    if rec is None:
        raise web.HTTPNotFound(text=f"no run {m['name']}/{m['stamp']} in {index.root}\n")
    return rec


def _owner(request: web.Request) -> RunRecord | CampaignRecord:
    """The run or the campaign whose folder a URL names (a run's URL has a stamp)."""
    return _record(request) if "stamp" in request.match_info else _campaign(request)


@dataclass(frozen=True)
class FileEntry:
    """A file or folder of a run or campaign folder, as a link."""

    rel: str
    size: int | None  # None for a folder

    @property
    def name(self) -> str:
        return PurePosixPath(self.rel).name + ("/" if self.size is None else "")


def _entries(run_dir: Path, folder: Path) -> list[FileEntry]:
    """What ``folder`` holds, folders first; symlinks that leave ``run_dir`` are left out."""
    run_dir = run_dir.resolve()
    out = []
    try:
        found = list(folder.iterdir())
    except OSError:
        return []
    for p in found:
        rel = p.relative_to(run_dir).as_posix()
        try:
            real = safe_path(run_dir, rel)
        except PathEscape:
            continue
        if real.is_dir():
            out.append(FileEntry(rel, None))
        elif real.is_file():
            out.append(FileEntry(rel, real.stat().st_size))
    return sorted(out, key=lambda e: (e.size is not None, e.rel))


@dataclass(frozen=True)
class ScheduleRow:
    at_s: float | None
    event: str
    what: str
    value: str


def _schedule(text: str) -> tuple[list[ScheduleRow], int]:
    """schedule.jsonl's first events, each described as the run printed it, and
    how many there are."""
    from nemesis.nemesis import describe

    rows: list[ScheduleRow] = []
    count = 0
    for line in text.splitlines():
        try:
            ev = json.loads(line)
            f, value = str(ev["f"]), ev.get("value") or {}
        except (ValueError, KeyError, TypeError):
            continue
        count += 1
        if len(rows) >= LISTED_EVENTS:
            continue
        fault = f.partition("-")[2]
        try:
            what = describe(fault, value) if fault else "every fault removed"
        except Exception:  # noqa: BLE001 - an event of another version: its raw value is shown
            what = ""
        at = ev.get("at_s")
        rows.append(ScheduleRow(at if isinstance(at, (int, float)) else None, f, what,
                                json.dumps(value, separators=(",", ":"))))
    return rows, count


def _witnesses(results: dict[str, Any]) -> list[str]:
    """The checkers' witness explanations: register's ``linearizable.witnesses``,
    set's ``set.witness.explanation``, whichever a checker's part holds."""
    out: list[str] = []
    for part in results.values():
        if not isinstance(part, dict):
            continue
        out += [w for w in part.get("witnesses") or () if isinstance(w, str)]
        w = part.get("witness")
        if isinstance(w, dict) and isinstance(w.get("explanation"), str):
            out.append(w["explanation"])
    return out


def _read_text(run: Path, name: str, limit: int | None = SUMMARY_BYTES) -> str | None:
    """A file of the run as text; None where it is missing or lies outside the run."""
    try:
        with safe_path(run, name).open("rb") as fh:
            return fh.read(limit).decode("utf-8", errors="replace")
    except (OSError, ValueError):
        return None


def _json(run: Path, name: str) -> dict[str, Any]:
    try:
        data = json.loads(_read_text(run, name, None) or "{}")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


async def run_page(request: web.Request) -> web.Response:
    rec = _record(request)
    d = rec.path
    results = _json(d, "results.json")
    files = _entries(d, d)
    listed = [p for p in results.get("plots") or () if isinstance(p, str)]
    plots = sorted((f.rel for f in files if f.rel.endswith(".png")),  # results.json's order
                   key=lambda p: (listed.index(p) if p in listed else len(listed), p))
    anomalies = [a for a in results.get("anomalies") or () if isinstance(a, dict)]
    schedule, events = _schedule(_read_text(d, "schedule.jsonl", None) or "")
    return _render(
        request, "run.html", run=rec, summary=_read_text(d, "summary.txt"),
        setup_failed=_read_text(d, "setup-failed.txt"), witnesses=_witnesses(results),
        anomalies=anomalies[:LISTED_ANOMALIES],
        anomaly_count=results.get("anomaly_count", len(anomalies)), plots=plots,
        schedule=schedule, events=events, files=files,
        logs=[f for f in _entries(d, d / "logs") if f.size is not None],
        has={f.rel for f in files})


@dataclass(frozen=True)
class CampaignRunRow:
    """A run of the campaign page's table, with its page's URL (None: it left no folder)."""

    run: CampaignRun
    url: str | None

    @property
    def label(self) -> str:
        return RunKey(self.run.cell, self.run.seed, self.run.repeat).label

    @property
    def status(self) -> str:
        """Its verdict as a badge's colour: a crashed run is an incomplete one."""
        return self.run.verdict if self.run.verdict in VERDICTS else INCOMPLETE


async def campaign_page(request: web.Request) -> web.Response:
    """The campaign as far as it has run: its cell table is summarised from
    runs.jsonl now, so that it shows a campaign still running."""
    rec = _campaign(request)
    files = _entries(rec.path, rec.path)
    has = {f.rel for f in files}
    try:
        campaign, runs = read_campaign(rec.path)
    except (OSError, ValueError):
        cells, rows = [], []
    else:
        cells = summarise(campaign, runs)
        order = {c.name: i for i, c in enumerate(campaign.cells)}
        # read_campaign keeps only the runs of the campaign's cells: each has an order
        runs.sort(key=lambda r: (order[r.cell], r.seed, r.repeat))
        rows = [CampaignRunRow(r, rec.run_url(r.folder)) for r in runs]
    return _render(request, "campaign.html", campaign=rec, header=TABLE_HEADER, cells=cells,
                   cell_text=table_cells, runs=rows, files=files,
                   comparison=_read_text(rec.path, "compare.txt"),
                   figures=[f for f in CAMPAIGN_FIGURES if f in has],
                   links=[f for f in CAMPAIGN_LINKS if f in has])


async def folder_file(request: web.Request) -> web.StreamResponse:
    """A file of a run or of a campaign folder (text/plain for logs and
    JSON, so a browser shows them), or a folder's listing."""
    owner = _owner(request)
    rel = request.match_info["path"]
    target = _inside(owner.path, rel)
    if target.is_dir():
        return _render(request, "folder.html", owner=owner, rel=rel.rstrip("/"),
                       files=_entries(owner.path, target))
    if not target.is_file():
        raise web.HTTPNotFound(text=f"no file {rel} in {owner.name}/{owner.stamp}\n")
    suffix = target.suffix.lower()
    ctype = ("text/plain; charset=utf-8" if suffix in TEXT_SUFFIXES
             else CONTENT_TYPES.get(suffix, "application/octet-stream"))
    headers = {"Content-Type": ctype, "X-Content-Type-Options": "nosniff"}
    if suffix in (".html", ".svg"):  # a page of the folder runs in an origin of its own
        headers["Content-Security-Policy"] = "sandbox allow-scripts"
    try:
        fh = target.open("rb")
    except OSError as e:
        raise web.HTTPNotFound(text=f"cannot read {rel}: {e.strerror}\n") from None
    loop = asyncio.get_running_loop()
    with fh:  # sent as it is read (chunked: a running test's history still grows)
        resp = web.StreamResponse(headers=headers)
        await resp.prepare(request)
        while chunk := await loop.run_in_executor(None, fh.read, CHUNK):
            await resp.write(chunk)
        await resp.write_eof()
    return resp


async def run_archive(request: web.Request) -> web.StreamResponse:
    """The whole run folder as one .tar.gz, made while it is sent."""
    rec = _record(request)
    top = re.sub(r"[^\w.-]", "_", f"{rec.name}-{rec.stamp}")
    resp = web.StreamResponse(headers={
        "Content-Type": "application/gzip",
        "Content-Disposition": f'attachment; filename="{top}.tar.gz"'})
    await resp.prepare(request)
    loop = asyncio.get_running_loop()

    class _Sink:
        """tarfile's output, handed to the response from tarfile's thread."""

        def write(self, data: bytes) -> int:
            asyncio.run_coroutine_threadsafe(resp.write(bytes(data)), loop).result()
            return len(data)

    def pack() -> None:
        with tarfile.open(fileobj=_Sink(), mode="w|gz") as tar:  # type: ignore[call-overload]
            tar.add(rec.path, arcname=top)  # symlinks are stored as links, not followed

    try:
        await loop.run_in_executor(None, pack)
    except ConnectionError:  # the browser went away
        return resp
    await resp.write_eof()
    return resp


def _secs(v: Any, digits: int = 1) -> str:
    return f"{v:.{digits}f} s" if isinstance(v, (int, float)) else "-"


def _size(n: int | None) -> str:
    if n is None:
        return ""
    if n < 1024:
        return f"{n} B"
    size = n / 1024
    for unit in ("KiB", "MiB"):
        if size < 1024:
            return f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def is_loopback(host: str) -> bool:
    """Whether a --host keeps the server to this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def _run(app: web.Application, host: str, port: int,
               ready: Callable[[str], None]) -> None:
    """Serve until Ctrl-C (which asyncio.run turns into KeyboardInterrupt) or SIGTERM."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    stop = asyncio.Event()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        ready(f"http://{shown}:{bound_port}/")
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def serve(results_dir: Path, host: str, port: int, ready: Callable[[str], None]) -> None:
    """Scan ``results_dir``, listen on ``host:port``, call ``ready`` with the URL,
    serve until stopped.  Raises OSError if it cannot listen."""
    asyncio.run(_run(make_app(results_dir), host, port, ready))
