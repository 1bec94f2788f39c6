"""The compiled section (issue 24, item 3): what the compiled core saves, against the same code in pure Python.

    python bench/run.py --section compiled           # about 5 minutes on 2 cores
    python bench/run.py --section compiled --quick   # under a minute, once bench/.venv-pure exists

The checkout is installed twice: compiled, as ``pip install`` builds it (the servers' interpreter, bench/.venv),
and pure Python (``CLUSTERRUN_PURE_PYTHON=1``, into bench/.venv-pure beside it). Each serves raw WSGI hello,
Flask hello (the inline WSGI engine) and Starlette hello (the ASGI protocol, adapters/stack/http1.py) from
bench/apps with 2 workers on clusterrun's default policy and on shared, keep-alive and with a new connection
per request; ``--apps`` picks among those and FastAPI hello. The two builds take turns, round by round, so that
a drift of the machine falls on both alike; the figure is the median over the rounds of the server's CPU per
request (user + system of the whole process tree, divided by the requests the load generator completed), beside
req/s.

Each server is checked to run the build it is meant to: its worker's log names the engine it serves on.
"""

from __future__ import annotations

import dataclasses
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchenv
import procs
from loadgen import LoadResult, LoadSpec
from sections import (
    DAGGER_NOTE,
    Context,
    Measured,
    Output,
    command_line,
    dagger,
    default_policy,
    started_bench_app,
    steady,
)
from servers import APPS, App, Server, clusterrun_server

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
# The apps whose server path the compiled core runs: the inline WSGI engine's, and the ASGI protocol's.
COMPILED_APPS = tuple(a for a in APPS if a.key in ("wsgi", "flask", "starlette", "fastapi"))
DEFAULT_APPS = ("wsgi", "flask", "starlette")
WORKERS = 2
CONNECTIONS = 64
MODES = ("keep-alive", "close")
BUILDS = ("compiled", "pure Python")


@dataclass(frozen=True)
class Durations:
    warmup: float
    load: float
    rounds: int


def durations(ctx: Context) -> Durations:
    if ctx.duration:
        return Durations(1.0, ctx.duration, 3)
    return Durations(1.0, 1.0, 1) if ctx.quick else Durations(1.0, 3.0, 3)


@dataclass
class Cell:
    """One (app, policy, mode, build): a measurement per round."""

    runs: list[Measured[LoadResult]] = field(default_factory=list)
    error: str | None = None

    def per_request_us(self) -> float | None:
        values = [m.cpu.server_s / m.result.requests * 1e6 for m in self.runs if m.result.requests]
        return statistics.median(values) if values else None

    def split_us(self) -> tuple[float, float] | None:
        pairs = [(m.cpu.user_s / m.result.requests * 1e6, m.cpu.system_s / m.result.requests * 1e6)
                 for m in self.runs if m.result.requests]
        if not pairs:
            return None
        return statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)

    def rps(self) -> float | None:
        values = [m.result.rps for m in self.runs if m.result.requests]
        return statistics.median(values) if values else None

    def as_json(self) -> dict[str, Any]:
        return {"per_request_us": self.per_request_us(), "split_us": self.split_us(), "rps": self.rps(),
                "rounds": [{"requests": m.result.requests, "rps": m.result.rps, "user_s": m.cpu.user_s,
                            "system_s": m.cpu.system_s, "disturbed": m.disturbed} for m in self.runs],
                "error": self.error}


Key = tuple[str, str, str, str]  # app key, server key, mode, build


def run(ctx: Context) -> Output:
    if ctx.workers not in (None, WORKERS):
        raise SystemExit(f"--workers {ctx.workers}: the compiled section compares builds on {WORKERS} workers;"
                         " leave --workers out")
    spans = durations(ctx)
    apps = choose_apps(ctx)
    pythons = {"compiled": ctx.python, "pure Python": str(pure_venv(ctx, apps))}
    servers = catalogue(ctx)
    cells: dict[Key, Cell] = {}
    for round_ in range(spans.rounds):
        for app in apps:
            for server in servers:
                for build in BUILDS:
                    trial(dataclasses.replace(ctx, python=pythons[build]), app, server, build, spans, cells, round_)
    return report(ctx, apps, servers, spans, cells, pythons)


def pure_venv(ctx: Context, apps: Sequence[App]) -> Path:
    """--pure-venv (bench/.venv-pure): the checkout built with CLUSTERRUN_PURE_PYTHON=1 by the servers' Python,
    with the frameworks of ``apps`` only (raw WSGI needs none: the smoke test's quick run installs nothing more)."""
    base = subprocess.run([ctx.python, "-c", "import sys; print(sys._base_executable)"], capture_output=True,
                          text=True, check=True, timeout=60).stdout.strip()
    peers = tuple(dict.fromkeys(dist for app in apps for dist in app.requires))
    return benchenv.ensure_venv(ctx.pure_venv, REPO, peers=peers, pure=True, interpreter=base)


def catalogue(ctx: Context) -> tuple[Server, ...]:
    policy = default_policy(ctx)
    return (clusterrun_server(policy), *([clusterrun_server("shared")] if policy != "shared" else []))


def choose_apps(ctx: Context) -> tuple[App, ...]:
    wanted = {w.strip() for w in ctx.apps.split(",") if w.strip()} if ctx.apps else set(DEFAULT_APPS)
    unknown = wanted - {a.key for a in COMPILED_APPS}
    if unknown:
        raise SystemExit(f"--apps: unknown {', '.join(sorted(unknown))}; known here: "
                         f"{', '.join(a.key for a in COMPILED_APPS)}")
    return tuple(a for a in COMPILED_APPS if a.key in wanted)


def trial(ctx: Context, app: App, server: Server, build: str, spans: Durations, cells: dict[Key, Cell],
          round_: int) -> None:
    name = f"compiled-{app.key}-{server.key}-{build.split()[0]}-{round_}"
    try:
        with started_bench_app(ctx, app, server, WORKERS, name) as live:
            said = wait_for_engine_line(live.log_text)
            if said != build:
                raise RuntimeError(f"meant to run the {build} engine, its worker said {said!r}")
            url = f"http://127.0.0.1:{live.port}/"
            for mode in MODES:
                spec = LoadSpec(url, spans.load, CONNECTIONS, close=mode == "close")
                ctx.client.run(dataclasses.replace(spec, duration=spans.warmup))
                procs.wait_idle(live.pid)
                measured = steady(ctx.patience, live.pid, spans.load, lambda spec=spec: ctx.client.run(spec))
                cells.setdefault((app.key, server.key, mode, build), Cell()).runs.append(measured)
                per = measured.cpu.server_s / max(measured.result.requests, 1) * 1e6
                print(f"compiled: round {round_ + 1} {app.title} / {server.title} / {mode} / {build}:"
                      f" {per:.1f} µs/req, {measured.result.rps:,.0f} req/s", file=sys.stderr, flush=True)
    except Exception as exc:  # one run failing must not cost the others their results
        for mode in MODES:
            cells.setdefault((app.key, server.key, mode, build), Cell()).error = f"{type(exc).__name__}: {exc}"


def wait_for_engine_line(log_text: Callable[[], str], timeout: float = 10.0) -> str | None:
    """The build the first worker's start line names, waited for: the first answer may come from another worker
    (under shared, whichever wakes first) before worker 1 has written its line, or before the log is read."""
    deadline = time.monotonic() + timeout
    while True:
        said = engine_said(log_text())
        if said is not None or time.monotonic() > deadline:
            return said
        time.sleep(0.05)


def engine_said(log: str) -> str | None:
    """The build a worker's start line names: the inline WSGI engine's, or the ASGI protocol's."""
    for build in BUILDS:
        for engine in ("inline WSGI engine", "clusterrun http1"):
            if f"serving with the {engine} (httptools, {build})" in log:
                return build
    return None


def report(ctx: Context, apps: Sequence[App], servers: Sequence[Server], spans: Durations, cells: dict[Key, Cell],
           pythons: dict[str, str]) -> Output:
    settings = (f"{WORKERS} workers, {ctx.client.name} with {CONNECTIONS} connections, {spans.rounds} rounds of"
                f" {spans.load:g} s after {spans.warmup:g} s of warm-up, the builds taking turns")
    body = ["", "## Server CPU per request, compiled against pure Python", "",
            "| app | policy | load | compiled µs/req (user + sys) | pure Python µs/req (user + sys) |"
            " compiled / pure | req/s compiled | req/s pure |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    targets: list[str] = []
    disturbed = False
    for app in apps:
        for server in servers:
            for mode in MODES:
                got = [cells.get((app.key, server.key, mode, build), Cell()) for build in BUILDS]
                disturbed |= any(m.disturbed for c in got for m in c.runs)
                per = [c.per_request_us() for c in got]
                ratio = f"{per[0] / per[1]:.2f}x" if per[0] and per[1] else "-"
                load = "keep-alive" if mode == "keep-alive" else "new connection"
                body.append(f"| {app.title} | {server.title.removeprefix('clusterrun ')} | {load} | "
                            f"{_cpu(got[0])} | {_cpu(got[1])} | {ratio} | {_rps(got[0])} | {_rps(got[1])} |")
                if per[0] and per[1]:
                    targets.append(f"INFO {app.title} / {server.title} / {load}: compiled {per[0]:.1f} µs/req,"
                                   f" pure Python {per[1]:.1f} ({per[0] / per[1]:.2f}x)")
                for build, cell in zip(BUILDS, got, strict=True):
                    if cell.error:
                        targets.append(f"FAIL {app.title} / {server.title} / {load} / {build}: {cell.error}")
    body += ["", "Medians over the rounds. CPU per request: user + system time of the server's whole process tree"
                 " (primary, workers, threads) over the measured run, divided by the requests completed."]
    if disturbed:
        body += ["", DAGGER_NOTE + " (in at least one of the cell's rounds)"]
    body += ["", "## Server commands", ""]
    for build, python in pythons.items():
        for app in apps:
            for server in servers:
                line = command_line(python, app, server, WORKERS)
                body.append(f"- {build}: `{line.replace(str(REPO) + '/', '')}`")
    data = {"workers": WORKERS, "connections": CONNECTIONS, "durations": spans.__dict__,
            "cells": {"/".join(k): c.as_json() for k, c in cells.items()}}
    return Output("clusterrun compiled core against pure Python", settings, body, targets, data)


def _cpu(cell: Cell) -> str:
    if cell.error or not cell.runs:
        return "failed" if cell.error else "-"
    per, split = cell.per_request_us(), cell.split_us()
    assert per is not None and split is not None
    return f"{per:.1f} ({split[0]:.1f} + {split[1]:.1f}){dagger(any(m.disturbed for m in cell.runs))}"


def _rps(cell: Cell) -> str:
    value = cell.rps()
    return f"{value:,.0f}" if value else "-"
