"""The reload section (issue 5): requests failed during a rolling restart, and respawn time after a SIGKILL.

    python bench/run.py --section reload           # 1 to 2.5 minutes on 2 cores, by how busy it is
    python bench/run.py --section reload --quick   # 2 workers, one kill per server

Each server runs the Starlette sample with 4 workers (on 2 cores: the point is
several workers to replace, not throughput). While the tagged client loads it
(4 keep-alive and 4 new-connection loops, 90% ``/`` and 10% ``/heavy``), the
server gets its reload signal; the load goes on until the reload is complete
and one second more. Every request is accounted for: answered, refused, dropped
(on a fresh or on a reused keep-alive connection), timed out, or answered with
an error status. Then, on the same server, the oldest worker is SIGKILLed 3
times (a different slot each time, so that the restart backoff stays at its first delay) and a light
probe measures how long until a new worker answers.

Reload signals, as each server documents and implements them (checked in the
installed source, see ``reload_support``): clusterrun, gunicorn, uvicorn
--workers (0.30+) and granian all take SIGHUP. Done: when every worker pid has
changed, and for clusterrun its log line "rolling restart complete" too.
"""

from __future__ import annotations

import asyncio
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import tagged
from sections import (
    CLUSTERRUN,
    PEERS,
    STARLETTE,
    Context,
    Live,
    Output,
    choose,
    command_line,
    dagger,
    fmt,
    kill,
    measure,
    started,
    wait_workers,
    worker_pids,
)
from servers import App, Server

LEAD_IN = 1.0  # seconds of load before the reload signal: every loop is connected and the workers are warm
TAIL = 1.0  # seconds of load after the reload is complete: failures that trail the reload are counted too
RELOAD_TIMEOUT = 90.0  # granian waits 3.5 s between workers: 4 workers on a busy 2-core box take 20 s or more
RESPAWN_TIMEOUT = 30.0
SETTLE = 0.5  # seconds between the workers being all back and the next kill
# clusterrun sticky routes every connection from 127.0.0.1 to one slot: when another slot is killed, the probe
# never meets its replacement. Once clusterrun has logged "is serving", the probe gets this long, then the log
# line's time stands for the answer.
LOG_GRACE = 1.0
MIX = ("/",) * 9 + ("/heavy",)
POLL = 0.02  # seconds between looks at the log or the process table

# granian exits when a worker dies unless told to respawn it (granian/server/common.py, _serve_loop): the reload
# section runs it with --respawn-failed-workers, so that the respawn can be measured at all.
GRANIAN_RESPAWN = "--respawn-failed-workers"


def _granian_respawning(peer: Server) -> Server:
    def command(target: Any) -> list[str]:
        argv = peer.command(target)
        return [*argv[:-1], GRANIAN_RESPAWN, argv[-1]]  # options before the app argument

    return Server(peer.key, peer.family, f"{peer.title} {GRANIAN_RESPAWN}", peer.interfaces, peer.requires, command)


SERVERS = (*CLUSTERRUN, *(_granian_respawning(p) if p.family == "granian" else p for p in PEERS
                          if p.key in ("uvicorn", "gunicorn-uvicorn", "granian")))

# How each peer's installed source handles SIGHUP: a snippet run in the servers' interpreter prints what it found.
_SUPPORT = {
    "uvicorn": "from uvicorn.supervisors.multiprocess import Multiprocess as M\n"
               "print('Multiprocess.handle_hup -> restart_all' if hasattr(M, 'handle_hup') else '')",
    "gunicorn": "from gunicorn.arbiter import Arbiter as A\n"
                "print('Arbiter.handle_hup -> reload' if hasattr(A, 'handle_hup') else '')",
    "granian": "import inspect, granian._signals as s, granian.server.common as c\n"
               "ok = 'SIGHUP' in inspect.getsource(s.set_main_signals) and '_reload' in inspect.getsource(c)\n"
               "print('_signals.set_main_signals(SIGHUP) -> AbstractServer._reload' if ok else '')",
}


def reload_support(python: str, family: str) -> str:
    """Where the installed server handles SIGHUP, or "" when it does not."""
    if family == "clusterrun":
        return "SIGHUP: rolling restart (README, Signals)"
    out = subprocess.run([python, "-c", _SUPPORT[family]], capture_output=True, text=True, timeout=60, check=False)
    return out.stdout.strip()


@dataclass
class ReloadRun:
    took_s: float | None  # signal to completion; None: not complete within RELOAD_TIMEOUT, or aborted
    outcome: str  # "complete", or what went wrong
    tally: tagged.Tally
    signal_at: float  # time.monotonic()
    elsewhere_cores: float = 0.0  # cores busy with other jobs meanwhile (lead-in, reload and tail)

    @property
    def failures_window(self) -> tuple[float, float] | None:
        """Seconds after the signal of the first and the last failure (None when nothing failed)."""
        times = self.tally.failure_times
        return (min(times) - self.signal_at, max(times) - self.signal_at) if times else None


@dataclass
class Respawn:
    serving_s: float | None  # SIGKILL to the first answer from a new worker (or to the log line: see from_log)
    from_log: bool  # no answer from the new worker (sticky: the probe's address hashes to another slot)
    process_s: float | None  # SIGKILL to a new worker process in the process table
    logged_s: float | None  # SIGKILL to clusterrun's "is serving" line (clusterrun only)
    probe_errors: int


@dataclass
class Trial:
    app: App
    server: Server
    support: str
    workers: int
    startup_s: float | None = None
    reload: ReloadRun | None = None
    respawns: list[Respawn] = field(default_factory=list)
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        reload_data = None
        if self.reload:
            r, t = self.reload, self.reload.tally
            reload_data = {"took_s": r.took_s, "outcome": r.outcome, "requests": t.requests, "ok": t.ok,
                           "failed": t.failed, "connect_errors": t.connect_errors, "dropped_fresh": t.dropped_fresh,
                           "dropped_reused": t.dropped_reused, "timeouts": t.timeouts, "statuses": dict(t.statuses),
                           "failures_window_s": r.failures_window, "elapsed_s": t.elapsed,
                           "elsewhere_cores": r.elsewhere_cores}
        return {"app": self.app.key, "server": self.server.key, "reload_support": self.support,
                "workers": self.workers, "startup_s": self.startup_s, "reload": reload_data,
                "respawns": [r.__dict__ for r in self.respawns], "error": self.error}


def run(ctx: Context) -> Output:
    workers = ctx.workers or (2 if ctx.quick or (os.cpu_count() or 1) < 2 else 4)
    kills = 1 if ctx.quick else 3
    pairs = choose(ctx, SERVERS, (STARLETTE,))
    support = {family: reload_support(ctx.python, family) for family in dict.fromkeys(s.family for _, s in pairs)}
    trials = []
    for app, server in pairs:
        trial = run_trial(ctx, app, server, workers, kills, support[server.family])
        print(progress(trial), flush=True, file=sys.stderr)
        trials.append(trial)
    return report(ctx, trials, pairs, workers, kills, support)


def run_trial(ctx: Context, app: App, server: Server, workers: int, kills: int, support: str) -> Trial:
    trial = Trial(app, server, support, workers)
    try:
        with started(ctx, app, server, workers, f"reload-{app.key}-{server.key}") as live:
            trial.startup_s = live.startup_s
            if len(wait_workers(live.pid, workers, RESPAWN_TIMEOUT)) != workers:
                raise RuntimeError(f"{workers} worker processes expected, found {worker_pids(live.pid)}")
            if support:
                measured = measure(live.pid, lambda: asyncio.run(reload_under_load(live, server, workers)))
                trial.reload = measured.result
                trial.reload.elsewhere_cores = measured.cpu.elsewhere_cores
            for _ in range(kills):
                trial.respawns.append(asyncio.run(respawn(live, server, workers)))
    except Exception as exc:  # one server failing must not cost the others their results
        trial.error = f"{type(exc).__name__}: {exc}"
    return trial


# A rolling restart under load.


async def reload_under_load(live: Live, server: Server, workers: int) -> ReloadRun:
    plan = tagged.Plan("127.0.0.1", live.port, LEAD_IN + RELOAD_TIMEOUT + TAIL + 5, keepalive=4, fresh=4, paths=MIX)
    stop = asyncio.Event()
    load = asyncio.ensure_future(tagged.drive(plan, stop))
    await asyncio.sleep(LEAD_IN)
    before, offset = worker_pids(live.pid), live.log_size()
    signal_at = time.monotonic()
    os.kill(live.pid, signal.SIGHUP)
    outcome = await until_reloaded(live, server, workers, before, offset)
    took = time.monotonic() - signal_at if outcome == "complete" else None
    await asyncio.sleep(TAIL)
    stop.set()
    tally = await load
    return ReloadRun(took, outcome, tally, signal_at)


async def until_reloaded(live: Live, server: Server, workers: int, before: Sequence[int], offset: int) -> str:
    """"complete" once the reload is over: every worker pid has changed (the old ones have exited and as many
    new ones run), and clusterrun has logged "rolling restart complete" (it logs that when the last replacement
    serves; the old workers may still be draining then, and they count until they exit, as the peers' do).
    Else what went wrong."""
    deadline = time.monotonic() + RELOAD_TIMEOUT
    while time.monotonic() < deadline:
        await asyncio.sleep(POLL)
        if live.running.proc.poll() is not None:
            return f"the server exited (code {live.running.proc.returncode})"
        text = live.log_text(offset) if server.family == "clusterrun" else ""
        if "rolling restart aborted" in text:
            return "aborted (see its log)"
        now = worker_pids(live.pid)
        replaced = len(now) == workers and not set(now) & set(before)
        if replaced and (server.family != "clusterrun" or "rolling restart complete" in text):
            return "complete"
    return f"not complete within {RELOAD_TIMEOUT:g} s"


# Respawn after SIGKILL.


async def respawn(live: Live, server: Server, workers: int) -> Respawn:
    """SIGKILL the oldest worker (a slot not killed yet: no restart backoff applies), then probe until a new
    worker answers; meanwhile watch the process table, and clusterrun's log for its "is serving" line."""
    before = await asyncio.to_thread(wait_workers, live.pid, workers, RESPAWN_TIMEOUT)
    if len(before) != workers:
        raise RuntimeError(f"{workers} workers expected before the kill, found {before}")
    await asyncio.sleep(SETTLE)
    offset = live.log_size()
    killed_at = time.monotonic()
    kill(before[0])
    marks: dict[str, float] = {}

    def on_answer(answer: tagged.Answer) -> None:
        if answer.pid is not None and answer.pid not in before and 200 <= answer.status < 400:
            marks.setdefault("serving", answer.at)
            raise tagged.Enough

    # A light probe: 2 loops, each a new connection every ~5 ms, so that it finds the new worker within a few
    # milliseconds without loading the machine the new worker boots on.
    stop = asyncio.Event()
    plan = tagged.Plan("127.0.0.1", live.port, RESPAWN_TIMEOUT, keepalive=0, fresh=2, pause=0.005, timeout=5.0)
    probe = asyncio.ensure_future(tagged.drive(plan, stop, on_answer))
    watch = asyncio.ensure_future(watch_respawn(live, server, before, offset, marks, probe, stop))
    tally = await probe
    await watch

    def since(key: str) -> float | None:
        return marks[key] - killed_at if key in marks else None

    from_log = "serving" not in marks and "logged" in marks
    serving = since("logged") if from_log else since("serving")
    return Respawn(serving, from_log, since("process"), since("logged"), tally.failed)


async def watch_respawn(live: Live, server: Server, before: Sequence[int], offset: int, marks: dict[str, float],
                        probe: asyncio.Future[tagged.Tally], stop: asyncio.Event) -> None:
    while not probe.done():
        now = time.monotonic()
        if "process" not in marks and set(worker_pids(live.pid)) - set(before):
            marks["process"] = now
        if server.family == "clusterrun" and "logged" not in marks and " is serving" in live.log_text(offset):
            marks["logged"] = now
        if "logged" in marks and now - marks["logged"] > LOG_GRACE:
            stop.set()  # the probe cannot reach the new worker (sticky); the log line's time stands
        await asyncio.sleep(POLL / 4)


def progress(trial: Trial) -> str:
    head = f"[reload] {trial.app.title} / {trial.server.title}:"
    parts = []
    if trial.reload:
        r, t = trial.reload, trial.reload.tally
        parts.append(f"reload {r.outcome} in {fmt(r.took_s, '.1f')} s, {t.requests:,} requests, {t.failed} failed")
    elif not trial.support:
        parts.append("no reload signal")
    if trial.respawns:
        parts.append("respawn " + ", ".join(_run_text(r) for r in trial.respawns) + " s")
    if trial.error:
        parts.append(f"FAILED {trial.error.splitlines()[0]}")
    return f"{head} {'; '.join(parts)}"


# The report.


def report(ctx: Context, trials: Sequence[Trial], pairs: Sequence[tuple[App, Server]], workers: int, kills: int,
           support: dict[str, str]) -> Output:
    settings = (f"{workers} workers per server on {os.cpu_count()} cores; reload: the tagged Python client, 4"
                f" keep-alive + 4 new-connection loops, 90% / and 10% /heavy, from {LEAD_IN:g} s before the signal"
                f" to {TAIL:g} s after the reload is complete; respawn: {kills} SIGKILL(s) per server, probed by 2"
                " new-connection loops every 5 ms")
    for family, where in support.items():
        if family != "clusterrun":
            ctx.notes.append(f"{family} {ctx.versions.get(family, '?')}: "
                             + (f"reload signal SIGHUP, found in its source: {where}" if where
                                else "no reload signal found in its source: no zero-downtime reload"))
    if any(s.family == "granian" for _, s in pairs):
        ctx.notes.append(f"granian runs with {GRANIAN_RESPAWN}: by default it shuts down when a worker dies")
    if any(s.key == "clusterrun-reuseport" for _, s in pairs):
        ctx.notes.append(f"net.ipv4.tcp_migrate_req = {_sysctl('net/ipv4/tcp_migrate_req')}: with 0, a connection"
                         " waiting in a retiring reuseport worker's accept queue is reset (clusterrun's README)")
    body = reload_table(trials) + respawn_table(trials, kills)
    body += ["", "Memory with and without `--preload`: the main benchmark's memory table (`bench/results/latest.md`,"
                 " row clusterrun rr --preload)."]
    failed = [t for t in trials if t.error]
    if failed:
        body += ["", "## Failures", ""] + [f"- {t.app.title} / {t.server.title}: `{t.error}`" for t in failed]
    body += ["", "## Server commands", ""]
    body += [f"- {s.title} ({a.title}): `{command_line(ctx.python, a, s, workers)}`" for a, s in pairs]
    targets = [line for t in trials if (line := reload_line(t))]
    data = {"workers": workers, "kills": kills, "trials": [t.as_json() for t in trials]}
    return Output("clusterrun reload and respawn benchmark", settings, body, targets, data)


def reload_table(trials: Sequence[Trial]) -> list[str]:
    lines = ["", "## Requests during a rolling restart under load", "",
             "| server | reload | took s | requests | failed | connection errors | of which on reused keep-alive |"
             " error statuses | timeouts | failures, s after the signal |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    disturbed = False
    for t in trials:
        if t.reload is None:
            why = "no zero-downtime reload" if not t.support else f"failed: {(t.error or '-').splitlines()[0]}"
            lines.append(f"| {t.server.title} | {why} | | | | | | | | |")
            continue
        r, tally = t.reload, t.reload.tally
        busy = r.elsewhere_cores > 0.25
        disturbed |= busy
        window = r.failures_window
        statuses = ", ".join(f"{n} x {code}" for code, n in sorted(tally.statuses.items())) or "0"
        lines.append(f"| {t.server.title} | {r.outcome} | {fmt(r.took_s, '.1f')}{dagger(busy)} | {tally.requests:,}"
                     f" | {tally.failed} | {tally.connection_errors} | {tally.dropped_reused} | {statuses}"
                     f" | {tally.timeouts} | {f'{window[0]:.1f} to {window[1]:.1f}' if window else '-'} |")
    note = ("† more than 0.25 cores were busy with other work during the reload (it competes with them for the"
            " CPU its new workers boot on)")
    return lines + (["", note] if disturbed else [])


def _sysctl(name: str) -> str:
    try:
        with open(f"/proc/sys/{name}") as f:
            return f.read().strip()
    except OSError:
        return "unknown"


def _median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def respawn_table(trials: Sequence[Trial], kills: int) -> list[str]:
    lines = ["", f"## Respawn after SIGKILL of one worker, median of {kills}", "",
             "| server | serving again s | each run s | new process s | \"is serving\" logged s | probe errors |",
             "| --- | ---: | --- | ---: | ---: | ---: |"]
    for t in trials:
        if not t.respawns:
            lines.append(f"| {t.server.title} | failed: {(t.error or '-').splitlines()[0]} | | | | |")
            continue
        runs = ", ".join(_run_text(r) for r in t.respawns)
        logged = _median([r.logged_s for r in t.respawns]) if t.server.family == "clusterrun" else None
        lines.append(f"| {t.server.title} | {fmt(_median([r.serving_s for r in t.respawns]), '.3f')} | {runs}"
                     f" | {fmt(_median([r.process_s for r in t.respawns]), '.3f')} | {fmt(logged, '.3f')}"
                     f" | {sum(r.probe_errors for r in t.respawns)} |")
    return [*lines, "", RESPAWN_NOTE]


RESPAWN_NOTE = ("serving again: SIGKILL to the first answer from a new worker; \"(log)\": none came (clusterrun sticky"
                " sends every connection from 127.0.0.1 to one slot, not always the killed one), so the time of"
                " clusterrun's \"is serving\" log line stands. new process: SIGKILL to a new worker process in the"
                " process table (clusterrun waits 0.1 s, its backoff's first delay, before forking). probe errors:"
                " probe requests that failed, e.g. on the killed worker.")


def _run_text(r: Respawn) -> str:
    if r.serving_s is None:
        return f"> {RESPAWN_TIMEOUT:g}"
    return f"{r.serving_s:.3f}" + (" (log)" if r.from_log else "")


def reload_line(trial: Trial) -> str:
    """One line per server: no target in issue 5 beyond "no failed request", said as PASS/MISS."""
    where = f"{trial.app.title}, rolling restart"
    if trial.reload is None:
        return f"INFO  {where}: {trial.server.title}: no zero-downtime reload" if not trial.support else \
            f"SKIP  {where}: {trial.server.title} not measured"
    t = trial.reload.tally
    verdict = "PASS" if t.failed == 0 and trial.reload.outcome == "complete" else "MISS"
    return (f"{verdict}  {where}: {trial.server.title}: {t.failed} of {t.requests:,} requests failed"
            f" ({trial.reload.outcome}), target 0")
