"""The pages of ``faultline serve``: the listing, a run, its files, its archive.

Every path a URL names, and every file of a run a page reads, passes
:func:`~harness.serve.paths.safe_path` before it is opened: no ``..``, nothing
absolute, and once resolved (symlinks followed) it lies inside the folder it
was asked of (the results folder, then the run folder).  Pages read only the
index and the one run they show.
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

from harness.serve.index import STATUSES, ResultsIndex, RunRecord
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
    app.router.add_get("/run/{name}/{stamp}/", run_page)
    app.router.add_get("/run/{name}/{stamp}/archive.tar.gz", run_archive)
    app.router.add_get("/run/{name}/{stamp}/file/{path:.*}", run_file)
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
                   total=len(runs), matched=len(shown), counts=counts, options=options,
                   chosen=chosen, page=page, pages=pages,
                   page_url=lambda n: "?" + urlencode({**chosen, "page": n}))


def _int(text: str | None, default: int) -> int:
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def _record(request: web.Request) -> RunRecord:
    """The run a URL names: 400 if its name or stamp tries to leave the
    results folder, 404 if it is not a run the index holds."""
    index = request.app[INDEX]
    name, stamp = request.match_info["name"], request.match_info["stamp"]
    try:
        safe_path(index.root, f"{name}/{stamp}")
    except PathEscape:
        raise web.HTTPBadRequest(text="that path leaves the results folder\n") from None
    rec = index.run(name, stamp)
    if rec is None:
        raise web.HTTPNotFound(text=f"no run {name}/{stamp} in {index.root}\n")
    return rec


@dataclass(frozen=True)
class FileEntry:
    """A file or folder of a run, as a link."""

    rel: str
    size: int | None  # None for a folder

    @property
    def name(self) -> str:
        return PurePosixPath(self.rel).name + ("/" if self.size is None else "")


def _entries(run_dir: Path, folder: Path) -> list[FileEntry]:
    """What ``folder`` holds, folders first; symlinks that leave the run are left out."""
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


async def run_file(request: web.Request) -> web.StreamResponse:
    """A file of the run (text/plain for logs and JSON, so a browser shows
    them), or a folder's listing."""
    rec = _record(request)
    rel = request.match_info["path"]
    try:
        target = safe_path(rec.path, rel)
    except PathEscape:
        raise web.HTTPBadRequest(text="that path leaves the run folder\n") from None
    if target.is_dir():
        return _render(request, "folder.html", run=rec, rel=rel.rstrip("/"),
                       files=_entries(rec.path, target))
    if not target.is_file():
        raise web.HTTPNotFound(text=f"no file {rel} in {rec.name}/{rec.stamp}\n")
    suffix = target.suffix.lower()
    ctype = ("text/plain; charset=utf-8" if suffix in TEXT_SUFFIXES
             else CONTENT_TYPES.get(suffix, "application/octet-stream"))
    headers = {"Content-Type": ctype, "X-Content-Type-Options": "nosniff"}
    if suffix in (".html", ".svg"):  # a page of the run runs in an origin of its own
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
