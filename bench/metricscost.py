"""The metrics section (issue 13, item 6): what ``--metrics`` costs, and whether status and scrapes stall dispatch.

    python bench/run.py --section metrics --quick   # under a minute on 2 cores
    python bench/run.py --section metrics           # 4 to 6 minutes (not run yet): 5 rounds of 2 s, rr and shared

1. Cost. Flask hello and Starlette hello (bench/apps), clusterrun with 2 workers,
   ``--policy rr`` (and ``shared`` in the full run), each twice: metrics off, and
   ``--metrics 127.0.0.1:PORT`` on. Both servers of a pair run at the same time and
   are measured in alternating rounds (off then on, then on then off, ...), keep-alive
   and a new connection per request, so that drift of the machine falls on both.
   Per row: the medians over rounds of req/s and of the server's CPU µs per request,
   and their ratios on/off. The Python client (on the same 2 cores) is the
   bottleneck, so req/s moves little whatever the server spends; the CPU per request
   is the comparison that holds, and the verdict uses it: capacity on/off = CPU µs
   per request off / on (what a CPU-bound server's throughput would be, on over
   off), target >= 0.97.
2. Stalls. With metrics on, under rr, a new connection per request (every
   connection passes through the primary's dispatch, the loop that also answers
   the control socket and /metrics): the load alone, then the load while a side
   process (bench/sidecalls.py) scrapes /metrics and asks ``status`` on the control
   socket every 100 ms. Reported: those calls' p50/p99/max latency, and the load's
   p99 without and with them.
3. In process (bench/metricsinproc.py): the CPU the metrics wrapper adds per
   request, measured around raw ASGI hello in one process, alternating with the
   app alone; free of the load client and of other jobs. Each cost row also gets
   the capacity on/off it predicts: off µs / (off µs + added µs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import json
import os
import shlex
import statistics
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
    READY_TIMEOUT,
    STOP_TIMEOUT,
    Context,
    Measured,
    Output,
    dagger,
    fmt,
    server_env,
    steady,
)
from servers import APPS, App, Target
from servers import _clusterrun as clusterrun_command

BENCH = Path(__file__).resolve().parent
SECTION_APPS = tuple(a for a in APPS if a.key in ("flask", "starlette"))
MODES = ("keep-alive", "close")
STATES = ("off", "on")
CONNECTIONS = 64
SIDE_INTERVAL = 0.1  # seconds between side calls (each tick: one scrape, one status)
TARGET = 0.97  # capacity with metrics on / off
STALL_P99 = 1.2  # load p99 with side calls / without: above it, the side calls slowed dispatch
_SELF = os.getpid()  # in cluster names: another bench run on the machine must not collide with this one


@dataclass(frozen=True)
class Spans:
    rounds: int
    inproc_rounds: int
    inproc_s: float  # each in-process round's measured time (after ceiling.py's own 0.2 s warm-up)
    warmup: float
    load: float
    stall: float  # each of the stall test's loads
    stall_rounds: int  # each: the load alone and with side calls, in alternating order
    policies: tuple[str, ...]


def spans(ctx: Context) -> Spans:
    policies: tuple[str, ...] = ("rr",) if ctx.quick else ("rr", "shared")
    if ctx.servers:
        policies = tuple(w.strip().removeprefix("clusterrun-") for w in ctx.servers.split(",") if w.strip())
        if not policies or set(policies) - {"rr", "shared"}:
            raise SystemExit("--servers: choose from clusterrun-rr, clusterrun-shared")
    if ctx.quick:
        return Spans(5, 6, 0.2, 0.5, ctx.duration or 0.6, 1.0, 2, policies)
    return Spans(5, 10, 0.5, 1.0, ctx.duration or 2.0, 3.0, 3, policies)


# One measurement: the load's result and the server's CPU time by the kernel's per-process clocks.


@dataclass(frozen=True)
class Sample:
    load: LoadResult
    cpu_s: float | None  # the whole server (primary and workers), nanosecond clocks; None where unreadable

    @property
    def us_per_request(self) -> float | None:
        return self.cpu_s / self.load.requests * 1e6 if self.cpu_s is not None and self.load.requests else None


def _cpu_clock_s(pid: int) -> float | None:
    """A process's CPU time by its CPU clock, in nanoseconds (see handover.py): /proc/PID/stat's 10 ms ticks
    would make a 1 s measurement of a ~1 CPU-second server good to a few per cent, the size of the effect."""
    try:
        return time.clock_gettime((~pid << 3) | 2)
    except (OSError, OverflowError):
        return None


def _tree_cpu_s(pids: Sequence[int]) -> float | None:
    values = [_cpu_clock_s(pid) for pid in pids]
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def timed(ctx: Context, spec: LoadSpec, sid: int) -> Sample:
    """One load run. The processes are the same before and after (nothing restarts a worker here); should one
    have exited meanwhile, its clock is unreadable and the sample has no CPU figure."""
    pids = procs.session_pids(sid)
    before = _tree_cpu_s(pids)
    load = ctx.client.run(spec)
    after = _tree_cpu_s(pids)
    return Sample(load, after - before if before is not None and after is not None else None)


# The servers: metrics off and on, distinct names and control sockets (a second cluster of one name exits 2).


@dataclass
class Server:
    app: App
    policy: str
    state: str  # off | on
    argv: list[str]
    port: int
    metrics_port: int | None
    control: Path
    running: procs.Running | None = None

    @property
    def title(self) -> str:
        return f"clusterrun {self.policy}, metrics {self.state}"

    @property
    def pid(self) -> int:
        assert self.running is not None
        return self.running.proc.pid


def make_server(ctx: Context, app: App, policy: str, state: str, workers: int) -> Server:
    name = f"bench-{_SELF}-{app.key}-{policy}-metrics-{state}"
    control = ctx.logs / f"{name}.sock"
    port = procs.free_port()
    metrics_port = procs.free_port() if state == "on" else None
    extra = ["--name", name, "--control", str(control)]
    if metrics_port is not None:
        extra += ["--metrics", f"127.0.0.1:{metrics_port}"]
    argv = clusterrun_command(policy, *extra, control=True)(Target(ctx.python, app, port, workers, uvloop=False))
    return Server(app, policy, state, argv, port, metrics_port, control)


def command_line(server: Server) -> str:
    """As run, with the ports, the pid in the name and the temporary folder written as placeholders."""
    line = shlex.join(server.argv).replace(f"127.0.0.1:{server.port}", "127.0.0.1:PORT")
    if server.metrics_port is not None:
        line = line.replace(f"127.0.0.1:{server.metrics_port}", "127.0.0.1:METRICS_PORT")
    return line.replace(str(server.control.parent), "TMP").replace(f"bench-{_SELF}-", "bench-PID-")


@contextlib.contextmanager
def running_pair(ctx: Context, pair: Sequence[Server]) -> Iterator[None]:
    """Start both servers at once (their start-ups overlap), wait until each serves (and, with metrics, answers
    /metrics); always stop them."""
    with contextlib.ExitStack() as stack:
        for s in pair:
            name = s.control.name.removesuffix(".sock")
            s.running = stack.enter_context(procs.running(s.argv, cwd=BENCH_APPS, env=server_env(BENCH_APPS),
                                                          log=ctx.logs / f"{name}.log", stop_timeout=STOP_TIMEOUT))
        for s in pair:
            assert s.running is not None
            procs.wait_ready(s.running, s.port, s.app.body, READY_TIMEOUT)
            if s.metrics_port is not None:
                wait_metrics(s.running, s.metrics_port)
        yield


def wait_metrics(running: procs.Running, port: int) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if running.proc.poll() is not None:
            raise procs.ServerFailed(f"exited with code {running.proc.returncode}:\n{running.log_tail()}")
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2.0)
            try:
                conn.request("GET", "/metrics")
                if conn.getresponse().status == 200:
                    return
            finally:
                conn.close()
        time.sleep(0.02)
    raise procs.ServerFailed(f"/metrics on port {port} did not answer 200:\n{running.log_tail()}")


# 1. Cost: alternating rounds.


@dataclass
class Row:
    app: App
    policy: str
    mode: str
    samples: dict[str, list[Measured[Sample]]] = field(default_factory=lambda: {s: [] for s in STATES})

    def rps(self, state: str) -> float | None:
        return _median([m.result.load.rps for m in self.samples[state]])

    def us(self, state: str) -> float | None:
        return _median([m.result.us_per_request for m in self.samples[state]])

    def errors(self, state: str) -> int:
        return sum(m.result.load.errors for m in self.samples[state])

    def disturbed(self, state: str) -> bool:
        return any(m.disturbed for m in self.samples[state])

    def _paired(self, value: Callable[[Sample], float | None]) -> list[tuple[float, float]]:
        """(off, on) of each round: the two were measured back to back, so a ratio of a pair cancels most of
        what the machine's other jobs did to that round."""
        pairs = zip(self.samples["off"], self.samples["on"], strict=True)  # every round measures both
        found = [(value(off.result), value(on.result)) for off, on in pairs]
        return [(a, b) for a, b in found if a is not None and b is not None]

    @property
    def rps_ratio(self) -> float | None:
        """The median over rounds of req/s on / off."""
        return _median([on / off for off, on in self._paired(lambda s: s.load.rps) if off])

    @property
    def capacity_ratio(self) -> float | None:
        """The median over rounds of CPU per request off / on: the throughput on over off of a server that is
        CPU-bound."""
        return _median([off / on for off, on in self._paired(lambda s: s.us_per_request) if on])

    def as_json(self) -> dict[str, Any]:
        return {"app": self.app.key, "policy": self.policy, "mode": self.mode,
                "rps": {s: self.rps(s) for s in STATES}, "cpu_us_per_request": {s: self.us(s) for s in STATES},
                "rps_ratio": self.rps_ratio, "capacity_ratio": self.capacity_ratio,
                "rounds": {s: [{"rps": m.result.load.rps, "requests": m.result.load.requests,
                                "errors": m.result.load.errors, "cpu_s": m.result.cpu_s,
                                "elsewhere_cores": m.cpu.elsewhere_cores} for m in self.samples[s]]
                           for s in STATES}}


def _median(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return statistics.median(known) if known else None


def measure_rounds(ctx: Context, pair: Sequence[Server], sp: Spans) -> list[Row]:
    rows = {mode: Row(pair[0].app, pair[0].policy, mode) for mode in MODES}
    for s in pair:  # every worker has served, caches and allocators have settled
        ctx.client.run(LoadSpec(f"http://127.0.0.1:{s.port}/", sp.warmup, CONNECTIONS, close=False))
    for r in range(sp.rounds):
        order = list(pair) if r % 2 == 0 else list(reversed(pair))
        for mode in MODES:
            for s in order:
                procs.wait_idle(s.pid)  # the last load's leftovers must not count against this one
                spec = LoadSpec(f"http://127.0.0.1:{s.port}/", sp.load, CONNECTIONS, close=mode == "close")
                m = steady(ctx.patience, s.pid, sp.load, _bind(timed, ctx, spec, s.pid))
                rows[mode].samples[s.state].append(m)
                us = m.result.us_per_request
                print(f"[metrics] round {r + 1}/{sp.rounds} {s.app.title} / {s.title}, {mode}:"
                      f" {m.result.load.rps:,.0f} req/s, {fmt(us, '.0f')} µs CPU/req,"
                      f" elsewhere {m.cpu.elsewhere_cores:.2f} cores", file=sys.stderr, flush=True)
    return list(rows.values())


def _bind(f: Callable[[Context, LoadSpec, int], Sample], ctx: Context, spec: LoadSpec, sid: int) -> Callable[[],
                                                                                                          Sample]:
    return lambda: f(ctx, spec, sid)


# 2. Stalls: the load alone, and with the side calls.


@dataclass
class Stall:
    app: App
    alone: list[LoadResult] = field(default_factory=list)
    with_calls: list[LoadResult] = field(default_factory=list)
    latencies_ms: dict[str, list[float]] = field(default_factory=dict)
    failures: dict[str, list[str]] = field(default_factory=dict)

    def p99(self, loads: Sequence[LoadResult]) -> float | None:
        return _median([r.p99_ms for r in loads])

    @property
    def p99_ratio(self) -> float | None:
        alone, with_calls = self.p99(self.alone), self.p99(self.with_calls)
        return with_calls / alone if alone and with_calls is not None else None

    def as_json(self) -> dict[str, Any]:
        return {"app": self.app.key, "alone": [r.__dict__ for r in self.alone],
                "with_calls": [r.__dict__ for r in self.with_calls], "latencies_ms": self.latencies_ms,
                "failures": self.failures}


def measure_stall(ctx: Context, server: Server, sp: Spans) -> Stall:
    stall = Stall(server.app)
    spec = LoadSpec(f"http://127.0.0.1:{server.port}/", sp.stall, CONNECTIONS, close=True)
    for r in range(sp.stall_rounds):
        for with_calls in ((False, True) if r % 2 == 0 else (True, False)):
            procs.wait_idle(server.pid)
            if not with_calls:
                stall.alone.append(ctx.client.run(spec))
                continue
            assert server.metrics_port is not None
            latencies, failures, load = with_side_calls(ctx, server, lambda: ctx.client.run(spec))
            stall.with_calls.append(load)
            for kind, values in latencies.items():
                stall.latencies_ms.setdefault(kind, []).extend(values)
            for kind, errors in failures.items():
                stall.failures.setdefault(kind, []).extend(errors)
    print(f"[metrics] stalls, {server.app.title}: load p99 {fmt(stall.p99(stall.alone), '.1f')} ms alone,"
          f" {fmt(stall.p99(stall.with_calls), '.1f')} ms with side calls", file=sys.stderr, flush=True)
    return stall


def with_side_calls(ctx: Context, server: Server,
                    load: Callable[[], LoadResult]) -> tuple[dict[str, list[float]], dict[str, list[str]], LoadResult]:
    """``load()`` while bench/sidecalls.py calls the server every SIDE_INTERVAL; its latencies and failures."""
    argv = [ctx.python, str(BENCH / "sidecalls.py"), "--metrics", f"127.0.0.1:{server.metrics_port}",
            "--control", str(server.control), "--interval", str(SIDE_INTERVAL)]
    side = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert side.stdout is not None and side.stdin is not None
        if side.stdout.readline().strip() != "ready":
            raise RuntimeError("sidecalls.py did not start")
        result = load()
        side.stdin.close()
        out = side.stdout.readline()
        side.wait(30)
    finally:
        if side.poll() is None:
            side.kill()
            side.wait()
    data = json.loads(out)
    return data["latencies_ms"], data["failures"], result


# The section.


def run(ctx: Context) -> Output:
    workers = ctx.workers or 2
    sp = spans(ctx)
    apps = choose_apps(ctx)
    missing = [n for n in ("clusterrun", "prometheus_client") if not ctx.versions.get(n)]
    if missing:
        raise SystemExit(f"--section metrics needs {', '.join(missing)} in the servers' interpreter"
                         " (pip install 'clusterrun[metrics]')")
    inproc = measure_inproc(ctx, sp)
    rows: list[Row] = []
    stalls: list[Stall] = []
    commands: dict[str, str] = {}
    failures: list[str] = []
    for app in apps:
        if not ctx.versions.get(app.requires[0]):
            ctx.notes.append(f"{app.title} skipped: {app.requires[0]} not installed")
            continue
        for policy in sp.policies:
            pair = [make_server(ctx, app, policy, state, workers) for state in STATES]
            for s in pair:
                commands.setdefault(f"{s.title}", command_line(s))
            try:
                with running_pair(ctx, pair):
                    rows += measure_rounds(ctx, pair, sp)
                    if policy == "rr":
                        stalls.append(measure_stall(ctx, pair[1], sp))
            except (procs.ServerFailed, OSError, RuntimeError, ValueError) as exc:
                failures.append(f"{app.title} / clusterrun {policy}: {exc}")
                print(f"[metrics] {app.title} / clusterrun {policy}: FAILED {str(exc).splitlines()[0]}",
                      file=sys.stderr, flush=True)
    return report(ctx, rows, stalls, inproc, commands, failures, workers, sp)


def measure_inproc(ctx: Context, sp: Spans) -> dict[str, Any]:
    """bench/metricsinproc.py in the servers' interpreter: {"added_us": ...} or {"error": ...}."""
    argv = [ctx.python, str(BENCH / "metricsinproc.py"), str(sp.inproc_rounds), str(sp.inproc_s)]
    out = subprocess.run(argv, cwd=BENCH_APPS, env=server_env(BENCH_APPS), capture_output=True, text=True,
                         timeout=120, check=False, stdin=subprocess.DEVNULL)
    try:
        data: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        data = {"error": f"metricsinproc.py failed ({out.returncode}): {out.stderr.strip()[-300:]}"}
    if "error" in data:
        ctx.notes.append(f"no in-process measurement: {data['error']}")
    else:
        print(f"[metrics] in process: raw ASGI hello {data['plain_us']:.2f} µs/call alone,"
              f" {data['observed_us']:.2f} wrapped: --metrics adds {data['added_us']:.2f} µs per request",
              file=sys.stderr, flush=True)
    return data


def choose_apps(ctx: Context) -> tuple[App, ...]:
    if not ctx.apps:
        return SECTION_APPS
    wanted = {w.strip() for w in ctx.apps.split(",") if w.strip()}
    known = {a.key for a in SECTION_APPS}
    if wanted - known:
        raise SystemExit(f"--apps: unknown {', '.join(sorted(wanted - known))}; known here: {', '.join(known)}")
    return tuple(a for a in SECTION_APPS if a.key in wanted)


def report(ctx: Context, rows: Sequence[Row], stalls: Sequence[Stall], inproc: dict[str, Any],
           commands: dict[str, str], failures: Sequence[str], workers: int, sp: Spans) -> Output:
    added: float | None = inproc.get("added_us")
    settings = (f"{workers} workers, {CONNECTIONS} connections, {sp.rounds} alternating rounds of {sp.load:g} s per"
                f" server and mode after {sp.warmup:g} s of warm-up, by {ctx.client.name}; stalls: {sp.stall_rounds}"
                f" alternating rounds of {sp.stall:g} s loads alone and with side calls (medians), side calls every"
                f" {SIDE_INTERVAL * 1000:.0f} ms; server CPU from the kernel's per-process CPU clocks (primary and"
                " workers)")
    body = ["", "## Cost of --metrics (medians over rounds; on/off: the median of each round's ratio)", "",
            "| app | policy | mode | req/s off | req/s on | req/s on/off | CPU µs/req off | CPU µs/req on"
            " | capacity on/off | errors off/on | verdict | in-process estimate |",
            "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: |"]
    for r in rows:
        cap = r.capacity_ratio
        verdict = "-" if cap is None else ("PASS" if cap >= TARGET else "MISS")
        body.append(f"| {r.app.title} | {r.policy} | {r.mode} | {fmt(r.rps('off'), ',.0f', dagger(r.disturbed('off')))}"
                    f" | {fmt(r.rps('on'), ',.0f', dagger(r.disturbed('on')))} | {fmt(r.rps_ratio, '.3f')}"
                    f" | {fmt(r.us('off'), '.0f')} | {fmt(r.us('on'), '.0f')} | {fmt(cap, '.3f')}"
                    f" | {r.errors('off')}/{r.errors('on')} | {verdict} | {fmt(estimate(r, added), '.3f')} |")
    body += ["", f"capacity on/off = CPU µs per request off / on, each round's (off and on were measured back to back),"
                 " the median over rounds: the throughput with metrics on over off of a"
                 f" server that is CPU-bound. The verdict uses it (target >= {TARGET}): the Python load client shares"
                 " the 2 cores and is the bottleneck, so req/s on/off mostly measures the client."]
    if added is not None:
        body += ["", f"In process (bench/metricsinproc.py, {sp.inproc_rounds} alternating rounds): raw ASGI hello"
                     f" costs {inproc['plain_us']:.2f} µs per call alone and {inproc['observed_us']:.2f} µs inside"
                     f" the wrapper --metrics adds to each worker, so --metrics adds {added:.2f} µs of CPU per"
                     " request, whatever the app. In-process estimate = CPU µs/req off / (off + that): the capacity"
                     " on/off it predicts, without the served measurement's noise."]
    if any(r.disturbed(s) for r in rows for s in STATES):
        body += ["", DAGGER_NOTE]
    body += ["", "## Status and metrics calls during full load (metrics on, rr, a new connection per request)", "",
             "| app | side call | calls | failed | p50 ms | p99 ms | max ms |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for st in stalls:
        for kind in ("metrics", "status"):
            lat = st.latencies_ms.get(kind, [])
            body.append(f"| {st.app.title} | {'GET /metrics' if kind == 'metrics' else 'status (control socket)'}"
                        f" | {len(lat)} | {len(st.failures.get(kind, []))} | {fmt(_pct(lat, 50), '.2f')}"
                        f" | {fmt(_pct(lat, 99), '.2f')} | {fmt(max(lat) if lat else None, '.2f')} |")
    body += ["", "| app | load alone: req/s | p50 ms | p99 ms | with side calls: req/s | p50 ms | p99 ms"
                 " | p99 with/alone |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for st in stalls:
        a, w = st.alone, st.with_calls
        body.append(f"| {st.app.title} | {fmt(_median([r.rps for r in a]), ',.0f')}"
                    f" | {fmt(_median([r.p50_ms for r in a]), '.2f')} | {fmt(st.p99(a), '.2f')}"
                    f" | {fmt(_median([r.rps for r in w]), ',.0f')} | {fmt(_median([r.p50_ms for r in w]), '.2f')}"
                    f" | {fmt(st.p99(w), '.2f')} | {fmt(st.p99_ratio, '.2f')} |")
    if failures:
        body += ["", "## Failures", ""] + [f"- `{f}`" for f in failures]
    body += ["", "## Server commands", ""] + [f"- {title}: `{line}`" for title, line in commands.items()]
    data = {"workers": workers, "connections": CONNECTIONS, "spans": dataclasses.asdict(sp),
            "rows": [r.as_json() for r in rows], "stalls": [s.as_json() for s in stalls], "failures": list(failures)}
    data["inproc"] = inproc
    return Output("clusterrun metrics cost benchmark", settings, body, targets(rows, stalls, added), data)


def estimate(row: Row, added: float | None) -> float | None:
    off = row.us("off")
    return off / (off + added) if off and added is not None else None


def _pct(values: Sequence[float], pct: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def targets(rows: Sequence[Row], stalls: Sequence[Stall], added: float | None) -> list[str]:
    lines = []
    for r in rows:
        cap = r.capacity_ratio
        where = f"{r.app.title}, {r.policy}, {r.mode}"
        disturbed = " [disturbed by other jobs]" if r.disturbed("on") or r.disturbed("off") else ""
        if cap is None:
            lines.append(f"SKIP  {where}: not measured")
            continue
        lines.append(f"{'PASS' if cap >= TARGET else 'MISS'}  {where}: metrics on/off capacity {cap:.3f}x"
                     f" (CPU {fmt(r.us('off'), '.0f')} -> {fmt(r.us('on'), '.0f')} µs/req; req/s on/off"
                     f" {fmt(r.rps_ratio, '.3f')}x){disturbed}, target >= {TARGET}x")
        if (guess := estimate(r, added)) is not None:
            lines.append(f"INFO  {where}: in-process estimate {guess:.3f}x ({fmt(r.us('off'), '.0f')} µs/req off"
                         f" + {added:.2f} µs the metrics add)")
    for st in stalls:
        calls = [v for kind in ("metrics", "status") for v in st.latencies_ms.get(kind, [])]
        failed = sum(len(v) for v in st.failures.values())
        worst = max(calls) if calls else None
        ratio = st.p99_ratio
        ok = calls and not failed and worst is not None and worst < SIDE_INTERVAL * 1000 and ratio is not None \
            and ratio <= STALL_P99
        lines.append(f"{'PASS' if ok else 'MISS'}  {st.app.title}, rr, new connection per request: {len(calls)} side"
                     f" calls, {failed} failed, slowest {fmt(worst, '.1f')} ms; load p99 with/alone"
                     f" {fmt(ratio, '.2f')}x; target: every call answered within {SIDE_INTERVAL * 1000:.0f} ms"
                     f" and p99 with/alone <= {STALL_P99}x")
    return lines
