"""The syscalls section (issue 24, items 1 and 2): the system calls one worker makes per request.

    python bench/run.py --section syscalls           # about 45 s on 2 cores
    python bench/run.py --section syscalls --quick   # about 30 s

Each server runs raw WSGI hello (``--apps flask`` for Flask hello) with ONE worker, so that every request of the
run is that worker's own: clusterrun on its default policy (read from the servers' clusterrun) and on shared,
uWSGI (``--http11-socket`` for keep-alive, ``--http-socket`` for a new connection per request: the one that serves
that load, as in the main run) and granian. After a warm-up with nothing attached, ``strace -f -c -q -p WORKER``
(every thread of the worker) counts the calls while the load generator runs, 16 connections, 2 s (quick: 1 s),
keep-alive and then a new connection per request; a second strace counts the server's main process the same way
(clusterrun's primary accepts and hands over every connection under rr; the others' main processes only
supervise). strace is stopped (SIGINT: it detaches and writes its summary) once the load generator has finished
and the server is idle. Each count is divided by the requests the load generator completed: the few requests a
worker was still answering when the client closed (at most one per connection) are counted in the calls but
not in the requests, well under 1% here.

strace stops the tracee at every system call, so a traced server is many times slower and its batching differs
(fewer requests arrive per wake-up): the counts per request are what a server does under a light load, an upper
bound for a saturated one, and the report gives counts only, never times.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
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
    choose,
    command_line,
    dagger,
    default_policy,
    measure,
    started_bench_app,
    worker_pids,
)
from servers import APPS, SERVERS, App, Server, clusterrun_server

WSGI_APPS = tuple(a for a in APPS if a.key in ("wsgi", "flask"))
WORKERS = 1
CONNECTIONS = 16
MODES = ("keep-alive", "close")
SHOWN = 0.01  # calls per request below this in every column are summed into "other"
ATTACH_TIMEOUT = 5.0
DETACH_TIMEOUT = 10.0


@dataclass(frozen=True)
class Durations:
    warmup: float
    load: float


def durations(ctx: Context) -> Durations:
    if ctx.duration:
        return Durations(1.0, ctx.duration)
    # wrk counts whole seconds: the warm-up stays at 1 s in quick mode too.
    return Durations(1.0, 1.0) if ctx.quick else Durations(1.0, 2.0)


@dataclass(frozen=True)
class Counts:
    """One strace -c summary: calls and failed calls per system call name."""

    calls: dict[str, int]
    errors: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    @property
    def failed(self) -> int:
        return sum(self.errors.values())


@dataclass(frozen=True)
class Traced:
    load: LoadResult
    worker: Counts
    main: Counts | None  # None: the worker is the main process (a server without a separate worker process)


@dataclass
class Trial:
    app: App
    server: Server
    worker_pid: int | None = None
    runs: dict[str, Measured[Traced]] = field(default_factory=dict)
    error: str | None = None

    def per_request(self, mode: str) -> dict[str, float] | None:
        """The worker's calls per request, by name; None when this load was not measured."""
        run = self.runs.get(mode)
        if run is None or not run.result.load.requests:
            return None
        return _per_request(run.result.worker, run.result.load)

    def as_json(self) -> dict[str, Any]:
        return {"app": self.app.key, "server": self.server.key, "worker_pid": self.worker_pid, "error": self.error,
                "runs": {mode: {"load": dataclasses.asdict(m.result.load),
                                "worker": dataclasses.asdict(m.result.worker),
                                "main": dataclasses.asdict(m.result.main) if m.result.main else None,
                                "elsewhere_cores": m.cpu.elsewhere_cores}
                         for mode, m in self.runs.items()}}


def catalogue(ctx: Context) -> tuple[Server, ...]:
    """clusterrun's default policy and shared, uWSGI's two sockets (each serves one of the loads), granian."""
    policy = default_policy(ctx)
    clusterrun = [clusterrun_server(policy)] + ([clusterrun_server("shared")] if policy != "shared" else [])
    peers = [s for key in ("uwsgi", "uwsgi-close", "granian") for s in SERVERS if s.key == key]
    return (*clusterrun, *peers)


def run(ctx: Context) -> Output:
    if not shutil.which("strace"):
        raise SystemExit("--section syscalls needs strace on PATH (apt-get install strace)")
    if ctx.workers not in (None, WORKERS):
        raise SystemExit(f"--workers {ctx.workers}: the syscalls section runs one worker per server, so that every"
                         " request is that worker's own; leave --workers out")
    spans = durations(ctx)
    servers = catalogue(ctx)
    pairs = choose_pairs(ctx, servers)
    trials = []
    for app, server in pairs:
        trial = run_trial(ctx, app, server, spans)
        print(progress(trial), flush=True, file=sys.stderr)
        trials.append(trial)
    return report(ctx, trials, pairs, spans, servers[0])


def choose_pairs(ctx: Context, servers: Sequence[Server]) -> list[tuple[App, Server]]:
    """``--apps wsgi,flask`` picks among this section's two apps (default: raw WSGI hello alone)."""
    apps: tuple[App, ...] = WSGI_APPS[:1]
    if ctx.apps:
        wanted = {w.strip() for w in ctx.apps.split(",") if w.strip()}
        if wanted - {a.key for a in WSGI_APPS}:
            raise SystemExit(f"--apps: unknown {', '.join(sorted(wanted - {a.key for a in WSGI_APPS}))};"
                             f" known here: {', '.join(a.key for a in WSGI_APPS)}")
        apps = tuple(a for a in WSGI_APPS if a.key in wanted)
    # choose() filters --apps against the sample apps: give it none, and the apps chosen here as its default.
    return choose(dataclasses.replace(ctx, apps=None), servers, apps)


def run_trial(ctx: Context, app: App, server: Server, spans: Durations) -> Trial:
    trial = Trial(app, server)
    try:
        with started_bench_app(ctx, app, server, WORKERS, f"syscalls-{app.key}-{server.key}") as live:
            trial.worker_pid = worker = the_worker(live.pid)
            url = f"http://127.0.0.1:{live.port}/"
            for mode in (m for m in MODES if m in server.modes):
                ctx.client.run(LoadSpec(url, spans.warmup, CONNECTIONS, close=mode == "close"))
                procs.wait_idle(live.pid)
                spec = LoadSpec(url, spans.load, CONNECTIONS, close=mode == "close")
                trial.runs[mode] = measure(live.pid, functools.partial(traced, ctx, spec, live.pid, worker))
    except (procs.ServerFailed, OSError, RuntimeError, ValueError) as exc:
        trial.error = str(exc)
    return trial


def the_worker(main: int) -> int:
    """The server's one worker process (a child of its main process); the main process itself if it has none.
    Called once the server has answered: a worker that serves exists by then."""
    pids = worker_pids(main)
    if len(pids) > 1:
        raise RuntimeError(f"expected one worker process under pid {main}, found {len(pids)}: {pids}")
    return pids[0] if pids else main


def traced(ctx: Context, spec: LoadSpec, main: int, worker: int) -> Traced:
    """One load run with strace counting the worker's calls, and the main process's when it is another one."""
    with tempfile.TemporaryDirectory(prefix="clusterrun-bench-strace-") as tmp:
        with contextlib.ExitStack() as stack:
            on_worker = stack.enter_context(strace(worker, Path(tmp) / "worker.txt"))
            on_main = stack.enter_context(strace(main, Path(tmp) / "main.txt")) if main != worker else None
            load = ctx.client.run(spec)
            # The worker answers what its connections still had in flight: count those calls, then detach.
            procs.wait_idle(main)
        return Traced(load, parse(on_worker.read_text()), parse(on_main.read_text()) if on_main else None)


@contextlib.contextmanager
def strace(pid: int, out: Path) -> Iterator[Path]:
    """``strace -f -c`` attached to every thread of ``pid`` for the duration of the block; its summary's path.

    Attached means every thread's TracerPid is strace's: calls made before that would be missed."""
    argv = ["strace", "-f", "-c", "-q", "-U", "calls,errors,name", "-o", str(out), "-p", str(pid)]
    with open(out.with_suffix(".log"), "wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_attached(pid, proc)
        yield out
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # strace detaches and writes its summary
        try:
            proc.wait(DETACH_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if not out.exists() or proc.returncode not in (0, -signal.SIGINT):
        log_text = out.with_suffix(".log").read_text(errors="replace").strip()
        raise RuntimeError(f"strace -p {pid} exited with {proc.returncode}: {log_text[-300:] or 'no output'}")


def wait_attached(pid: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + ATTACH_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return  # it failed to attach: the caller reports its output
        tracers = set()
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                for line in (task / "status").read_text().splitlines():
                    if line.startswith("TracerPid:"):
                        tracers.add(int(line.split()[1]))
        if tracers == {proc.pid}:
            return
        time.sleep(0.01)
    raise RuntimeError(f"strace did not attach to every thread of pid {pid} within {ATTACH_TIMEOUT:g} s")


def parse(text: str) -> Counts:
    """strace -c -U calls,errors,name: a header, dashes, one line per call (errors blank when none), dashes,
    total. Lines strace adds about itself (e.g. "System call usage summary for 32 bit mode") are skipped."""
    calls: dict[str, int] = {}
    errors: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts[:-1]) or parts[-1] == "total":
            continue
        name = parts[-1]
        calls[name] = calls.get(name, 0) + int(parts[0])
        if len(parts) == 3:
            errors[name] = errors.get(name, 0) + int(parts[1])
    return Counts(calls, errors)


def progress(trial: Trial) -> str:
    head = f"[syscalls] {trial.app.title} / {trial.server.title}:"
    if trial.error:
        return f"{head} FAILED {trial.error.splitlines()[0]}"
    parts = []
    for mode, m in trial.runs.items():
        n = m.result.load.requests
        parts.append(f"{mode} {n:,} requests, {m.result.worker.total / n if n else 0:.1f} calls each")
    return f"{head} {', '.join(parts)}"


def report(ctx: Context, trials: Sequence[Trial], pairs: Sequence[tuple[App, Server]], spans: Durations,
           default: Server) -> Output:
    settings = (f"{WORKERS} worker per server, {CONNECTIONS} connections, {spans.load:g} s traced by"
                f" {ctx.client.name} after {spans.warmup:g} s of warm-up untraced; `strace -f -c` on the worker"
                f" and on the main process; clusterrun's default policy: {default.title.removeprefix('clusterrun ')}")
    body: list[str] = []
    for app in dict.fromkeys(a for a, _ in pairs):
        mine = [t for t in trials if t.app is app]
        for mode in MODES:
            body += table(app, mode, [t for t in mine if mode in t.server.modes], spans)
    body += ["", "Calls per request: each system call's count over the run, divided by the requests the load"
                 " generator completed. Worker: the one worker process, all its threads. Main process: clusterrun's"
                 " primary, uWSGI's master, granian's main process. strace stops the server at every call, so the"
                 " counts are those of a lightly loaded server (fewer requests per wake-up than at full load):"
                 f" compare servers, not runs. Calls under {SHOWN} per request in every column are summed into"
                 " \"other\"."]
    failed = [t for t in trials if t.error]
    if failed:
        body += ["", "## Failures", ""] + [f"- {t.app.title} / {t.server.title}: `{t.error}`" for t in failed]
    body += ["", "## Server commands", ""]
    body += [f"- {s.title} ({a.title}): `{command_line(ctx.python, a, s, WORKERS)}`" for a, s in pairs]
    data = {"workers": WORKERS, "connections": CONNECTIONS, "durations": spans.__dict__,
            "default_policy": default.key, "trials": [t.as_json() for t in trials]}
    return Output("clusterrun system calls per request", settings, body, targets(trials, default), data)


def table(app: App, mode: str, trials: Sequence[Trial], spans: Durations) -> list[str]:
    load = "keep-alive" if mode == "keep-alive" else "a new connection per request"
    lines = ["", f"## {app.title}, {load}: system calls per request of one worker", ""]
    measured = [t for t in trials if t.per_request(mode) is not None]
    failed = [t for t in trials if t.per_request(mode) is None]
    if not measured:
        return [*lines, "No server was measured" + (f" (failed: {', '.join(t.server.title for t in failed)})"
                                                    if failed else "") + "."]
    runs = [t.runs[mode] for t in measured]
    titles = [t.server.title for t in measured]
    failures = [_cell(m.result.worker.failed / m.result.load.requests) for m in runs]
    lines += _calls_rows(titles, [_per_request(m.result.worker, m.result.load) for m in runs])
    lines += [f"| of which failed (EAGAIN, ...) | {' | '.join(failures)} |",
              f"| main process, total per request | {' | '.join(_main_cell(m) for m in runs)} |",
              f"| requests traced | {' | '.join(f'{m.result.load.requests:,}{dagger(m.disturbed)}' for m in runs)} |"]
    mains = [_per_request(m.result.main, m.result.load) if m.result.main else {} for m in runs]
    if any(sum(per.values()) >= SHOWN for per in mains):
        # A main process that works per request (clusterrun's primary under rr: accept, hand over): its calls.
        lines += ["", "The main process, on the same runs (per request):", ""]
        lines += _calls_rows(titles, mains)
    if failed:
        lines += ["", "Failed: " + "; ".join(f"{t.server.title}: {(t.error or 'not measured').splitlines()[0]}"
                                             for t in failed)]
    if any(m.disturbed for m in runs):
        lines += ["", DAGGER_NOTE]
    return lines


def _per_request(counts: Counts, load: LoadResult) -> dict[str, float]:
    return {name: calls / load.requests for name, calls in counts.calls.items()}


def _calls_rows(titles: Sequence[str], columns: Sequence[dict[str, float]]) -> list[str]:
    """Header, one row per system call (most frequent first), "other" for the rare ones, and the total."""
    def most(name: str) -> float:
        return max(per.get(name, 0.0) for per in columns)

    names = sorted({n for per in columns for n in per}, key=lambda n: (-most(n), n))
    shown = [n for n in names if most(n) >= SHOWN]
    hidden = [n for n in names if n not in shown]
    lines = [f"| system call | {' | '.join(titles)} |", "| --- |" + " ---: |" * len(titles)]
    lines += [f"| {name} | {' | '.join(_cell(per.get(name)) for per in columns)} |" for name in shown]
    if hidden:
        rest = [_cell(sum(per.get(n, 0.0) for n in hidden) or None) for per in columns]
        lines.append(f"| other ({len(hidden)} kinds) | {' | '.join(rest)} |")
    totals = [f"**{sum(per.values()):.2f}**" for per in columns]
    return [*lines, f"| **total** | {' | '.join(totals)} |"]


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _main_cell(m: Measured[Traced]) -> str:
    main = m.result.main
    return "(is the worker)" if main is None else _cell(main.total / m.result.load.requests)


def targets(trials: Sequence[Trial], default: Server) -> list[str]:
    """INFO lines: the default policy's calls per request (worker, and main process) against uWSGI's and
    granian's, per load. Issue 24 sets no figure for them: they say where the kernel time goes."""
    lines = []
    for mode in MODES:
        found = {t.server.key: t for t in trials if mode in t.runs and t.per_request(mode) is not None}
        ours = found.get(default.key)
        if ours is None:
            continue
        for key, t in found.items():
            if key == default.key:
                continue
            mine, theirs = (_all_calls(x.runs[mode]) for x in (ours, t))
            ratio = f"{mine / theirs:.2f}x" if theirs else "-"
            lines.append(f"INFO  {ours.app.title}, {mode}: {default.title} {mine:.2f} system calls per request"
                         f" (worker and main process) = {ratio} {t.server.title}'s {theirs:.2f}")
    return lines


def _all_calls(m: Measured[Traced]) -> float:
    n = m.result.load.requests
    main = m.result.main.total if m.result.main else 0
    return (m.result.worker.total + main) / n if n else 0.0

