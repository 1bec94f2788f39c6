"""The static section (issue 28, item 4): serving files, clusterrun --static against granian and uWSGI.

    python bench/run.py --section static           # about 65 s on 2 cores
    python bench/run.py --section static --quick   # about 40 s

The same three files, written afresh into a temporary folder for each run (so that every server reads them from
the page cache): ``style.css`` (1 KiB), ``app.js`` (64 KiB) and ``photo.jpg`` (1 MiB), mounted at ``/assets`` by

- clusterrun ``--static /assets=DIR``, on the inline WSGI engine (raw WSGI hello, the default engine: sendfile)
  and on the asyncio stack (raw ASGI hello: uvloop when installed, blocks of 256 KiB; and with ``--loop
  asyncio``, whose ``loop.sendfile`` sends a file past 256 KiB zero-copy);
- granian ``--static-path-route /assets --static-path-mount DIR`` (its files are served in Rust, before the app);
- uWSGI ``--static-map /assets=DIR`` on ``--http11-socket`` (each worker process serves one keep-alive
  connection at a time: see the main bench's note on uWSGI keep-alive), with ``--tcp-nodelay``: without it a
  small file waits for the client's delayed ACK (46 req/s for the 1 KiB file).

Two workers each, wrk with 64 keep-alive connections, one server after another. Each row is checked before it is
loaded: the answer is 200 with the file's exact bytes (the 304 row: a 304). The 304 row revalidates
``style.css`` the way the server allows: ``If-None-Match`` with its ETag, else ``If-Modified-Since`` with its
Last-Modified; a server that sends neither gets no 304 row (it would only answer the whole file again).
Figures: req/s, and the server's CPU per request (user + system of its whole process tree over the measured run,
divided by the requests wrk completed), which is what a file costs the server, whoever is the bottleneck.
"""

from __future__ import annotations

import http.client
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import procs
from loadgen import LoadResult, LoadSpec
from sections import (
    DAGGER_NOTE,
    Context,
    Measured,
    Output,
    choose_entries,
    command_line,
    dagger,
    default_policy,
    started_bench_app,
    steady,
)
from servers import APPS, App, Server, Target, _clusterrun, _granian, _uwsgi

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
WORKERS = 2
CONNECTIONS = 64
PREFIX = "/assets"


@dataclass(frozen=True)
class File:
    key: str
    name: str
    size: int
    title: str


FILES = (File("1k", "style.css", 1024, "1 KiB style.css"), File("64k", "app.js", 64 * 1024, "64 KiB app.js"),
         File("1m", "photo.jpg", 1024 * 1024, "1 MiB photo.jpg"))
REVALIDATE = FILES[0]  # the 304 row's file
ROWS = (*(f.key for f in FILES), "304")
ROW_TITLES = {**{f.key: f.title for f in FILES}, "304": f"304 for {REVALIDATE.name}"}

WSGI_APP = next(a for a in APPS if a.key == "wsgi")
ASGI_APP = next(a for a in APPS if a.key == "asgi")


@dataclass(frozen=True)
class StaticServer:
    server: Server
    app: App
    note: str = ""  # said under the table


def catalogue(ctx: Context, folder: Path) -> list[StaticServer]:
    mount = f"{PREFIX}={folder}"
    policy = default_policy(ctx)

    def clusterrun(t: Target) -> list[str]:
        return [*_clusterrun(policy)(t), "--static", mount]

    def clusterrun_asyncio(t: Target) -> list[str]:
        return [*clusterrun(t), "--loop", "asyncio"]

    def granian(t: Target) -> list[str]:
        # --static-path-expires is left at its default (Cache-Control: max-age=86400): a user's command.
        return [*_granian(t)[:-1], "--static-path-route", PREFIX, "--static-path-mount", str(folder), t.app.target]

    def uwsgi(t: Target) -> list[str]:
        # --tcp-nodelay: uWSGI writes a file's head and its body apart, and without it Nagle's algorithm holds
        # the body of a small file until the client's delayed ACK: 46 req/s for style.css (2026-12-07, wrk -c64).
        return [*_uwsgi("--http11-socket")(t), "--tcp-nodelay", "--static-map", mount]

    both = frozenset({"asgi", "wsgi"})
    return [
        StaticServer(Server("clusterrun-inline", "clusterrun", f"clusterrun {policy}, inline WSGI engine", both,
                            ("clusterrun",), clusterrun), WSGI_APP),
        StaticServer(Server("clusterrun-asgi", "clusterrun", f"clusterrun {policy}, asyncio stack (ASGI)", both,
                            ("clusterrun",), clusterrun), ASGI_APP),
        # uvloop has no loop.sendfile: on plain asyncio a file past 256 KiB goes out zero-copy (docs/static-files.md).
        StaticServer(Server("clusterrun-asgi-asyncio", "clusterrun", f"clusterrun {policy}, asyncio stack, --loop"
                            " asyncio", both, ("clusterrun",), clusterrun_asyncio), ASGI_APP),
        StaticServer(Server("granian", "granian", "granian", both, ("granian",), granian), WSGI_APP),
        StaticServer(Server("uwsgi", "uwsgi", "uWSGI --http11-socket", both, ("pyuwsgi",), uwsgi), WSGI_APP,
                     "uWSGI: each worker serves one keep-alive connection at a time, so 2 of wrk's 64 connections"
                     " are served during a run and its req/s is that of 2 connections; its CPU per request holds"),
    ]


@dataclass
class Row:
    measured: Measured[LoadResult] | None = None
    error: str | None = None
    header: str = ""  # the 304 row: the conditional header sent


@dataclass
class Trial:
    startup_s: float | None = None
    rows: dict[str, Row] = field(default_factory=dict)
    error: str | None = None


def run(ctx: Context) -> Output:
    if ctx.client.name != "wrk":
        raise SystemExit("--section static needs wrk: the Python client reads answers of 64 KiB at most")
    duration = ctx.duration or (1.0 if ctx.quick else 2.0)
    workers = ctx.workers or WORKERS
    with tempfile.TemporaryDirectory(prefix="clusterrun-bench-static-") as tmp:
        folder = Path(tmp)
        contents = write_files(folder)
        chosen = choose(ctx, catalogue(ctx, folder))
        trials: dict[str, Trial] = {}
        for entry in chosen:
            trials[entry.server.key] = trial(ctx, entry, workers, duration, contents)
        lines = {e.server.key: command_line(ctx.python, e.app, e.server, workers).replace(str(folder), "DIR")
                 for e in chosen}
    return report(ctx, chosen, trials, duration, workers, lines)


def write_files(folder: Path) -> dict[str, bytes]:
    """The files, of incompressible bytes (no server here compresses on the fly; none gets a head start)."""
    contents = {}
    for f in FILES:
        data = os.urandom(f.size)
        (folder / f.name).write_bytes(data)
        contents[f.key] = data
    return contents


def choose(ctx: Context, entries: Sequence[StaticServer]) -> list[StaticServer]:
    if ctx.apps:
        raise SystemExit("--section static serves its own files with the raw hello apps; leave --apps out")
    return choose_entries(ctx, entries)


def trial(ctx: Context, entry: StaticServer, workers: int, duration: float, contents: dict[str, bytes]) -> Trial:
    out = Trial()
    server = entry.server
    try:
        with started_bench_app(ctx, entry.app, server, workers, f"static-{server.key}") as live:
            out.startup_s = live.startup_s
            base = f"http://127.0.0.1:{live.port}{PREFIX}/"
            # Warm-up: every worker has served files (and imported what serving them needs).
            ctx.client.run(LoadSpec(base + FILES[0].name, 1.0, CONNECTIONS, close=False))
            for row in ROWS:
                out.rows[row] = measure_row(ctx, live.port, live.pid, row, duration, contents)
                print(progress(server, row, out.rows[row]), file=sys.stderr, flush=True)
    except Exception as exc:  # one server failing must not cost the others their results
        out.error = f"{type(exc).__name__}: {exc}"
        print(f"static: {server.title}: FAILED {out.error.splitlines()[0]}", file=sys.stderr, flush=True)
    return out


def measure_row(ctx: Context, port: int, pid: int, row: str, duration: float, contents: dict[str, bytes]) -> Row:
    file = REVALIDATE if row == "304" else next(f for f in FILES if f.key == row)
    path = f"{PREFIX}/{file.name}"
    result = Row()
    try:
        status, headers, body = fetch(port, path)
        if status != 200 or body != contents[file.key]:
            raise RuntimeError(f"GET {path}: {status}, {len(body)} bytes, not the file's {file.size}")
        if row == "304":
            result.header = conditional(headers)
            if not result.header:
                result.error = "sends neither ETag nor Last-Modified: no 304 to ask for"
                return result
            status, _, _ = fetch(port, path, (result.header,))
            if status != 304:
                raise RuntimeError(f"GET {path} with {result.header!r}: {status}, not 304")
        spec = LoadSpec(f"http://127.0.0.1:{port}{path}", duration, CONNECTIONS, close=False,
                        headers=(result.header,) if result.header else ())
        procs.wait_idle(pid)
        result.measured = steady(ctx.patience, pid, duration, lambda: ctx.client.run(spec))
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    return result


def conditional(headers: dict[str, str]) -> str:
    if "etag" in headers:
        return f"If-None-Match: {headers['etag']}"
    if "last-modified" in headers:
        return f"If-Modified-Since: {headers['last-modified']}"
    return ""


def fetch(port: int, path: str, extra: Sequence[str] = ()) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers=dict(line.split(": ", 1) for line in extra))
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


def per_request_us(m: Measured[LoadResult]) -> float:
    return m.cpu.server_s / max(m.result.requests, 1) * 1e6


def progress(server: Server, row: str, got: Row) -> str:
    head = f"static: {server.title} / {ROW_TITLES[row]}:"
    if got.measured is None:
        return f"{head} {got.error}"
    m = got.measured
    return (f"{head} {m.result.rps:,.0f} req/s, {per_request_us(m):.1f} µs/req, {m.result.errors} errors,"
            f" elsewhere {m.cpu.elsewhere_cores:.2f} cores")


def report(ctx: Context, chosen: Sequence[StaticServer], trials: dict[str, Trial], duration: float, workers: int,
           lines: dict[str, str]) -> Output:
    settings = (f"{workers} workers, wrk with {CONNECTIONS} keep-alive connections, {duration:g} s per row after"
                " 1 s of warm-up per server")
    body = ["", "## Static files: req/s and server CPU per request", "",
            "| file | server | req/s | server µs/req (user + sys) | µs/req vs clusterrun inline | errors |",
            "| --- | --- | ---: | ---: | ---: | ---: |"]
    targets: list[str] = []
    disturbed = False
    base_key = "clusterrun-inline"
    for row in ROWS:
        base = trials.get(base_key, Trial()).rows.get(row, Row()).measured
        for entry in chosen:
            got = trials[entry.server.key]
            cell = got.rows.get(row, Row(error=got.error))
            title = ROW_TITLES[row] + (f" ({cell.header.split(':')[0]})" if cell.header else "")
            if cell.measured is None:
                body.append(f"| {title} | {entry.server.title} | {cell.error or '-'} | | | |")
                if got.error or (cell.error and row != "304"):
                    targets.append(f"FAIL {entry.server.title} / {ROW_TITLES[row]}: {cell.error or got.error}")
                continue
            m = cell.measured
            disturbed |= m.disturbed
            per = per_request_us(m)
            split = (f"({m.cpu.user_s / max(m.result.requests, 1) * 1e6:.1f}"
                     f" + {m.cpu.system_s / max(m.result.requests, 1) * 1e6:.1f})")
            ratio = f"{per / per_request_us(base):.2f}x" if base is not None else "-"
            body.append(f"| {title} | {entry.server.title} | {m.result.rps:,.0f}{dagger(m.disturbed)} |"
                        f" {per:.1f} {split} | {ratio} | {m.result.errors} |")
            targets.append(f"INFO {ROW_TITLES[row]} / {entry.server.title}: {per:.1f} µs/req,"
                           f" {m.result.rps:,.0f} req/s")
    body += ["", "CPU per request: user + system time of the server's whole process tree (primary, workers) over"
                 " the measured run, divided by the requests wrk completed."]
    body += [f"- {e.note}" for e in chosen if e.note]
    if disturbed:
        body += ["", DAGGER_NOTE]
    body += ["", "## Server commands", "", *(f"- `{line.replace(str(REPO) + '/', '')}`" for line in lines.values())]
    data: dict[str, Any] = {"workers": workers, "connections": CONNECTIONS, "duration": duration,
                            "trials": {key: as_json(t) for key, t in trials.items()}}
    return Output("Static files: clusterrun --static against granian and uWSGI", settings, body, targets, data)


def as_json(t: Trial) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for key, row in t.rows.items():
        m = row.measured
        rows[key] = {"error": row.error, "header": row.header} | ({} if m is None else {
            "rps": m.result.rps, "requests": m.result.requests, "errors": m.result.errors,
            "per_request_us": per_request_us(m), "user_s": m.cpu.user_s, "system_s": m.cpu.system_s,
            "elsewhere_cores": m.cpu.elsewhere_cores, "remeasured": m.remeasured})
    return {"startup_s": t.startup_s, "error": t.error, "rows": rows}

