"""The http2 section (issue 28, item 4): HTTP/2 req/s and server CPU per request against granian and hypercorn.

    python bench/run.py --section http2 --apps asgi     # the ASGI half, about 50 s on 2 cores
    python bench/run.py --section http2 --apps wsgi     # the WSGI half, about 60 s
    python bench/run.py --section http2 --quick         # both, about 50 s

HTTP/2 load comes from bench/h2load.py (a load generator on the h2 library): 4 connections, each in a process
of its own, each keeping 16 streams in flight, h2c with prior knowledge; HTTP/1.1 load from wrk with 64
keep-alive connections on the same server, so that each server's HTTP/2 cost sits beside its HTTP/1.1 cost.
When nghttp2's ``h2load`` is installed (Debian: nghttp2-client), each HTTP/2 row is measured with it too, the
same connections and streams from C: what the servers do when the client is not the limit, and a check of the
Python client's figures. Servers, 2 workers each, on raw ASGI hello and raw WSGI hello:

- clusterrun on its default policy: ASGI on the asyncio stack (clusterrun's own protocol); WSGI with
  ``--threads 4`` (the WSGI bridge on the same stack); and WSGI on the inline engine (``--threads 1``, the
  default), which hands its HTTP/2 connections to a thread of its own (adapters.stack.inline_h2);
- granian ``--http 2`` (HTTP/2 only: its HTTP/1.1 figure comes from a second start on its default, ``auto``);
- hypercorn (it serves h2c with prior knowledge beside HTTP/1.1).

uvicorn has no HTTP/2 and is not in this section. The Python client costs far more CPU per request than any
server here (h2 is pure Python): its req/s are the client's, and the figure that speaks for the server is the
server's CPU per request (user + system of its whole process tree over the run, divided by the requests
completed). The client's own CPU per request is reported beside it: its ceiling on this machine is about
cores / that, less what the server takes.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import procs
from loadgen import LoadResult, LoadSpec
from sections import (
    BENCH_APPS,
    DAGGER_NOTE,
    Context,
    Live,
    Measured,
    Output,
    choose_entries,
    command,
    command_line,
    dagger,
    default_policy,
    server_env,
    steady,
)
from servers import APPS, App, Server, Target, _clusterrun, _granian, _hypercorn

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
H2LOAD = BENCH / "h2load.py"
WORKERS = 2
H1_CONNECTIONS = 64
H2_CONNECTIONS = 4
H2_STREAMS = 16
THREADS = 4
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0
PROTOCOLS = ("HTTP/1.1", "HTTP/2")
NGHTTP2 = "HTTP/2, h2load"  # nghttp2's h2load, when installed (Debian: nghttp2-client): the same load from C


@dataclass(frozen=True)
class H2Server:
    server: Server
    protocols: frozenset[str]
    note: str = ""


def catalogue(ctx: Context) -> list[H2Server]:
    policy = default_policy(ctx)
    base = _clusterrun(policy)
    both = frozenset({"asgi", "wsgi"})

    def threads(t: Target) -> list[str]:
        argv = base(t)
        at = argv.index("--threads")
        return [*argv[:at], "--threads", str(THREADS), *argv[at + 2:]]

    def granian_h2(t: Target) -> list[str]:
        return [*_granian(t)[:-1], "--http", "2", t.app.target]

    h1, h2, all_ = frozenset({"HTTP/1.1"}), frozenset({"HTTP/2"}), frozenset(PROTOCOLS)
    asgi, wsgi = frozenset({"asgi"}), frozenset({"wsgi"})
    return [
        H2Server(Server("clusterrun", "clusterrun", f"clusterrun {policy}", asgi, ("clusterrun",), base), all_),
        H2Server(Server("clusterrun-threads", "clusterrun", f"clusterrun {policy} --threads {THREADS}", wsgi,
                        ("clusterrun",), threads), all_),
        H2Server(Server("clusterrun-inline", "clusterrun", f"clusterrun {policy}, inline engine", wsgi,
                        ("clusterrun",), base), all_,
                 "the inline engine hands each HTTP/2 connection to a thread of its own, the app behind the WSGI"
                 " bridge (docs/http2.md)"),
        H2Server(Server("granian-h2", "granian", "granian --http 2", both, ("granian",), granian_h2), h2),
        H2Server(Server("granian", "granian", "granian (auto)", both, ("granian",), _granian), h1),
        H2Server(Server("hypercorn", "hypercorn", "hypercorn", both, ("hypercorn",), _hypercorn), all_),
    ]


@dataclass(frozen=True)
class H2Result:
    load: LoadResult
    client_cpu_s: float
    refused: int
    first_error: str


def run_h2load(python: str, url: str, duration: float) -> H2Result:
    argv = [python, str(H2LOAD), url, "-c", str(H2_CONNECTIONS), "-m", str(H2_STREAMS), "-d", f"{duration:g}"]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    try:
        data = json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise RuntimeError(f"h2load failed ({out.returncode}): {out.stderr.strip()[-500:]}") from None
    load = LoadResult(data["rps"], data["p50_ms"], data["p99_ms"], data["errors"], data["requests"])
    return H2Result(load, data["client_cpu_s"], data["refused"], data["first_error"])


def run_nghttp2(path: str, url: str, duration: float) -> H2Result:
    """nghttp2's h2load with the same shape of load: one thread, as wrk runs here; its CPU from the children's
    rusage (it is reaped before this returns)."""
    argv = [path, "-t1", "-c", str(H2_CONNECTIONS), "-m", str(H2_STREAMS), "-D", f"{max(1, round(duration))}", url]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return H2Result(parse_nghttp2(out.stdout + out.stderr), cpu, 0, "")


def parse_nghttp2(output: str) -> LoadResult:
    """req/s from "finished in", the requests that succeeded, and failed + errored + timed out + non-2xx/3xx."""
    rate = re.search(r"finished in ([\d.]+)(m?s), ([\d.]+) req/s", output)
    counts = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored,"
                       r" (\d+) timeout", output)
    codes = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", output)
    mean = re.search(r"time for request:\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", output)
    if not (rate and counts and codes):
        raise RuntimeError(f"could not parse h2load's output:\n{output[-800:]}")
    succeeded, failed, errored, timeouts = (int(n) for n in counts.groups())
    bad = int(codes.group(3)) + int(codes.group(4))
    mean_ms = float(mean.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[mean.group(2)] if mean else 0.0
    # h2load prints no percentiles: its mean time per request stands in p50's column (the table shows neither).
    return LoadResult(float(rate.group(3)), mean_ms, mean_ms, failed + errored + timeouts + bad, succeeded - bad)


@dataclass
class Cell:
    measured: Measured[Any] | None = None  # Measured[LoadResult] (wrk) or Measured[H2Result]
    error: str | None = None

    def load(self) -> LoadResult | None:
        if self.measured is None:
            return None
        result = self.measured.result
        return result.load if isinstance(result, H2Result) else result

    def per_request_us(self) -> float | None:
        load = self.load()
        if self.measured is None or load is None or not load.requests:
            return None
        return self.measured.cpu.server_s / load.requests * 1e6


@dataclass
class Trial:
    startup_s: float | None = None
    cells: dict[str, Cell] = field(default_factory=dict)  # by protocol
    error: str | None = None


Key = tuple[str, str]  # app key, server key


def run(ctx: Context) -> Output:
    if ctx.client.name != "wrk":
        raise SystemExit("--section http2 needs wrk for its HTTP/1.1 figures")
    try:
        import h2load  # noqa: F401 - the readiness probe speaks HTTP/2 from this interpreter
    except ImportError:
        raise SystemExit("--section http2 needs the h2 library in this interpreter: pip install h2") from None
    duration = ctx.duration or (1.0 if ctx.quick else 2.0)
    workers = ctx.workers or WORKERS
    apps = choose_apps(ctx)
    entries = choose_entries(ctx, catalogue(ctx))
    trials: dict[Key, Trial] = {}
    for app in apps:
        for entry in entries:
            if app.interface in entry.server.interfaces:
                trials[(app.key, entry.server.key)] = trial(ctx, app, entry, workers, duration)
    return report(ctx, apps, entries, trials, duration, workers)


def choose_apps(ctx: Context) -> list[App]:
    known = [a for a in APPS if a.key in ("asgi", "wsgi")]
    if not ctx.apps:
        return known
    wanted = {w.strip() for w in ctx.apps.split(",") if w.strip()}
    if wanted - {a.key for a in known}:
        raise SystemExit(f"--apps: unknown {', '.join(sorted(wanted - {a.key for a in known}))}; known here: asgi,"
                         " wsgi")
    return [a for a in known if a.key in wanted]


@contextlib.contextmanager
def started(ctx: Context, app: App, entry: H2Server, workers: int) -> Iterator[Live]:
    """Start the server; serving once GET / answers 200 with the app's body, over HTTP/2 for an HTTP/2-only
    server and over HTTP/1.1 otherwise."""
    port = procs.free_port()
    argv = command(ctx.python, app, entry.server, workers, port)
    log = ctx.logs / f"http2-{app.key}-{entry.server.key}.log"
    with procs.running(argv, cwd=BENCH_APPS, env=server_env(BENCH_APPS), log=log,
                       stop_timeout=STOP_TIMEOUT) as running:
        live = Live(running, port)
        if "HTTP/1.1" in entry.protocols:
            live.startup_s = procs.wait_ready(running, port, app.body, READY_TIMEOUT)
        else:
            live.startup_s = wait_h2(running, port, app.body)
        yield live


def wait_h2(running: procs.Running, port: int, body: bytes) -> float:
    import h2load

    deadline = time.monotonic() + READY_TIMEOUT
    last = "no answer"
    while time.monotonic() < deadline:
        if running.proc.poll() is not None:
            raise procs.ServerFailed(f"exited with code {running.proc.returncode}:\n{running.log_tail()}")
        try:
            status, answer = h2load.probe(f"http://127.0.0.1:{port}/")
        except (OSError, ConnectionError) as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if status == 200 and answer == body:
                return time.monotonic() - running.started
            raise procs.ServerFailed(f"answered {status} {answer[:80]!r} over HTTP/2:\n{running.log_tail()}")
        time.sleep(0.02)
    raise procs.ServerFailed(f"no HTTP/2 200 within {READY_TIMEOUT:g}s ({last}):\n{running.log_tail()}")


def check_h2(port: int, body: bytes) -> None:
    """Before the load: one request over h2c answers 200 with the body (else the cell says why)."""
    import h2load

    try:
        status, answer = h2load.probe(f"http://127.0.0.1:{port}/")
    except (OSError, ConnectionError) as exc:
        raise RuntimeError(f"no HTTP/2 answer ({exc})") from None
    if status != 200 or answer != body:
        raise RuntimeError(f"HTTP/2 answer {status} {answer[:80]!r}")


def check_h1(port: int, body: bytes) -> None:
    try:
        status, answer = procs.probe(port)
    except (OSError, http.client.HTTPException) as exc:
        raise RuntimeError(f"no HTTP/1.1 answer: {exc}") from None
    if status != 200 or answer != body:
        raise RuntimeError(f"HTTP/1.1 answer {status} {answer[:80]!r}")


def trial(ctx: Context, app: App, entry: H2Server, workers: int, duration: float) -> Trial:
    out = Trial()
    try:
        with started(ctx, app, entry, workers) as live:
            out.startup_s = live.startup_s
            url = f"http://127.0.0.1:{live.port}/"
            for protocol in protocols():
                if protocol.split(",")[0] in entry.protocols:
                    out.cells[protocol] = measure(ctx, live, app, protocol, url, duration)
                    print(progress(app, entry, protocol, out.cells[protocol]), file=sys.stderr, flush=True)
    except Exception as exc:  # one server failing must not cost the others their results
        out.error = f"{type(exc).__name__}: {exc}"
        print(f"http2: {app.title} / {entry.server.title}: FAILED {out.error.splitlines()[0]}", file=sys.stderr,
              flush=True)
    return out


def protocols() -> tuple[str, ...]:
    return (*PROTOCOLS, NGHTTP2) if shutil.which("h2load") else PROTOCOLS


def measure(ctx: Context, live: Live, app: App, protocol: str, url: str, duration: float) -> Cell:
    cell = Cell()
    go: Callable[[], Any]
    try:
        if protocol == "HTTP/1.1":
            check_h1(live.port, app.body)
            spec = LoadSpec(url, duration, H1_CONNECTIONS, close=False)
            ctx.client.run(LoadSpec(url, 1.0, H1_CONNECTIONS, close=False))  # warm-up

            def go() -> Any:
                return ctx.client.run(spec)
        elif protocol == NGHTTP2:
            check_h2(live.port, app.body)
            nghttp2 = shutil.which("h2load") or "h2load"
            run_nghttp2(nghttp2, url, 1.0)  # warm-up

            def go() -> Any:
                return run_nghttp2(nghttp2, url, duration)
        else:
            check_h2(live.port, app.body)
            run_h2load(ctx.python, url, 1.0)  # warm-up

            def go() -> Any:
                return run_h2load(ctx.python, url, duration)
        procs.wait_idle(live.pid)
        cell.measured = steady(ctx.patience, live.pid, duration, go)
    except Exception as exc:
        cell.error = f"{type(exc).__name__}: {exc}"
    return cell


def progress(app: App, entry: H2Server, protocol: str, cell: Cell) -> str:
    head = f"http2: {app.title} / {entry.server.title} / {protocol}:"
    load = cell.load()
    if cell.measured is None or load is None:
        return f"{head} {cell.error}"
    extra = ""
    if isinstance(cell.measured.result, H2Result):
        extra = f", client {cell.measured.result.client_cpu_s / max(load.requests, 1) * 1e6:.0f} µs/req"
    return (f"{head} {load.rps:,.0f} req/s, {cell.per_request_us() or 0:.1f} µs/req, {load.errors} errors"
            f"{extra}, elsewhere {cell.measured.cpu.elsewhere_cores:.2f} cores")


def report(ctx: Context, apps: Sequence[App], entries: Sequence[H2Server], trials: dict[Key, Trial],
           duration: float, workers: int) -> Output:
    settings = (f"{workers} workers; HTTP/1.1: wrk, {H1_CONNECTIONS} keep-alive connections; HTTP/2: h2load.py,"
                f" {H2_CONNECTIONS} connections (a process each) x {H2_STREAMS} streams, h2c prior knowledge;"
                f" {duration:g} s per row after 1 s of warm-up")
    body: list[str] = []
    targets: list[str] = []
    disturbed = False
    for app in apps:
        body += ["", f"## {app.title}: HTTP/1.1 and HTTP/2", "",
                 "| server | protocol | req/s | server µs/req (user + sys) | vs clusterrun, same protocol |"
                 " client µs/req | errors |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        base_key = "clusterrun" if app.interface == "asgi" else "clusterrun-threads"
        for protocol in protocols():
            base = trials.get((app.key, base_key), Trial()).cells.get(protocol, Cell()).per_request_us()
            for entry in entries:
                got = trials.get((app.key, entry.server.key))
                if got is None or protocol.split(",")[0] not in entry.protocols:
                    continue
                cell = got.cells.get(protocol, Cell(error=got.error))
                load, per = cell.load(), cell.per_request_us()
                if cell.measured is None or load is None or per is None:
                    body.append(f"| {entry.server.title} | {protocol} | failed: {cell.error} | | | | |")
                    targets.append(f"FAIL {app.title} / {entry.server.title} / {protocol}: {cell.error}")
                    continue
                cpu = cell.measured.cpu
                disturbed |= cell.measured.disturbed
                split = f"({cpu.user_s / load.requests * 1e6:.1f} + {cpu.system_s / load.requests * 1e6:.1f})"
                ratio = f"{per / base:.2f}x" if base else "-"
                result = cell.measured.result
                client = f"{result.client_cpu_s / load.requests * 1e6:.0f}" if isinstance(result, H2Result) else ""
                body.append(f"| {entry.server.title} | {protocol} | {load.rps:,.0f}{dagger(cell.measured.disturbed)}"
                            f" | {per:.1f} {split} | {ratio} | {client} | {load.errors} |")
                targets.append(f"INFO {app.title} / {entry.server.title} / {protocol}: {per:.1f} µs/req,"
                               f" {load.rps:,.0f} req/s")
    body += ["", "server µs/req: user + system time of the server's whole process tree over the measured run,"
                 " divided by the requests completed. client µs/req: the same for the HTTP/2 client's processes;"
                 " its req/s is bounded by about (2 cores - the server's share) / that. \"HTTP/2\": bench/h2load.py"
                 " (Python, on h2); \"HTTP/2, h2load\": nghttp2's h2load (C) with the same connections and streams,"
                 " when it is installed."]
    body += [f"- {e.server.title}: {e.note}" for e in entries if e.note]
    if disturbed:
        body += ["", DAGGER_NOTE]
    body += ["", "## Server commands", ""]
    for app in apps:
        for entry in entries:
            if (app.key, entry.server.key) in trials:
                line = command_line(ctx.python, app, entry.server, workers)
                body.append(f"- `{line.replace(str(REPO) + '/', '')}`")
    data: dict[str, Any] = {"workers": workers, "h1_connections": H1_CONNECTIONS,
                            "h2_connections": H2_CONNECTIONS, "h2_streams": H2_STREAMS, "duration": duration,
                            "trials": {"/".join(k): as_json(t) for k, t in trials.items()}}
    return Output("HTTP/2: clusterrun against granian and hypercorn", settings, body, targets, data)


def as_json(t: Trial) -> dict[str, Any]:
    cells: dict[str, Any] = {}
    for protocol, cell in t.cells.items():
        load = cell.load()
        entry: dict[str, Any] = {"error": cell.error}
        if cell.measured is not None and load is not None:
            entry |= {"rps": load.rps, "requests": load.requests, "errors": load.errors,
                      "p50_ms": load.p50_ms, "p99_ms": load.p99_ms, "per_request_us": cell.per_request_us(),
                      "user_s": cell.measured.cpu.user_s, "system_s": cell.measured.cpu.system_s,
                      "elsewhere_cores": cell.measured.cpu.elsewhere_cores, "remeasured": cell.measured.remeasured}
            if isinstance(cell.measured.result, H2Result):
                entry |= {"client_cpu_s": cell.measured.result.client_cpu_s,
                          "refused": cell.measured.result.refused, "first_error": cell.measured.result.first_error}
        cells[protocol] = entry
    return {"startup_s": t.startup_s, "error": t.error, "cells": cells}
