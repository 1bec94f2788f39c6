"""Starting, probing, measuring and stopping one server under test.

Every server runs in its own session (``start_new_session=True``) so that its
whole process tree can be found (by session id, in /proc) and killed (by
process group) whatever the server does with its children. Output goes to a
file, never a pipe: a chatty server must not block on a full pipe mid-run.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

_PROBE_INTERVAL = 0.01  # between start-up probes: start-up time is reported to about this precision
_PROBE_TIMEOUT = 2.0


class ServerFailed(Exception):
    """The server exited, or did not answer 200 with the expected body, in time."""


@dataclass
class Running:
    proc: subprocess.Popen[bytes]
    log: Path
    started: float  # time.monotonic() just before the command was started

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def free_port() -> int:
    """A port that was free a moment ago; the servers bind it themselves (not all of them can take a socket)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running(argv: Sequence[str], *, cwd: Path, env: dict[str, str], log: Path,
            stop_timeout: float) -> Iterator[Running]:
    """Run ``argv`` for the duration of the block; always stop, kill and reap it afterwards."""
    with open(log, "wb") as out:
        started = time.monotonic()
        proc = subprocess.Popen(list(argv), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    server = Running(proc, log, started)
    try:
        yield server
    finally:
        stop(server, stop_timeout)


def stop(server: Running, timeout: float) -> float | None:
    """SIGTERM as an operator would, then SIGKILL the whole group; seconds the graceful stop took, or None."""
    proc = server.proc
    took: float | None = None
    try:
        if proc.poll() is None:
            begin = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
                took = time.monotonic() - begin
            except subprocess.TimeoutExpired:
                pass
    finally:
        # Workers that outlived their parent (or a parent that ignored SIGTERM) must not skew the next server.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    return took


def wait_ready(server: Running, port: int, body: bytes, timeout: float) -> float:
    """Poll until GET / answers 200 with ``body``; seconds from the start of the command."""
    deadline = time.monotonic() + timeout
    last_error = "no answer"
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise ServerFailed(f"exited with code {server.proc.returncode} before answering:\n{server.log_tail()}")
        try:
            status, answer = probe(port)
        except (OSError, http.client.HTTPException) as exc:
            last_error = f"{type(exc).__name__}: {exc}"
        else:
            if status == 200 and answer == body:
                return time.monotonic() - server.started
            raise ServerFailed(f"answered {status} {answer[:80]!r}, expected 200 {body!r}:\n{server.log_tail()}")
        time.sleep(_PROBE_INTERVAL)
    raise ServerFailed(f"no 200 within {timeout:g}s ({last_error}):\n{server.log_tail()}")


def probe(port: int) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=_PROBE_TIMEOUT)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


# Memory, from /proc (Linux only: elsewhere the numbers are left out).


def session_pids(sid: int) -> list[int]:
    """Live processes of session ``sid``: the server and every worker, however deep or reparented."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            # Fields after the command name: state, ppid, pgrp, session, ...
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[3]) == sid and fields[0] not in ("Z", "X"):
                pids.append(int(entry.name))
    return pids


def children(pid: int) -> list[tuple[int, str]]:
    """The direct children of ``pid`` with their state letter (Z: exited, not yet reaped; T: stopped)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    found.append((int(entry.name), fields[0]))
    return found


def primary_memory(pid: int) -> tuple[int, int]:
    """A process's VmRSS in KiB and its number of memory maps: what a leak per replaced worker grows."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    with open(f"/proc/{pid}/maps") as maps:
        return rss, sum(1 for _ in maps)


def _rollup_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of one process in KiB. PSS splits shared pages between their sharers, so it shows copy-on-write
    sharing (what --preload is for), which summed RSS counts once per process."""
    rss = pss = 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            name, _, value = line.partition(":")
            if name == "Rss":
                rss = int(value.split()[0])
            elif name == "Pss":
                pss = int(value.split()[0])
    return rss, pss


@dataclass(frozen=True)
class Memory:
    processes: int
    rss_mib: float
    pss_mib: float


def tree_memory(sid: int) -> Memory | None:
    pids = session_pids(sid)
    if not pids:
        return None
    totals = [_rollup_kib(pid) for pid in pids]
    return Memory(len(pids), sum(r for r, _ in totals) / 1024, sum(p for _, p in totals) / 1024)


# CPU accounting around a measurement: what the server used, and what was busy that was neither the server nor
# the load generator (other jobs on a shared machine: the one thing that makes a run not comparable).

# More cores than this busy with other work during a measurement (another job, or the host's steal time) make it
# not comparable with the rest. The accounting leaves about 0.05 cores unexplained on a quiet machine.
DISTURBED_CORES = 0.25

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class SessionCpu:
    """CPU seconds of a session's processes: user (the server's own code: Python, the app, a parser) and system
    (the kernel working for it: sockets, polling, system calls), each as the kernel charges them."""

    user_s: float
    system_s: float

    @property
    def total_s(self) -> float:
        return self.user_s + self.system_s


@dataclass(frozen=True)
class CpuSample:
    busy_s: float  # all cores, everything not idle, since boot
    server: SessionCpu  # the server's session: live processes and the children they reaped
    children_s: float  # this process's reaped children (the load generator, once it has finished)


@dataclass(frozen=True)
class CpuUse:
    server_s: float  # CPU seconds the server used during the measurement (user + system)
    elsewhere_cores: float  # average cores busy with something else, kernel time not charged to a process included
    user_s: float = 0.0  # of server_s: in user mode
    system_s: float = 0.0  # of server_s: in the kernel, on the server's behalf


def _busy_s() -> float:
    with contextlib.suppress(OSError, ValueError):
        fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return (sum(fields[:8]) - idle) / _TICK  # guest time is already inside user time
    return 0.0


def _session_cpu(sid: int) -> SessionCpu:
    user = system = 0
    for pid in session_pids(sid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
            user, system = user + utime + cutime, system + stime + cstime
    return SessionCpu(user / _TICK, system / _TICK)


def _session_cpu_s(sid: int) -> float:
    return _session_cpu(sid).total_s


def wait_idle(sid: int, timeout: float = 2.0, window: float = 0.05) -> bool:
    """Wait until the server's session uses no CPU for one window (ticks are 10 ms); False if it never does.

    A load generator that stops leaves work behind: requests its connections abandoned, closes the workers have
    not read yet. The next measurement must not start on top of it: least-conn, for one, places a burst of new
    connections by what it knows then, and a worker still busy with the last load's requests gets none.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = _session_cpu_s(sid)
        time.sleep(window)
        if _session_cpu_s(sid) == before:
            return True
    return False


def cpu_sample(sid: int) -> CpuSample:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return CpuSample(_busy_s(), _session_cpu(sid), usage.ru_utime + usage.ru_stime)


def cpu_use(before: CpuSample, after: CpuSample, seconds: float, own_s: float) -> CpuUse:
    """``own_s``: CPU this process used meanwhile (the Python client runs in it; wrk is a reaped child)."""
    user = after.server.user_s - before.server.user_s
    system = after.server.system_s - before.server.system_s
    server = user + system
    client = after.children_s - before.children_s + own_s
    elsewhere = (after.busy_s - before.busy_s) - server - client
    return CpuUse(server, max(0.0, elsewhere) / seconds if seconds > 0 else 0.0, user, system)
