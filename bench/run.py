"""Benchmark clusterrun against its peers on the same apps, worker count and machine.

    python bench/run.py            # full: 3 rounds of 3 s runs, about 12 minutes on 2 cores (at most 14)
    python bench/run.py --quick    # 1 round of 1 s runs, under 2 minutes
    python bench/run.py --no-install --servers clusterrun --apps asgi --duration 1
    python bench/run.py --section policies   # issue 4: the policies side by side, about 3 minutes
    python bench/run.py --section reload     # issue 5: rolling restarts and respawns, 1 to 2.5 minutes
    python bench/run.py --section least-conn # issue 12: open-loop p99 per policy, 10% slow requests, about 1 minute
    python bench/run.py --section handover   # issue 12: what one primary hands over per CPU second, under a minute
    python bench/run.py --section metrics --quick  # issue 13: what --metrics costs; status calls under load, <1 min
    python bench/run.py --section syscalls   # issue 24: system calls per request of one worker, by strace, <1 min
    python bench/run.py --section compiled   # issues 24, 25: the compiled core against pure Python, about 5 minutes
    python bench/run.py --section static     # issue 28: files by clusterrun --static, granian and uWSGI, 65 s
    python bench/run.py --section http2      # issue 28: HTTP/2 vs granian, hypercorn, 80 s (--apps asgi|wsgi: 40)

Each round starts every server once per app (in a rotated order, so that drift of
the machine spreads over all servers instead of favouring the first), waits for
its first 200, warms it up, records its memory, loads it with keep-alive and with
a connection per request, and stops it. Results: the median over rounds. A
measurement that another job on the machine disturbed is taken again once it is
quiet, within a time budget (--patience; see quiet.py). See bench/README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import benchenv
import ceiling
import compiled
import h2bench
import handover
import leastconn
import metricscost
import policies
import procs
import reload
import report
import sections
import staticbench
import syscalls
from loadgen import LoadGenerator, LoadResult, LoadSpec, PythonClient, pick
from quiet import Patience
from servers import PRELOAD, SERVERS, App, Server, Target, select, select_apps, with_default

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
APPS_DIR = BENCH / "apps"
SECTIONS = ("main", "policies", "reload", "least-conn", "handover", "metrics", "syscalls", "compiled", "static",
            "http2")
READY_TIMEOUT = 60.0  # uvicorn and hypercorn spawn fresh interpreters: slow on a loaded 2-core machine
STOP_TIMEOUT = 15.0
CEILING_S = 1.0  # at most, per in-process ceiling: a rate of calls per CPU second settles well within it


@dataclass(frozen=True)
class Settings:
    mode: str  # "full" or "quick"
    rounds: int
    duration: float
    warmup: float
    workers: int
    connections: int
    modes: tuple[str, ...]
    patience: float  # seconds the run may spend re-measuring what other jobs on the machine disturbed


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--section", choices=SECTIONS, default="main",
                        help="main: throughput, latency, memory (default); policies: fairness, mixed load and new"
                             " connections per policy (issue 4); reload: requests failed during a rolling restart"
                             " and respawn time after SIGKILL (issue 5); least-conn: p50/p99 per policy under an"
                             " open-loop load where 10%% of requests sleep 100 ms; handover: connections one"
                             " primary hands over per CPU second under rr (issue 12); metrics: what --metrics costs"
                             " per request, and status and /metrics calls during full load (issue 13); syscalls: system"
                             " calls per request of one worker, by strace, keep-alive and a new connection per"
                             " request (issue 24); compiled: server CPU per request of the compiled core (the WSGI"
                             " engine, the ASGI protocol) against the same code built as pure Python (issues 24,"
                             " 25); static: files of 1 KiB, 64 KiB and 1 MiB and a 304, clusterrun --static against"
                             " granian and uWSGI (issue 28); http2: HTTP/2 req/s and server CPU per request beside"
                             " HTTP/1.1, against granian and hypercorn (issue 28)")
    parser.add_argument("--quick", action="store_true",
                        help="1 round of 1 s runs, 0.5 s warm-up, no re-measuring, instead of 3 rounds of 3 s")
    parser.add_argument("--no-install", action="store_true",
                        help="run the servers with this interpreter; skip the ones it lacks")
    parser.add_argument("--servers", help="comma-separated server keys or families, e.g. clusterrun,granian")
    parser.add_argument("--apps", help="comma-separated apps: asgi, starlette, fastapi, wsgi, flask (sections: the"
                                       " sample apps starlette, flask)")
    parser.add_argument("--workers", type=int,
                        help="worker processes for every server (default 2; --section reload: 4, or 2 with --quick)")
    parser.add_argument("--rounds", type=int, help="rounds (default 3, or 1 with --quick)")
    parser.add_argument("--duration", type=float, help="seconds per measurement (default 3, or 1 with --quick)")
    parser.add_argument("--warmup", type=float,
                        help="seconds of load before measuring (default 1, quick 0.5: by the Python client, as wrk"
                             " counts whole seconds only)")
    parser.add_argument("--connections", type=int, default=64, help="concurrent connections (default 64)")
    parser.add_argument("--modes", default=",".join(report.MODES), help="keep-alive and/or close (default both)")
    parser.add_argument("--patience", type=float,
                        help="seconds to spend waiting out other jobs and re-measuring (default 120, quick 0)")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto",
                        help="load generator (default: wrk if on PATH, else the Python client)")
    parser.add_argument("--out", type=Path, default=BENCH / "results", help="results folder (default bench/results)")
    parser.add_argument("--venv", type=Path, default=BENCH / ".venv", help="venv for the servers (default bench/.venv)")
    parser.add_argument("--pure-venv", type=Path, default=BENCH / ".venv-pure",
                        help="--section compiled: the venv of the pure-Python build (default bench/.venv-pure)")
    return parser.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    if not modes or set(modes) - set(report.MODES):
        raise SystemExit(f"--modes: choose from {', '.join(report.MODES)}")
    quick = args.quick
    return Settings(
        mode="quick" if quick else "full",
        rounds=args.rounds or (1 if quick else 3),
        duration=args.duration or (1.0 if quick else 3.0),
        warmup=args.warmup if args.warmup is not None else (0.5 if quick else 1.0),
        workers=args.workers or 2,
        connections=args.connections,
        modes=modes,
        patience=args.patience if args.patience is not None else (0.0 if quick else 120.0),
    )


def server_env() -> dict[str, str]:
    """The environment every server gets: the bench apps importable, no setting that would override a flag."""
    env = {k: v for k, v in os.environ.items() if k not in ("WEB_CONCURRENCY", "CLUSTERRUN_SCHED_POLICY")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(APPS_DIR), env.get("PYTHONPATH")) if p)
    return env


def plan(apps: Sequence[App], servers: Sequence[Server], versions: dict[str, str | None],
         notes: list[str]) -> list[tuple[App, Server]]:
    """Each app with each server that serves its interface, less those missing a package (with a note why)."""

    def missing(names: Sequence[str]) -> str:
        return ", ".join(name for name in names if not versions.get(name))

    pairs = []
    for app in apps:
        if missing(app.requires):
            notes.append(f"{app.title} skipped: {missing(app.requires)} not installed")
            continue
        for server in servers:
            if app.interface not in server.interfaces:
                continue
            if not missing(server.requires):
                pairs.append((app, server))
            elif (note := f"{server.title} skipped: {missing(server.requires)} not installed") not in notes:
                notes.append(note)
    return pairs


def rotated(pairs: Sequence[tuple[App, Server]], round_index: int) -> list[tuple[App, Server]]:
    """Each app's servers in a different order every round: whoever runs first (cold caches, a fresh
    machine) or last (a warm, possibly throttled one) changes from round to round."""
    out: list[tuple[App, Server]] = []
    for app in dict.fromkeys(a for a, _ in pairs):
        mine = [p for p in pairs if p[0] is app]
        shift = round_index % len(mine)
        out += mine[shift:] + mine[:shift]
    return out


@dataclass(frozen=True)
class Bench:
    """What every trial of a run shares."""

    python: str  # the interpreter the servers run in
    uvloop: bool
    settings: Settings
    client: LoadGenerator
    logs: Path  # server output, one file per trial
    patience: Patience

    @property
    def warmup_client(self) -> LoadGenerator:
        return warmup_client(self.settings, self.client)


def warmup_client(settings: Settings, client: LoadGenerator) -> LoadGenerator:
    """wrk runs whole seconds only: a shorter warm-up (quick mode's, to stay under 2 minutes) is the Python
    client's. Its rate is lower, but a warm-up only has to reach every worker, not to saturate them."""
    whole = settings.warmup >= 1 and settings.warmup.is_integer()
    return client if whole or client.name != "wrk" else PythonClient()


def run_trial(bench: Bench, app: App, server: Server, round_index: int) -> report.Trial:
    trial = report.Trial(round_index + 1, app.key, server.key)
    port = procs.free_port()
    argv = server.command(Target(bench.python, app, port, bench.settings.workers, bench.uvloop))
    log = bench.logs / f"r{round_index + 1}-{app.key}-{server.key}.log"
    with procs.running(argv, cwd=APPS_DIR, env=server_env(), log=log, stop_timeout=STOP_TIMEOUT) as srv:
        try:
            trial.startup_s = procs.wait_ready(srv, port, app.body, READY_TIMEOUT)
            url = f"http://127.0.0.1:{port}/"
            # Warm-up: every worker has booted and served, caches and allocators have settled.
            bench.warmup_client.run(LoadSpec(url, bench.settings.warmup, bench.settings.connections, close=False))
            trial.memory = procs.tree_memory(srv.proc.pid)
            if server.load:
                measure_modes(bench, trial, server, url, srv.proc.pid)
        except (procs.ServerFailed, RuntimeError, ValueError) as exc:
            trial.error = str(exc)
        finally:
            trial.stop_s = procs.stop(srv, STOP_TIMEOUT)
    if srv.proc.returncode not in (0, -15) and trial.error is None and trial.stop_s is not None:
        trial.error = f"exited with code {srv.proc.returncode} on SIGTERM:\n{srv.log_tail()}"
    return trial


def measure_modes(bench: Bench, trial: report.Trial, server: Server, url: str, sid: int) -> None:
    settings = bench.settings
    for mode in settings.modes:
        if mode not in server.modes:
            continue
        spec = LoadSpec(url, settings.duration, settings.connections, close=mode == "close")
        first = measure(bench.client, spec, sid)
        result, cpu, again = bench.patience.retry(sid, spec.duration, first,
                                                  functools.partial(measure, bench.client, spec, sid))
        if server.closes_unannounced and mode == "close":
            # One read error per complete answer is the server closing as it should; more are real failures.
            result = dataclasses.replace(result, errors=result.errors - min(result.read_errors, result.requests))
        trial.loads[mode], trial.cpu[mode] = result, cpu
        if again:
            trial.remeasured.append(mode)


def measure(client: LoadGenerator, spec: LoadSpec, sid: int) -> tuple[LoadResult, procs.CpuUse]:
    """One load run, with the CPU the server used and the CPU used by anything else meanwhile."""
    before, own, began = procs.cpu_sample(sid), time.process_time(), time.monotonic()
    result = client.run(spec)
    elapsed, own = time.monotonic() - began, time.process_time() - own
    return result, procs.cpu_use(before, procs.cpu_sample(sid), elapsed, own)


def progress(trial: report.Trial, app: App, server: Server, rounds: int) -> str:
    head = f"[round {trial.round}/{rounds}] {app.title} / {server.title}:"
    if trial.error:
        return f"{head} FAILED {trial.error.splitlines()[0]}"
    parts = [f"up in {trial.startup_s:.2f}s"] if trial.startup_s is not None else []
    if trial.memory:
        parts.append(f"RSS {trial.memory.rss_mib:.0f} MiB")
    for mode, res in trial.loads.items():
        cpu = trial.cpu[mode]
        again = ", measured again" if mode in trial.remeasured else ""
        parts.append(f"{mode} {res.rps:,.0f} req/s ({res.errors} errors, server CPU {cpu.server_s:.2f}s,"
                     f" elsewhere {cpu.elsewhere_cores:.2f} cores{again})")
    return f"{head} {', '.join(parts)}"


def disturbance_note(trials: Sequence[report.Trial], patience: Patience) -> str:
    cpus = [cpu for t in trials for cpu in t.cpu.values()]
    left = sum(cpu.elsewhere_cores > procs.DISTURBED_CORES for cpu in cpus)
    return (f"other jobs on the machine: {patience.retries} of {len(cpus)} measurements were measured again after"
            f" waiting {patience.waited:.0f} s for quiet; {left} still had more than {procs.DISTURBED_CORES} cores"
            " busy elsewhere (rows marked †)")


def header(settings: Settings, python_version: str, python: str, versions: dict[str, str | None],
           client: LoadGenerator, client_note: str, took: float) -> dict[str, str]:
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    example = LoadSpec("http://127.0.0.1:PORT/", settings.duration, settings.connections, close=False)
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": f"`{shlex.join([Path(sys.executable).name, *sys.argv])}` (took {took:.0f} s)",
        "python": f"{python_version} ({python})",
        "cores": f"{len(cores)} (affinity {cores})" if cores else f"{os.cpu_count()} (no affinity information)",
        "load generator": f"{client_note}; `{client.describe(example)}`, with `-H \"Connection: close\"` for close"
        if client.name == "wrk" else client_note,
        "settings": f"{settings.workers} workers per server, {settings.rounds} round(s), "
                    f"{settings.duration:g} s per measurement after {settings.warmup:g} s of warm-up by"
                    f" {warmup_client(settings, client).name}, {settings.patience:g} s of patience",
        "versions": ", ".join(f"{name} {version or 'missing'}" for name, version in versions.items()),
        "clusterrun source": source_state(),
    }


def source_state() -> str:
    """The checkout clusterrun is installed from: results can only be compared for the same code."""
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no", "--",
                                "clusterrun", "adapters"], capture_output=True, text=True, timeout=10,
                               check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return f"{commit}" + (" with uncommitted changes in clusterrun/ or adapters/" if dirty else "")


def command_lines(pairs: Sequence[tuple[App, Server]], python: str, workers: int, uvloop: bool) -> dict[str, str]:
    """One example command per server (for its first app), as run, with the port written as PORT."""
    lines: dict[str, str] = {}
    for app, server in pairs:
        key = f"{server.title} ({app.interface})"
        if key not in lines:
            argv = server.command(Target(python, app, 0, workers, uvloop))
            lines[key] = shlex.join(argv).replace("127.0.0.1:0", "127.0.0.1:PORT").replace("--port 0", "--port PORT")
    return lines


def _without_local_paths(text: str) -> str:
    """Results are committed: paths of this machine become relative to the repository, or the home '~'."""
    repo = str(Path(__file__).resolve().parent.parent)
    return text.replace(repo + "/", "").replace(repo, ".").replace(str(Path.home()), "~")


def write_results(out: Path, stamp: str, text: str, data: dict[str, Any], latest: str | None) -> list[Path]:
    """The per-run pair of files, and the ``latest`` pair if given; each written to a .tmp file then renamed,
    so that an interrupted run never leaves half a file where a good one was."""
    out.mkdir(parents=True, exist_ok=True)
    names = [f"{stamp}.md", f"{stamp}.json"] + ([f"{latest}.md", f"{latest}.json"] if latest else [])
    written = []
    for name in names:
        path = out / name
        tmp = path.with_name(path.name + ".tmp")
        body = text if name.endswith(".md") else json.dumps(data, indent=2) + "\n"
        tmp.write_text(_without_local_paths(body))
        tmp.replace(path)
        written.append(path)
    return written


def latest_name(args: argparse.Namespace, settings: Settings) -> str | None:
    """latest.* is what gets committed: only a standard full run (every app and server, default rounds and
    durations) replaces it; a standard quick run writes latest-quick.*; any other run only its own files."""
    overridden = (args.servers, args.apps, args.rounds, args.duration, args.warmup)
    if any(value is not None for value in overridden) or args.modes != ",".join(report.MODES):
        return None
    return "latest" if settings.mode == "full" else "latest-quick"


@dataclass(frozen=True)
class Setup:
    python: str
    python_version: str
    versions: dict[str, str | None]
    pairs: list[tuple[App, Server]]
    notes: list[str]
    baseline: str  # the server key of clusterrun's default policy: the ratio columns divide by its figures


def read_default_policy(python: str, notes: list[str]) -> str:
    """clusterrun's default --policy in the servers' interpreter; rr, with a note, when it cannot be read."""
    try:
        return benchenv.default_policy(python, APPS_DIR)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        notes.append(f"{exc}; the ratio columns divide by clusterrun rr")
        return "rr"


def prepare(args: argparse.Namespace) -> Setup:
    """The servers' interpreter (installing into bench/.venv unless --no-install) and what can run in it."""
    python = sys.executable if args.no_install else str(benchenv.ensure_venv(args.venv, REPO))
    python_version, versions = benchenv.probe(python, benchenv.REPORTED, APPS_DIR)
    notes: list[str] = []
    policy = read_default_policy(python, notes) if versions.get("clusterrun") else "rr"
    servers = select(args.servers, with_default(SERVERS, policy))
    if versions.get("clusterrun") and any(s.family == "clusterrun" for s in servers):
        if benchenv.clusterrun_has(python, "--preload", APPS_DIR):
            servers = (*servers, PRELOAD)
        else:
            notes.append("clusterrun has no --preload option: memory is measured without it only")
    pairs = plan(select_apps(args.apps), servers, versions, notes)
    if any(server.key == "uwsgi" for _, server in pairs) and "keep-alive" in args.modes:
        notes.append(UWSGI_KEEPALIVE)
    return Setup(python, python_version, versions, pairs, notes, f"clusterrun-{policy}")


# Measured on uWSGI 2.0.30, --http11-socket, 2 workers, 64 keep-alive connections: p50 0.07 ms, and the other 62
# connections' first answers came when the load stopped.
UWSGI_KEEPALIVE = ("uWSGI keep-alive: each worker process serves one connection at a time and keeps it until the"
                   " client closes it, so of the keep-alive connections only as many as there are workers are served"
                   " during the run; the others wait (their first answers come when the load stops, and count in"
                   " p99 only if they are more than 1% of the requests): its req/s is that of N connections")


def run_rounds(bench: Bench, pairs: Sequence[tuple[App, Server]],
               ceilings: dict[str, list[ceiling.Ceiling]], notes: list[str]) -> list[report.Trial]:
    """Every pair once per round; before each app's servers, its in-process ceiling (appended to ``ceilings``)."""
    trials = []
    for round_index in range(bench.settings.rounds):
        measured: set[str] = set()
        for app, server in rotated(pairs, round_index):
            if app.key not in measured:
                measured.add(app.key)
                measure_ceiling(bench, app, round_index, ceilings, notes)
            trial = run_trial(bench, app, server, round_index)
            print(progress(trial, app, server, bench.settings.rounds), file=sys.stderr, flush=True)
            trials.append(trial)
    return trials


def measure_ceiling(bench: Bench, app: App, round_index: int, ceilings: dict[str, list[ceiling.Ceiling]],
                    notes: list[str]) -> None:
    """The app called in a loop in one process of the servers' interpreter, for up to CEILING_S seconds."""
    try:
        found = ceiling.measure(bench.python, app.target, app.interface, min(CEILING_S, bench.settings.duration),
                                cwd=APPS_DIR, env=server_env())
    except (RuntimeError, ValueError, KeyError, subprocess.SubprocessError) as exc:
        notes.append(f"{app.title}: no in-process ceiling in round {round_index + 1}: {exc}")
        return
    ceilings.setdefault(app.key, []).append(found)
    print(f"[round {round_index + 1}/{bench.settings.rounds}] {app.title} / {report.CEILING_TITLE}:"
          f" {found.per_core:,.0f} calls per CPU second", file=sys.stderr, flush=True)


def main(argv: Sequence[str]) -> int:
    began = time.monotonic()
    args = parse_args(argv)
    if args.section != "main":
        return run_section(args, began)
    settings = settings_from(args)
    client, client_note = pick(args.client)
    setup = prepare(args)
    uvloop = bool(setup.versions.get("uvloop"))
    print(f"bench: {len(setup.pairs)} server runs x {settings.rounds} round(s), load by {client_note}",
          file=sys.stderr)
    patience = Patience(settings.patience)
    ceilings: dict[str, list[ceiling.Ceiling]] = {}
    with tempfile.TemporaryDirectory(prefix="clusterrun-bench-") as logs:
        trials = run_rounds(Bench(setup.python, uvloop, settings, client, Path(logs), patience), setup.pairs,
                            ceilings, setup.notes)

    goals = report.check_goals(trials, setup.pairs, settings.modes)
    cpu_goals = report.check_cpu_goals(trials, setup.pairs, settings.modes, setup.baseline)
    asgi_goals = report.check_cpu_goals(trials, setup.pairs, settings.modes, setup.baseline, issue=25)
    took = time.monotonic() - began
    meta = {
        "mode": settings.mode,
        "header": header(settings, setup.python_version, setup.python, setup.versions, client, client_note, took)
        | {"clusterrun default policy": setup.baseline.removeprefix("clusterrun-")},
        "notes": [*setup.notes, disturbance_note(trials, patience)],
        "commands": command_lines(setup.pairs, setup.python, settings.workers, uvloop),
        "settings": asdict(settings),
    }
    text = report.markdown(meta, trials, setup.pairs, settings.modes, goals, ceilings, settings.workers,
                           setup.baseline, cpu_goals, asgi_goals)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{settings.mode}"
    written = write_results(args.out, stamp, text, report.as_json(meta, trials, goals, ceilings, cpu_goals, asgi_goals),
                            latest_name(args, settings))
    print(text)
    print(f"bench: wrote {', '.join(str(p) for p in written)}", file=sys.stderr)
    return 0


# The policies and reload sections: each module measures and returns its tables; the header and the files are here.


def run_section(args: argparse.Namespace, began: float) -> int:
    client, client_note = pick(args.client)
    python = sys.executable if args.no_install else str(benchenv.ensure_venv(args.venv, REPO))
    python_version, versions = benchenv.probe(python, benchenv.REPORTED, APPS_DIR)
    # A smaller budget than the main bench's: each section is meant to stay under about 4 minutes.
    patience = Patience(args.patience if args.patience is not None else (0.0 if args.quick else 30.0))
    section = {"policies": policies.run, "reload": reload.run, "least-conn": leastconn.run,
               "handover": handover.run, "metrics": metricscost.run, "syscalls": syscalls.run,
               "compiled": compiled.run, "static": staticbench.run, "http2": h2bench.run}[args.section]
    with tempfile.TemporaryDirectory(prefix=f"clusterrun-bench-{args.section}-") as logs:
        ctx = sections.Context(python, versions, args.servers, args.apps, args.workers, args.quick, args.duration,
                               patience, client, client_note, Path(logs), pure_venv=args.pure_venv)
        output = section(ctx)
    took = time.monotonic() - began
    head = section_header(python_version, python, versions, client_note, took)
    notes = [*ctx.notes, f"other jobs on the machine: {patience.retries} measurement(s) were measured again after"
                         f" waiting {patience.waited:.0f} s for quiet; what is still disturbed is marked †"]
    text = "\n".join([f"# {output.title}{' (quick)' if args.quick else ''}", "",
                      *(f"- {name}: {value}" for name, value in head.items()), f"- settings: {output.settings}",
                      *(f"- note: {note}" for note in notes), *output.body,
                      "", "## Targets", "", "```", *output.targets, "```"]) + "\n"
    data = {"meta": {"section": args.section, "quick": args.quick, "header": head, "settings": output.settings,
                     "notes": notes}, "targets": output.targets, **output.data}
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{args.section}" + ("-quick" if args.quick else "")
    standard = not (args.quick or args.servers or args.apps or args.workers or args.duration)
    written = write_results(args.out, stamp, text, data, f"latest-{args.section}" if standard else None)
    print(text)
    print(f"bench: wrote {', '.join(str(p) for p in written)}", file=sys.stderr)
    return 0


def section_header(python_version: str, python: str, versions: dict[str, str | None], client_note: str,
                   took: float) -> dict[str, str]:
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": f"`{shlex.join([Path(sys.executable).name, *sys.argv])}` (took {took:.0f} s)",
        "python": f"{python_version} ({python})",
        "cores": f"{len(cores)} (affinity {cores})" if cores else f"{os.cpu_count()} (no affinity information)",
        "load generator": client_note,
        "versions": ", ".join(f"{name} {version or 'missing'}" for name, version in versions.items()),
        "clusterrun source": source_state(),
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
