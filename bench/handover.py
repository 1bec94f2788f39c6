"""The hand-over section (issue 12, item 3): how many connections one primary can hand over per second on one core.

    python bench/run.py --section handover           # about 30 s on 2 cores
    python bench/run.py --section handover --quick   # about 15 s

Under rr (and least-conn, sticky) clusterrun's primary accepts every connection
and passes it to a worker over its channel: one process does that for all the
workers, so past some number of workers it is the bottleneck. Measured here: a
new connection per request (``Connection: close``) on a trivially cheap app (raw
WSGI hello) and on Flask hello, clusterrun rr, and clusterrun shared for
reference (the workers accept, the primary should use next to nothing). From
the kernel: the primary's CPU seconds (its per-process CPU clock, in nanoseconds),
and the workers' (the server's whole session less the primary, /proc/PID/stat, in
clock ticks). Then

- primary µs per connection = primary CPU / connections;
- hand-over rate per core = connections / primary CPU seconds: what one primary
  could dispatch with a core of its own;
- workers µs per connection = the workers' CPU / connections, so one worker on one
  core serves 1e6 / that many connections per second;
- workers that saturate one primary = hand-over rate / one worker's rate, i.e. the
  workers' CPU over the primary's: with more workers than this (each on a core of
  its own), rr is capped by the primary and shared is the policy to choose.

The load generator sets the rate (the Python client: a few thousand connections
per second), not the primary's limit: at a higher rate the primary batches more
per wake-up and may spend less per connection, so the rate per core is a lower
bound.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import procs
from loadgen import LoadResult, LoadSpec
from sections import (
    CLUSTERRUN,
    DAGGER_NOTE,
    Context,
    Measured,
    Output,
    choose,
    command_line,
    dagger,
    fmt,
    started_bench_app,
    steady,
)
from servers import APPS, App, Server

WSGI_APPS = tuple(a for a in APPS if a.key in ("wsgi", "flask"))
CONNECTIONS = 16
RR = "clusterrun-rr"
SHARED = "clusterrun-shared"
CATALOGUE = tuple(s for s in CLUSTERRUN if s.key in (RR, SHARED))


@dataclass(frozen=True)
class Durations:
    warmup: float
    load: float


def durations(ctx: Context) -> Durations:
    if ctx.duration:
        return Durations(min(1.0, ctx.duration), ctx.duration)
    return Durations(0.5, 2.0) if ctx.quick else Durations(1.0, 5.0)


@dataclass(frozen=True)
class Handover:
    """One run's counts: connections served, CPU seconds of the primary and of the workers."""

    connections: int
    seconds: float
    primary_s: float
    workers_s: float

    @property
    def primary_us(self) -> float | None:
        return self.primary_s / self.connections * 1e6 if self.connections else None

    @property
    def per_core(self) -> float | None:
        """Connections one primary hands over per CPU second; None when it used no measurable CPU."""
        return self.connections / self.primary_s if self.primary_s else None

    @property
    def workers_us(self) -> float | None:
        return self.workers_s / self.connections * 1e6 if self.connections else None

    @property
    def saturating_workers(self) -> float | None:
        """Workers, each on a core of its own, that would need all of one primary's core."""
        return self.workers_s / self.primary_s if self.primary_s else None


@dataclass
class Trial:
    app: App
    server: Server
    startup_s: float | None = None
    load: LoadResult | None = None
    measured: Measured[Sample] | None = None
    error: str | None = None

    @property
    def handover(self) -> Handover | None:
        m = self.measured
        if m is None:
            return None
        load = m.result.load
        primary = m.result.primary_s if m.result.primary_s is not None else m.main_s
        return Handover(load.requests, load.requests / load.rps if load.rps else 0.0, primary,
                        max(0.0, m.cpu.server_s - m.main_s))

    def as_json(self) -> dict[str, Any]:
        h = self.handover
        return {"app": self.app.key, "server": self.server.key, "startup_s": self.startup_s, "error": self.error,
                "load": self.measured.result.load.__dict__ if self.measured else None,
                "handover": h.__dict__ | {"per_core": h.per_core, "saturating_workers": h.saturating_workers}
                if h else None,
                "elsewhere_cores": self.measured.cpu.elsewhere_cores if self.measured else None}


def run(ctx: Context) -> Output:
    workers = ctx.workers or 2
    spans = durations(ctx)
    pairs = choose_pairs(ctx)
    trials = []
    for app, server in pairs:
        trial = run_trial(ctx, app, server, workers, spans)
        print(progress(trial), flush=True, file=sys.stderr)
        trials.append(trial)
    return report(ctx, trials, pairs, workers, spans)


def choose_pairs(ctx: Context) -> list[tuple[App, Server]]:
    """``--apps wsgi,flask`` picks among this section's two apps (the main bench's keys)."""
    apps = WSGI_APPS
    if ctx.apps:
        wanted = {w.strip() for w in ctx.apps.split(",") if w.strip()}
        if wanted - {a.key for a in WSGI_APPS}:
            raise SystemExit(f"--apps: unknown {', '.join(sorted(wanted - {a.key for a in WSGI_APPS}))};"
                             f" known here: {', '.join(a.key for a in WSGI_APPS)}")
        apps = tuple(a for a in WSGI_APPS if a.key in wanted)
    # choose() filters --apps against the sample apps: give it none, and the apps chosen here as its default.
    return choose(dataclasses.replace(ctx, apps=None), CATALOGUE, apps)


def run_trial(ctx: Context, app: App, server: Server, workers: int, spans: Durations) -> Trial:
    trial = Trial(app, server)
    try:
        with started_bench_app(ctx, app, server, workers, f"handover-{app.key}-{server.key}") as live:
            trial.startup_s = live.startup_s
            url = f"http://127.0.0.1:{live.port}/"
            ctx.client.run(LoadSpec(url, spans.warmup, CONNECTIONS, close=True))
            procs.wait_idle(live.pid)
            spec = LoadSpec(url, spans.load, CONNECTIONS, close=True)
            trial.measured = steady(ctx.patience, live.pid, spans.load, lambda: timed(ctx, spec, live.pid))
    except (procs.ServerFailed, OSError, RuntimeError, ValueError) as exc:
        trial.error = str(exc)
    return trial


@dataclass(frozen=True)
class Sample:
    load: LoadResult
    primary_s: float | None  # the primary's CPU time by its CPU clock (ns resolution), None where unreadable


def timed(ctx: Context, spec: LoadSpec, pid: int) -> Sample:
    """One load run, with the main process's CPU time read in nanoseconds around it: /proc/PID/stat counts
    10 ms ticks, and a primary handing over a few thousand connections a second uses only tens of them."""
    before = _cpu_clock_s(pid)
    load = ctx.client.run(spec)
    after = _cpu_clock_s(pid)
    return Sample(load, after - before if before is not None and after is not None else None)


def _cpu_clock_s(pid: int) -> float | None:
    """CPU time of process ``pid`` (all its threads) in nanosecond resolution, from the kernel's per-process CPU
    clock: Linux encodes it as the clock id ``(~pid << 3) | 2`` (CPUCLOCK_SCHED, process-wide), what
    clock_getcpuclockid(3) returns. Not /proc/PID/schedstat: on this machine's kernel it reads a fraction of
    what /proc/PID/stat and this clock agree on. None where the clock cannot be read (not Linux, no permission)."""
    try:
        return time.clock_gettime((~pid << 3) | 2)
    except (OSError, OverflowError):
        return None


def progress(trial: Trial) -> str:
    head = f"[handover] {trial.app.title} / {trial.server.title}:"
    h = trial.handover
    if trial.error or h is None:
        return f"{head} FAILED {(trial.error or 'not measured').splitlines()[0]}"
    return (f"{head} {h.connections} connections, primary {h.primary_s:.2f} s CPU"
            f" ({fmt(h.primary_us, '.1f')} µs each), workers {h.workers_s:.2f} s")


def report(ctx: Context, trials: Sequence[Trial], pairs: Sequence[tuple[App, Server]], workers: int,
           spans: Durations) -> Output:
    settings = (f"{workers} workers per server, a new connection per request (Connection: close), {CONNECTIONS}"
                f" connections, {spans.load:g} s by {ctx.client.name} after {spans.warmup:g} s of warm-up; CPU from"
                " the kernel (primary: the server's main process, by its CPU clock; workers: the rest of its session,"
                " from /proc/PID/stat)")
    body: list[str] = []
    for app in dict.fromkeys(a for a, _ in pairs):
        body += table(app, [t for t in trials if t.app is app], spans)
    body += ["", "hand-over per core: connections / the primary's CPU seconds, what one primary dispatches with a"
                 " core of its own (a lower bound: at a higher rate it batches more per wake-up). Workers that"
                 " saturate it: the workers' CPU / the primary's, i.e. with that many workers (each on a core of"
                 " its own) serving this app with a new connection per request, rr is capped by its primary."]
    failed = [t for t in trials if t.error]
    if failed:
        body += ["", "## Failures", ""] + [f"- {t.app.title} / {t.server.title}: `{t.error}`" for t in failed]
    body += ["", "## Server commands", ""]
    body += [f"- {s.title} ({a.title}): `{command_line(ctx.python, a, s, workers)}`" for a, s in pairs]
    data = {"workers": workers, "connections": CONNECTIONS, "durations": spans.__dict__,
            "trials": [t.as_json() for t in trials]}
    return Output("clusterrun hand-over benchmark", settings, body, targets(trials), data)


def table(app: App, trials: Sequence[Trial], spans: Durations) -> list[str]:
    lines = ["", f"## {app.title}: a new connection per request, {CONNECTIONS} connections, {spans.load:g} s", "",
             "| server | connections | conn/s | primary CPU s | primary µs/conn | hand-over per primary core, conn/s"
             " | workers CPU µs/conn | workers that saturate one primary |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for t in trials:
        h, m = t.handover, t.measured
        if h is None or m is None:
            lines.append(f"| {t.server.title} | failed: {(t.error or '-').splitlines()[0]} | | | | | | |")
            continue
        # Under shared the primary dispatches nothing: a rate per core or a worker count from it means nothing.
        dispatches = t.server.key != SHARED
        lines.append(f"| {t.server.title} | {h.connections:,} | {m.result.load.rps:,.0f}{dagger(m.disturbed)}"
                     f" | {h.primary_s:.3f} | {fmt(h.primary_us, '.1f')}"
                     f" | {fmt(h.per_core, ',.0f') if dispatches else 'n/a: workers accept'}"
                     f" | {fmt(h.workers_us, '.0f')} | {fmt(h.saturating_workers, '.1f') if dispatches else 'n/a'} |")
    return lines + (["", DAGGER_NOTE] if any(t.measured and t.measured.disturbed for t in trials) else [])


def targets(trials: Sequence[Trial]) -> list[str]:
    lines = []
    for t in trials:
        h = t.handover
        if t.server.key != RR or h is None or h.per_core is None:
            continue
        disturbed = " [disturbed by other jobs]" if t.measured and t.measured.disturbed else ""
        lines.append(f"INFO  {t.app.title}, new connection per request: one rr primary hands over"
                     f" {h.per_core:,.0f} connections per CPU second ({fmt(h.primary_us, '.1f')} µs each); it is the"
                     f" bottleneck from about {fmt(h.saturating_workers, '.1f')} workers on as many cores{disturbed}")
    return lines
