"""A soak with chaos: load a cluster while its workers are killed, stopped and replaced, and count the cost.

    python bench/soak.py                          # 60 s per policy: rr, shared and the default policy
    python bench/soak.py --seconds 600 --policy rr --policy shared --policy default   # the 10-minute record
    python bench/soak.py --seconds 12 --every 2 --policy rr --json

8 client loops (4 keep-alive, 4 with a new connection per request) load the
Flask sample on 2 workers for ``--seconds``, with ``--max-requests 500`` (so
workers are recycled all along and most are young). Every ``--every`` seconds
(default 3) one fault, in turn, on a serving worker picked at random (its
state read from the control socket): it is SIGKILLed; it is SIGSTOPped and
resumed with SIGCONT ``--stop-for`` seconds later (default 1, under the
cluster's ``--timeout`` 2: a pause, not a hang; past it, the watchdog kills
the worker); the cluster gets SIGHUP (a rolling restart). ``--policy default``
runs without ``--policy``: whatever clusterrun's default is.

What a fault may cost is what was in flight on the worker it killed: each
client loop has at most one request outstanding on its connection, so the
verdict allows one failed request per client connection the killed worker held
at that moment (read from /proc, with the worker stopped first so the count is
exact): the request in flight on it, or the next one on a keep-alive
connection to it. None for a pause, a reload or a recycle. The report says
how many failures came within 2 s of a kill (or, for a worker stopped past
``--timeout``, between its stop and 2 s after the watchdog's kill; the rest
are unexplained), the
cluster's own count of respawns and recycles, whether every slot served at the
end, and the primary's resident memory and memory maps after the first round
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
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import tagged
from procs import primary_memory

from clusterrun.ctl.client import request
from clusterrun.errors import ControlError

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ("rr", "least-conn", "sticky", "shared", "reuseport", "default")  # default: no --policy
RECORD_POLICIES = ("rr", "shared", "default")  # what the soak runs unless told
FAULTS = ("kill", "stop", "reload")
TIMEOUT = 2.0  # --timeout of the cluster: a worker stopped this long after its last heartbeat is killed
EXPLAINED_WITHIN = 2.0  # seconds after a kill in which a failure is put down to it
# Growth of the primary allowed between the first round of faults and the end: allocator noise, not a leak
# (a leak of one channel buffer per replaced worker is 256 KiB each, dozens of MiB over a soak).
RSS_SLACK_KIB = 2048
MAPS_SLACK = 8


@dataclass
class Result:
    policy: str
    app: str
    seconds: float
    max_requests: int = 0
    requests: int = 0
    failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    faults: dict[str, int] = field(default_factory=dict)
    allowed: int = 0  # client connections the killed workers held: each may cost one request
    near_kills: int = 0  # failures within EXPLAINED_WITHIN seconds after a kill
    respawns: int = 0  # the cluster's own count (its status)
    recycles: int = 0  # workers replaced for --max-requests (its log)
    serving_at_end: int = 0  # slots serving when the load stopped
    rss_kib: tuple[int, int] = (0, 0)  # primary, after the first round of faults and at the end
    maps: tuple[int, int] = (0, 0)
    exit_code: int | None = None
    error: str = ""

    @property
    def unexplained(self) -> int:
        return self.failed - self.near_kills

    @property
    def passed(self) -> bool:
        return (
            not self.error
            and self.exit_code == 0
            and self.failed <= self.allowed
            and self.rss_kib[1] - self.rss_kib[0] <= RSS_SLACK_KIB
            and self.maps[1] - self.maps[0] <= MAPS_SLACK
        )


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


def status(control: str) -> dict[str, Any]:
    return request(control, "status")


def serving_pids(control: str) -> list[int]:
    """The workers that serve a slot now (not starting, not draining), from the cluster's own status."""
    return [w["pid"] for w in status(control)["workers"] if w["state"] == "ready"]


def every_slot_serves(control: str, workers: int) -> bool:
    with contextlib.suppress(ControlError):
        return int(status(control)["ready"]) >= workers
    return False


def soak(policy: str, app: str, seconds: float, every: float, workers: int, max_requests: int,
         stop_for: float) -> Result:
    result = Result(policy, app, seconds, max_requests, faults={fault: 0 for fault in FAULTS})
    log = Path(tempfile.mkstemp(prefix=f"soak-{policy}-", suffix=".log")[1])
    folder = tempfile.mkdtemp(prefix="soak-")
    control = os.path.join(folder, "control.sock")
    env = {k: v for k, v in os.environ.items() if k not in ("WEB_CONCURRENCY", "CLUSTERRUN_SCHED_POLICY")}
    argv = [sys.executable, "-m", "clusterrun", app, "--port", "0", "--workers", str(workers),
            "--timeout", str(TIMEOUT), "--control", control, "--max-requests", str(max_requests)]
    if policy != "default":
        argv += ["--policy", policy]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=ROOT / "sample_apps", env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: "ready:" in log.read_text() or proc.poll() is not None, "the cluster to be ready")
        text = log.read_text()
        port = int(text.split("listening on http://127.0.0.1:", 1)[1].split()[0])
        tally, kills = asyncio.run(_load_with_faults(proc.pid, control, port, seconds, every, workers, stop_for,
                                                     result))
        result.requests, result.failed = tally.requests, tally.failed
        result.failures = {kind: getattr(tally, kind) for kind in
                           ("connect_errors", "dropped_fresh", "dropped_reused", "timeouts") if getattr(tally, kind)}
        result.failures.update({f"status {s}": n for s, n in tally.statuses.items()})
        result.near_kills = sum(1 for t in tally.failure_times if any(start <= t <= end for start, end in kills))
        end = status(control)
        result.respawns, result.serving_at_end = int(end["restarts"]), int(end["ready"])
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
        shutil.rmtree(folder, ignore_errors=True)
        output = log.read_text(errors="replace")
        result.recycles = len(re.findall(r"recycling worker \d+", output))
        if proc.returncode not in (0, None) and not result.error:
            result.error = f"the cluster exited {proc.returncode}: see {log}"
        elif not result.error:
            log.unlink()
    return result


async def _load_with_faults(primary: int, control: str, port: int, seconds: float, every: float, workers: int,
                            stop_for: float, result: Result) -> tuple[tagged.Tally, list[tuple[float, float]]]:
    plan = tagged.Plan("127.0.0.1", port, seconds + 5, keepalive=4, fresh=4, timeout=15.0)
    stop = asyncio.Event()
    load = asyncio.ensure_future(tagged.drive(plan, stop))
    loop = asyncio.get_running_loop()
    pick = random.Random(0)  # the same faults on the same turns, run after run
    kills: list[tuple[float, float]] = []  # when a failure may be put down to a kill: from, until
    began = time.monotonic()
    turn = 0
    rss, maps = primary_memory(primary)  # the baseline of a run too short for a whole round of faults
    result.rss_kib, result.maps = (rss, 0), (maps, 0)
    while time.monotonic() - began + every <= seconds:
        await asyncio.sleep(every)
        fault = FAULTS[turn % len(FAULTS)]
        turn += 1
        if fault == "reload":
            os.kill(primary, signal.SIGHUP)
        else:
            live = await asyncio.to_thread(serving_pids, control)
            if not live:
                continue  # every slot is being replaced: no fault this turn (not counted)
            victim = pick.choice(live)
            # Stopped first, so that the count of what it holds is exact: a stopped process takes nothing more.
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGSTOP)
            if fault == "kill":
                result.allowed += held_connections(victim)
                kills.append((time.monotonic(), time.monotonic() + EXPLAINED_WITHIN))
                with contextlib.suppress(ProcessLookupError):
                    os.kill(victim, signal.SIGKILL)
            else:
                if stop_for >= TIMEOUT:  # the watchdog kills it: what it holds is lost as with a kill
                    result.allowed += held_connections(victim)
                    kills.append((time.monotonic(), time.monotonic() + TIMEOUT + EXPLAINED_WITHIN))
                loop.call_later(stop_for, _resume, victim)
        result.faults[fault] += 1
        if turn == len(FAULTS):  # the baseline moves past the first round: warm-up is no leak
            rss, maps = primary_memory(primary)
            result.rss_kib, result.maps = (rss, 0), (maps, 0)
    await asyncio.sleep(max(0.0, seconds - (time.monotonic() - began)))
    # The last fault's worker is replaced (or resumed) before the load stops: its cost is counted, not cut off.
    await asyncio.to_thread(wait_for, lambda: every_slot_serves(control, workers), "every slot to serve again")
    stop.set()
    return await load, kills


def _resume(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="load time per policy (default 60; the "
                        "record: 600)")
    parser.add_argument("--every", type=float, default=3.0, help="seconds between faults (default 3)")
    parser.add_argument("--stop-for", type=float, default=1.0, help="seconds a stopped worker stays stopped "
                        f"before SIGCONT (default 1; at least --timeout {TIMEOUT:g} and the watchdog kills it)")
    parser.add_argument("--max-requests", type=int, default=500, help="the cluster's --max-requests (default "
                        "500; 0: no recycling)")
    parser.add_argument("--policy", action="append", choices=POLICIES,
                        help=f"repeat; default: {', '.join(RECORD_POLICIES)} (default: clusterrun's own)")
    parser.add_argument("--app", default="flask_app:app", help="a sample app (default flask_app:app)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="one JSON object per policy instead of a line")
    args = parser.parse_args()
    if args.seconds > 3600 or args.every < 1:
        parser.error("--seconds is at most 3600 and --every at least 1: the soak is bounded")
    results = []
    for policy in args.policy or RECORD_POLICIES:
        results.append(soak(policy, args.app, args.seconds, args.every, args.workers, args.max_requests,
                            args.stop_for))
        r = results[-1]
        if args.json:
            print(json.dumps(dict(asdict(r), passed=r.passed, unexplained=r.unexplained)), flush=True)
        else:
            print(f"{r.policy:<10} {r.seconds:g} s, --max-requests {r.max_requests}: {r.requests} requests, "
                  f"{r.failed} failed {r.failures or ''} (allowed {r.allowed}: the connections killed workers "
                  f"held; {r.near_kills} within {EXPLAINED_WITHIN:g} s of a kill, {r.unexplained} not); faults "
                  f"{r.faults}; {r.respawns} respawns, {r.recycles} recycles; {r.serving_at_end}/{args.workers} "
                  f"serving at the end, exit {r.exit_code} on TERM; primary RSS {r.rss_kib[0]} -> {r.rss_kib[1]} "
                  f"KiB, maps {r.maps[0]} -> {r.maps[1]}; {'PASS' if r.passed else 'FAIL'} {r.error}", flush=True)
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
