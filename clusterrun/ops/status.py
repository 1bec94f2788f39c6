"""What ``clusterrun status`` shows: the cluster and one row per worker, as documented JSON.

The workers' counts (requests served, open connections, requests in flight) come with their heartbeat;
memory and CPU are read by the primary from /proc, so that a hung worker is measured too. Elsewhere than
Linux these two are null.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from clusterrun.host.procstats import ProcSampler
from clusterrun.primary.handle import WorkerHandle
from clusterrun.primary.pool import Pool


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

    def __init__(self, pool: Pool, clock: Callable[[], float], policy: str) -> None:
        self.pool = pool
        self.clock = clock
        self.policy = policy  # its name
        self._previous: tuple[float, int] | None = None  # (when, requests served in all) at the last call

    def __call__(self) -> str:
        pool = self.pool
        now = self.clock()
        served = (sum(w.counts.requests for w in pool.workers.values())
                  + sum(t.requests for t in pool.tally.slots.values()))
        previous, self._previous = self._previous, (now, served)
        rate = (served - previous[1]) / (now - previous[0]) if previous and now > previous[0] else 0.0
        ready = sum(1 for w in pool.slots.values() if w.is_ready)
        state = ("stopping" if pool.stopping else "reloading" if pool.rollout.active
                 else f"{ready}/{pool.target} workers ready")
        return f"{state}, policy {self.policy}, {rate:,.0f} req/s"
