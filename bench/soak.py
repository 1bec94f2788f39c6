"""A soak with chaos: load a cluster while its workers are killed, stopped and replaced, and count the cost.

    python bench/soak.py                          # 60 s per policy, every policy, the Flask sample
    python bench/soak.py --seconds 12 --every 2 --policy rr --json

8 client loops (4 keep-alive, 4 with a new connection per request) load the
app for ``--seconds``. Every ``--every`` seconds one fault, in turn: a worker is
SIGKILLed; a worker is SIGSTOPped and left stopped past ``--timeout`` (the
watchdog kills it); the cluster gets SIGHUP (a rolling restart). What a fault
may cost is what was in flight on the worker it hit: each client loop has at
most one request outstanding on its connection, so the verdict allows one
failed request per client connection the killed or stopped worker held at that
moment (read from /proc), none for connections passed to it that it had not
yet taken, and none per reload. The primary's
resident memory and its count of memory maps are read after the first round
of faults and at the end: they must not grow (the allowance is printed).

Bounded: a hard deadline on the load, the server stopped and reaped by its
process group at the end, traffic to 127.0.0.1 only. Exit status 0 when every
policy met the verdict, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import tagged
from procs import children, primary_memory

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ("rr", "least-conn", "sticky", "shared", "reuseport")
FAULTS = ("kill", "stop", "reload")
TIMEOUT = 2.0  # --timeout of the cluster: a stopped worker is killed this long after its last heartbeat
# Growth of the primary allowed between the first round of faults and the end: allocator noise, not a leak
# (a leak of one channel buffer per replaced worker is 256 KiB each, dozens of MiB over a soak).
RSS_SLACK_KIB = 2048
MAPS_SLACK = 8


@dataclass
class Result:
    policy: str
    app: str
    seconds: float
    requests: int = 0
    failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    allowed: int = 0
    rss_kib: tuple[int, int] = (0, 0)  # primary, after the first round of faults and at the end
    maps: tuple[int, int] = (0, 0)
    exit_code: int | None = None
    error: str = ""

    @property
    def passed(self) -> bool:
        return (
            not self.error
            and self.failed <= self.allowed
            and self.rss_kib[1] - self.rss_kib[0] <= RSS_SLACK_KIB
            and self.maps[1] - self.maps[0] <= MAPS_SLACK
        )


def running_workers(primary: int) -> list[int]:
    """Worker pids that neither exited nor are stopped, oldest pid first."""
    return sorted(pid for pid, state in children(primary) if state not in ("Z", "T", "t"))


def held_connections(pid: int) -> int:
    """TCP connections (listeners aside) that process ``pid`` holds a descriptor of."""
    inodes = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:["):-1])
    count = 0
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes and fields[3] != "0A":  # 0A: LISTEN
                count += 1
    return count


def wait_for(predicate: object, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)


def soak(policy: str, app: str, seconds: float, every: float, workers: int) -> Result:
    result = Result(policy, app, seconds, faults={fault: 0 for fault in FAULTS})
    log = Path(tempfile.mkstemp(prefix=f"soak-{policy}-", suffix=".log")[1])
    env = {k: v for k, v in os.environ.items() if k not in ("WEB_CONCURRENCY", "CLUSTERRUN_SCHED_POLICY")}
    argv = [sys.executable, "-m", "clusterrun", app, "--port", "0", "--workers", str(workers), "--policy", policy,
            "--timeout", str(TIMEOUT)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT / "sample_apps", env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: "ready:" in log.read_text() or proc.poll() is not None, "the cluster to be ready")
        text = log.read_text()
        port = int(text.split("listening on http://127.0.0.1:", 1)[1].split()[0])
        tally = asyncio.run(_load_with_faults(proc.pid, port, seconds, every, workers, result))
        result.requests, result.failed = tally.requests, tally.failed
        result.failures = {kind: getattr(tally, kind) for kind in
                           ("connect_errors", "dropped_fresh", "dropped_reused", "timeouts") if getattr(tally, kind)}
        result.failures.update({f"status {s}": n for s, n in tally.statuses.items()})
        rss, maps = primary_memory(proc.pid)
        result.rss_kib, result.maps = (result.rss_kib[0], rss), (result.maps[0], maps)
    except Exception as exc:  # one policy failing must not cost the others their results
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            result.exit_code = proc.wait(30)
        except subprocess.TimeoutExpired:
            result.error = result.error or "the cluster did not stop within 30 s of SIGTERM"
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.returncode not in (0, None) and not result.error:
            result.error = f"the cluster exited {proc.returncode}: see {log}"
        elif not result.error:
            log.unlink()
    return result


async def _load_with_faults(primary: int, port: int, seconds: float, every: float, workers: int,
                            result: Result) -> tagged.Tally:
    plan = tagged.Plan("127.0.0.1", port, seconds + 5, keepalive=4, fresh=4, timeout=15.0)
    stop = asyncio.Event()
    load = asyncio.ensure_future(tagged.drive(plan, stop))
    began = time.monotonic()
    turn = 0
    rss, maps = primary_memory(primary)  # the baseline of a run too short for a whole round of faults
    result.rss_kib, result.maps = (rss, 0), (maps, 0)
    while time.monotonic() - began + every <= seconds:
        await asyncio.sleep(every)
        fault = FAULTS[turn % len(FAULTS)]
        turn += 1
        live = running_workers(primary)
        if fault == "reload":
            os.kill(primary, signal.SIGHUP)
        elif live:
            # Stopped first, so that the count of what it holds is exact: a stopped process takes nothing more.
            os.kill(live[-1], signal.SIGSTOP)
            result.allowed += held_connections(live[-1])
            if fault == "kill":
                os.kill(live[-1], signal.SIGKILL)
        result.faults[fault] += 1
        if turn == len(FAULTS):  # the baseline moves past the first round: warm-up is no leak
            rss, maps = primary_memory(primary)
            result.rss_kib, result.maps = (rss, 0), (maps, 0)
    await asyncio.sleep(max(0.0, seconds - (time.monotonic() - began)))
    # The last fault's worker is replaced before the load stops: its cost is counted, not cut off.
    await asyncio.to_thread(wait_for, lambda: len(running_workers(primary)) >= workers, "every slot to serve again")
    stop.set()
    return await load


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="load time per policy (default 60)")
    parser.add_argument("--every", type=float, default=4.0, help="seconds between faults (default 4)")
    parser.add_argument("--policy", action="append", choices=POLICIES, help="repeat; default: every policy")
    parser.add_argument("--app", default="flask_app:app", help="a sample app (default flask_app:app)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="one JSON object per policy instead of a table")
    args = parser.parse_args()
    if args.seconds > 600 or args.every < 1:
        parser.error("--seconds is at most 600 and --every at least 1: the soak is bounded")
    results = [soak(policy, args.app, args.seconds, args.every, args.workers) for policy in args.policy or POLICIES]
    for r in results:
        if args.json:
            print(json.dumps(dict(asdict(r), passed=r.passed)))
        else:
            print(f"{r.policy:<10} {r.requests:>7} requests, {r.failed:>3} failed {r.failures or ''} "
                  f"(allowed {r.allowed}: faults {r.faults}); primary RSS {r.rss_kib[0]} -> {r.rss_kib[1]} KiB, "
                  f"maps {r.maps[0]} -> {r.maps[1]}; {'PASS' if r.passed else 'FAIL'} {r.error}")
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
