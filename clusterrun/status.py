"""What ``clusterrun status`` shows: the cluster and one row per worker, as documented JSON.

The workers' counts (requests served, open connections, requests in flight) come with their heartbeat;
memory and CPU are read by the primary from /proc, so that a hung worker is measured too. Elsewhere than
Linux these two are null.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .supervision import WorkerHandle

if TYPE_CHECKING:
    from .primary import Primary

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass
class _Sample:
    at: float
    cpu_seconds: float


class ProcSampler:
    """Each worker's resident memory and CPU use, the CPU as a percentage since the previous look."""

    def __init__(self) -> None:
        self._last: dict[int, _Sample] = {}

    def sample(self, pid: int, started: float, now: float) -> tuple[int | None, float | None, float | None]:
        """(RSS bytes, CPU seconds, CPU %) of ``pid``; its first look averages over its life from ``started``."""
        cpu = cpu_seconds(pid)
        rss = rss_bytes(pid)
        if cpu is None:
            return rss, None, None
        previous = self._last.get(pid) or _Sample(started, 0.0)
        self._last[pid] = _Sample(now, cpu)
        elapsed = now - previous.at
        percent = 100.0 * (cpu - previous.cpu_seconds) / elapsed if elapsed > 0 else 0.0
        return rss, cpu, round(max(0.0, percent), 1)

    def forget_except(self, pids: Iterable[int]) -> None:
        live = set(pids)
        for pid in [pid for pid in self._last if pid not in live]:
            del self._last[pid]


def cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()  # after the command name, which may hold spaces
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime


def rss_bytes(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except OSError:
        return None


def worker_row(handle: WorkerHandle, now: float, sampler: ProcSampler, restarts: int, last_exit: str) -> dict[
    str, Any
]:
    rss, cpu_seconds, cpu_percent = sampler.sample(handle.pid, handle.started, now)
    counts = handle.counts
    # Under a primary-side policy the primary knows the open connections best (passed, less closed): it also
    # counts those on their way to the worker.
    connections = handle.open_connections if handle.dispatched else counts.connections
    row: dict[str, Any] = {
        "id": handle.id, "index": handle.index, "pid": handle.pid, "state": handle.state.value,
        "uptime": round(now - handle.started, 3), "requests": counts.requests, "connections": connections,
        "in_flight": counts.in_flight, "rss_bytes": rss, "cpu_seconds": cpu_seconds, "cpu_percent": cpu_percent,
        "slot_restarts": restarts, "last_exit": last_exit or None,
    }
    if counts.buckets:  # with --metrics: the duration histogram (clusterrun top's percentiles)
        row["latency_buckets"] = list(counts.buckets)
    return row


def started_at(monotonic_start: float, now: float) -> float:
    """A moment of the monotonic clock as wall-clock seconds since the epoch (for people, not for timing)."""
    return round(time.time() - (now - monotonic_start), 3)


class StatusLine:
    """One line for people (systemctl status): "4/4 workers ready, policy rr, 1,234 req/s"."""

    def __init__(self, primary: Primary) -> None:
        self.primary = primary
        self._previous: tuple[float, int] | None = None  # (when, requests served in all) at the last call

    def __call__(self) -> str:
        pool = self.primary.pool
        now = self.primary.clock()
        served = (sum(w.counts.requests for w in pool.workers.values())
                  + sum(t.requests for t in pool.tally.slots.values()))
        previous, self._previous = self._previous, (now, served)
        rate = (served - previous[1]) / (now - previous[0]) if previous and now > previous[0] else 0.0
        ready = sum(1 for w in pool.slots.values() if w.is_ready)
        state = ("stopping" if pool.stopping else "reloading" if pool.rollout.active
                 else f"{ready}/{pool.target} workers ready")
        return f"{state}, policy {self.primary.policy.name}, {rate:,.0f} req/s"
