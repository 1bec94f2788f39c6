"""What the policies and reload sections share: the sample apps, the servers, starting one, finding its workers.

These sections run the project's own sample apps (sample_apps/starlette_app.py
and flask_app.py), not bench/apps: those answer ``/`` with the worker's pid (and,
under clusterrun, an ``X-Worker-Id`` header) and have a ``/heavy`` route of about
10 ms of CPU. Under the peers the apps' clusterrun middleware finds no worker and
adds no header; the pid in the body still names the process.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shlex
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import benchenv
import procs
from loadgen import LoadGenerator
from procs import DISTURBED_CORES, CpuUse
from quiet import Patience
from servers import SERVERS, App, Server, Target
from servers import _clusterrun as clusterrun_command  # the main bench's clusterrun command line, any policy

BENCH = Path(__file__).resolve().parent
SAMPLES = BENCH.parent / "sample_apps"
BENCH_APPS = BENCH / "apps"  # the main bench's apps; the least-conn and hand-over sections run them too
READY_TIMEOUT = 60.0
_TICK = os.sysconf("SC_CLK_TCK")
STOP_TIMEOUT = 15.0

STARLETTE = App("starlette", "Starlette sample", "starlette_app:app", "asgi", ("starlette", "clusterrun"))
FLASK = App("flask", "Flask sample", "flask_app:app", "wsgi", ("flask", "clusterrun"))
APPS = (STARLETTE, FLASK)

POLICIES = ("rr", "least-conn", "sticky", "shared", "balanced", "reuseport")
BOTH = frozenset({"asgi", "wsgi"})
CLUSTERRUN = tuple(Server(f"clusterrun-{p}", "clusterrun", f"clusterrun {p}", BOTH, ("clusterrun",),
                          clusterrun_command(p)) for p in POLICIES)
_PEER_KEYS = ("uvicorn", "gunicorn-uvicorn", "gunicorn-sync", "gunicorn-gthread", "granian", "uwsgi")
PEERS = tuple(s for key in _PEER_KEYS for s in SERVERS if s.key == key)


@dataclass(frozen=True)
class Context:
    """What a section run gets from the command line and the environment."""

    python: str  # the servers' interpreter
    versions: dict[str, str | None]
    servers: str | None  # --servers
    apps: str | None  # --apps
    workers: int | None  # --workers; None: the section's default
    quick: bool
    duration: float | None  # --duration; None: the section's default
    patience: Patience
    client: LoadGenerator  # wrk, or the Python fallback, for measurements that need no per-worker answers
    client_note: str
    logs: Path  # server output, one file per server run
    notes: list[str] = field(default_factory=list)
    pure_venv: Path = BENCH / ".venv-pure"  # --section compiled: where the pure-Python build is installed


@dataclass(frozen=True)
class Output:
    title: str
    settings: str  # one line for the header
    body: list[str]  # markdown: the tables
    targets: list[str]  # PASS/MISS/INFO lines
    data: dict[str, Any]  # JSON


def choose(ctx: Context, catalogue: Sequence[Server], default_apps: Sequence[App]) -> list[tuple[App, Server]]:
    """The (app, server) pairs to run: ``--apps`` and ``--servers`` (keys or families) applied, those whose
    packages are missing in the servers' interpreter left out with a note."""
    apps = _filter(ctx.apps, APPS, lambda a: {a.key}) if ctx.apps else list(default_apps)
    servers = _filter(ctx.servers, catalogue, lambda s: {s.key, s.family})
    pairs = []
    for app in apps:
        for server in servers:
            if app.interface not in server.interfaces:
                continue
            missing = [n for n in (*app.requires, *server.requires) if not ctx.versions.get(n)]
            if missing:
                note = f"{server.title} on {app.title} skipped: {', '.join(missing)} not installed"
                ctx.notes.append(note)
            else:
                pairs.append((app, server))
    return pairs


T = TypeVar("T")


class _Entry(Protocol):
    @property
    def server(self) -> Server: ...


E = TypeVar("E", bound=_Entry)


def choose_entries(ctx: Context, entries: Sequence[E]) -> list[E]:
    """A section's own catalogue, whose entries each name a ``server`` (the static and http2 sections): ``--servers``
    (keys or families) applied, those whose packages are missing in the servers' interpreter left out with a note."""
    chosen = []
    for entry in _filter(ctx.servers, entries, lambda e: {e.server.key, e.server.family}):
        missing = [n for n in entry.server.requires if not ctx.versions.get(n)]
        if missing:
            ctx.notes.append(f"{entry.server.title} skipped: {', '.join(missing)} not installed")
        else:
            chosen.append(entry)
    return chosen


def _filter(words: str | None, items: Sequence[T], names: Callable[[T], set[str]]) -> list[T]:
    if not words:
        return list(items)
    wanted = {w.strip() for w in words.split(",") if w.strip()}
    known = set().union(*(names(i) for i in items))
    if wanted - known:
        raise SystemExit(f"unknown {', '.join(sorted(wanted - known))}; known here: {', '.join(sorted(known))}")
    return [i for i in items if names(i) & wanted]


def default_policy(ctx: Context) -> str:
    """clusterrun's default policy in the servers' interpreter; rr, with a note, when it cannot be read."""
    try:
        return benchenv.default_policy(ctx.python, BENCH_APPS)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        ctx.notes.append(f"{exc}; clusterrun rr stands for the default")
        return "rr"


def server_env(apps: Path = SAMPLES) -> dict[str, str]:
    """The apps of ``apps`` (default: the sample apps) importable; no environment setting that would override a
    flag."""
    env = {k: v for k, v in os.environ.items() if k not in ("WEB_CONCURRENCY", "CLUSTERRUN_SCHED_POLICY")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(apps), env.get("PYTHONPATH")) if p)
    return env


@dataclass
class Live:
    """A started server: its process (the session leader), port, log and start-up time."""

    running: procs.Running
    port: int
    startup_s: float = 0.0

    @property
    def pid(self) -> int:
        return self.running.proc.pid

    def log_text(self, offset: int = 0) -> str:
        with contextlib.suppress(OSError):
            with open(self.running.log, "rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        return ""

    def log_size(self) -> int:
        with contextlib.suppress(OSError):
            return self.running.log.stat().st_size
        return 0


@contextlib.contextmanager
def started(ctx: Context, app: App, server: Server, workers: int, name: str) -> Iterator[Live]:
    """Start ``server`` on ``app``, wait until it serves; always stop it (SIGTERM, then SIGKILL to its group)."""
    port = procs.free_port()
    argv = command(ctx.python, app, server, workers, port)
    with procs.running(argv, cwd=SAMPLES, env=server_env(), log=ctx.logs / f"{name}.log",
                       stop_timeout=STOP_TIMEOUT) as running:
        live = Live(running, port)
        live.startup_s = wait_serving(running, port, READY_TIMEOUT)
        yield live


@contextlib.contextmanager
def started_bench_app(ctx: Context, app: App, server: Server, workers: int, name: str) -> Iterator[Live]:
    """As ``started``, for an app of bench/apps: serving once ``GET /`` answers 200 with ``app.body``."""
    port = procs.free_port()
    argv = command(ctx.python, app, server, workers, port)
    with procs.running(argv, cwd=BENCH_APPS, env=server_env(BENCH_APPS), log=ctx.logs / f"{name}.log",
                       stop_timeout=STOP_TIMEOUT) as running:
        live = Live(running, port)
        live.startup_s = procs.wait_ready(running, port, app.body, READY_TIMEOUT)
        yield live


def command(python: str, app: App, server: Server, workers: int, port: int) -> list[str]:
    return server.command(Target(python, app, port, workers, uvloop=False))


def command_line(python: str, app: App, server: Server, workers: int) -> str:
    """As run, with the port written as PORT."""
    line = shlex.join(command(python, app, server, workers, 0))
    return line.replace("127.0.0.1:0", "127.0.0.1:PORT").replace("--port 0", "--port PORT")


def wait_serving(running: procs.Running, port: int, timeout: float) -> float:
    """Poll until GET / answers 200 with the sample apps' JSON (it names a pid); seconds since the start."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if running.proc.poll() is not None:
            raise procs.ServerFailed(f"exited with code {running.proc.returncode}:\n{running.log_tail()}")
        try:
            status, body = procs.probe(port)
        except (OSError, http.client.HTTPException) as exc:
            last = f"{type(exc).__name__}: {exc}"
        else:
            if status == 200 and b'"pid"' in body:
                return time.monotonic() - running.started
            raise procs.ServerFailed(f"answered {status} {body[:80]!r}:\n{running.log_tail()}")
        time.sleep(0.01)
    raise procs.ServerFailed(f"no 200 within {timeout:g}s ({last}):\n{running.log_tail()}")


# Workers: the server's child processes, less the helpers multiprocessing starts (uvicorn's resource tracker).


def _stat(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (state, ppid, ..., starttime at index 19)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def worker_pids(main: int) -> list[int]:
    """Live worker processes of the server whose main process is ``main``, oldest first."""
    found: list[tuple[int, int]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if not fields or fields[0] in ("Z", "X") or int(fields[1]) != main:
            continue
        with contextlib.suppress(OSError):
            if b"resource_tracker" in (entry / "cmdline").read_bytes():
                continue
        found.append((int(fields[19]), int(entry.name)))
    return [pid for _, pid in sorted(found)]


def wait_workers(main: int, count: int, timeout: float, avoid: Sequence[int] = ()) -> list[int]:
    """Poll until ``count`` workers run and none of them is in ``avoid``; the last list seen either way."""
    deadline = time.monotonic() + timeout
    pids = worker_pids(main)
    while (len(pids) != count or set(pids) & set(avoid)) and time.monotonic() < deadline:
        time.sleep(0.02)
        pids = worker_pids(main)
    return pids


def kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


# Measuring with the machine's other jobs accounted for (procs.cpu_use), and re-measuring what they disturbed.


@dataclass(frozen=True)
class Measured(Generic[T]):
    result: T
    cpu: CpuUse
    main_s: float  # CPU seconds of the server's main process alone: clusterrun's primary accepts and dispatches
    remeasured: bool = False

    @property
    def disturbed(self) -> bool:
        return self.cpu.elsewhere_cores > DISTURBED_CORES


def measure(sid: int, run: Callable[[], T]) -> Measured[T]:
    """``run()``, with the CPU the server's session used and what anything else used meanwhile. The Python
    client runs in this process: its CPU time (process_time) is the load generator's, not "elsewhere"."""
    before, main, own, began = procs.cpu_sample(sid), _own_cpu_s(sid), time.process_time(), time.monotonic()
    result = run()
    elapsed, own = time.monotonic() - began, time.process_time() - own
    return Measured(result, procs.cpu_use(before, procs.cpu_sample(sid), elapsed, own), _own_cpu_s(sid) - main)


def _own_cpu_s(pid: int) -> float:
    """utime + stime of ``pid`` itself, its children left out."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / _TICK if fields else 0.0


def steady(patience: Patience, sid: int, duration: float, run: Callable[[], T]) -> Measured[T]:
    """As quiet.Patience.retry, for any result: measure; if other jobs disturbed it and the budget allows, wait
    for quiet and measure again; keep the less disturbed of the two."""
    first = measure(sid, run)
    if not first.disturbed or patience.left < duration:
        return first
    if not patience.wait_quiet(sid) or patience.left < duration:
        return first
    began = time.monotonic()
    again = measure(sid, run)
    patience.left -= time.monotonic() - began
    patience.retries += 1
    best = again if again.cpu.elsewhere_cores < first.cpu.elsewhere_cores else first
    return Measured(best.result, best.cpu, best.main_s, remeasured=True)


def fmt(value: float | None, spec: str, mark: str = "") -> str:
    return "-" if value is None else format(value, spec) + mark


def dagger(disturbed: bool) -> str:
    return " †" if disturbed else ""


DAGGER_NOTE = f"† more than {DISTURBED_CORES} cores were busy with other work during this measurement"

