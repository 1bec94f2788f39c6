"""``--metrics``: the primary serves ``GET /metrics`` in the Prometheus text format, in its one wait.

The cluster's metrics are read at scrape time from the pool (states, restarts, reloads), the dispatcher
(backlog), the workers' heartbeat counts (requests, durations, connections) and /proc (memory, CPU). Every
counter adds the slot's tally (clusterrun.primary.tally) to its live workers, so none goes backwards across crashes,
recycling and rolling restarts. An app's own prometheus_client metrics are merged in through the library's
multiprocess mode (clusterrun.ops.appmetrics): every worker writes its values to files in one folder.
What the endpoint reads of the primary comes in a ``Probe``, not the Primary.
"""

from __future__ import annotations

import logging
import selectors
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from clusterrun.errors import ConfigError
from clusterrun.host import listeners
from clusterrun.host.listeners import BindAddress
from clusterrun.host.procstats import rss_bytes
from clusterrun.host.timers import Timers
from clusterrun.ops.appmetrics import forget_dead_workers
from clusterrun.ops.oneshot import OneShotServer
from clusterrun.primary.handle import WorkerState
from clusterrun.primary.pool import Pool
from clusterrun.primary.tally import SlotTally
from clusterrun.wire.requeststats import BUCKETS, CLASSES

logger = logging.getLogger("clusterrun")

# prometheus_client is imported in the functions that use it: it is optional (clusterrun[metrics]), and it reads
# PROMETHEUS_MULTIPROC_DIR once, at import, which the door sets first (clusterrun.ops.appmetrics).


def require_client() -> None:
    """--metrics needs prometheus_client: a ConfigError (exit 2) naming the fix when it is missing."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise ConfigError("--metrics needs prometheus_client: pip install prometheus_client") from None


@dataclass(frozen=True)
class Probe:
    """What /metrics and /readyz read of the primary, at each request."""

    pool: Pool
    backlog: Callable[[], int]  # connections accepted and held for want of a worker (the dispatcher's)
    shutting_down: Callable[[], bool]  # told to stop: /readyz says so from then on, --shutdown-delay included


class MetricsServer(OneShotServer):
    """HTTP/1.x, one request per connection: GET /metrics (with --metrics), /livez and /readyz; else 404.

    /livez answers 200 whenever the primary's loop turns. /readyz answers 200 while a worker serves and the
    cluster is not stopping: on SIGTERM it turns 503 at once, while --shutdown-delay keeps serving, so that a
    load balancer (Kubernetes' endpoints) stops sending traffic before the workers drain.
    """

    def __init__(self, address: BindAddress, selector: selectors.BaseSelector, timers: Timers, probe: Probe,
                 app_metrics_dir: str | None, metrics: bool = True) -> None:
        super().__init__(selector, timers)
        self.address = address
        self.probe = probe
        self.app_metrics_dir = app_metrics_dir
        self.metrics = metrics

    def describe(self) -> str:
        where = listeners.describe(self.sock) if self.sock is not None else str(self.address)
        return f"{'--metrics' if self.metrics else '--health'} {where}"

    def open(self) -> str:
        """Bind the endpoint (BindError, exit 2, if it cannot be); its URL."""
        sock = listeners.bind(self.address, backlog=64)
        self.serve(sock)
        return listeners.describe(sock)

    def answer(self, received: bytes) -> bytes | None:
        if b"\r\n\r\n" not in received and b"\n\n" not in received:
            return None
        method, _, rest = received.partition(b" ")
        target = rest.partition(b" ")[0].partition(b"?")[0]
        if method not in (b"GET", b"HEAD"):
            return _response(b"405 Method Not Allowed", b"text/plain", b"GET or HEAD\n", method)
        if target == b"/livez":
            return _response(b"200 OK", b"text/plain", b"ok\n", method)
        if target == b"/readyz":
            ready, why = self._readiness()
            return _response(b"200 OK" if ready else b"503 Service Unavailable", b"text/plain", why, method)
        if target != b"/metrics" or not self.metrics:
            paths = b"/metrics, /livez and /readyz" if self.metrics else b"/livez and /readyz"
            return _response(b"404 Not Found", b"text/plain", b"clusterrun serves " + paths + b"\n", method)
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return _response(b"200 OK", CONTENT_TYPE_LATEST.encode(), generate_latest(self._registry()), method)

    def _readiness(self) -> tuple[bool, bytes]:
        if self.probe.shutting_down():
            return False, b"stopping\n"
        pool = self.probe.pool
        serving = sum(1 for w in pool.slots.values() if w.is_ready)
        return serving > 0, f"{serving}/{pool.target} workers serving\n".encode()

    def too_large(self) -> bytes:
        return _response(b"431 Request Header Fields Too Large", b"text/plain", b"request head too large\n", b"GET")

    def _registry(self) -> Any:
        from prometheus_client import CollectorRegistry

        registry = CollectorRegistry(auto_describe=False)
        registry.register(ClusterCollector(self.probe.pool, self.probe.backlog))
        if self.app_metrics_dir is not None:
            from prometheus_client import multiprocess

            forget_dead_workers(self.app_metrics_dir, {w.pid for w in self.probe.pool.workers.values()})
            multiprocess.MultiProcessCollector(registry, path=self.app_metrics_dir)  # type: ignore[no-untyped-call]
        return registry


def _response(status: bytes, content_type: bytes, body: bytes, method: bytes) -> bytes:
    head = (b"HTTP/1.1 " + status + b"\r\nContent-Type: " + content_type + b"\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n")
    return head if method == b"HEAD" else head + body


class ClusterCollector:
    """The cluster's own metrics, built at each scrape from the pool and the dispatcher's backlog."""

    def __init__(self, pool: Pool, backlog: Callable[[], int]) -> None:
        self.pool = pool
        self.backlog = backlog

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        pool = self.pool
        states = Counter(w.state for w in pool.workers.values())
        workers = GaugeMetricFamily("clusterrun_workers", "Worker processes by state.", labels=["state"])
        for state in (WorkerState.STARTING, WorkerState.READY, WorkerState.DRAINING):
            workers.add_metric([state.value], states[state])
        yield workers
        yield GaugeMetricFamily("clusterrun_workers_target", "Workers the cluster keeps.", value=pool.target)
        restarts = CounterMetricFamily("clusterrun_worker_restarts", "Unplanned worker exits, by slot and how.",
                                       labels=["slot", "reason"])
        for (slot, reason), count in sorted(pool.tally.restarts.items()):
            restarts.add_metric([str(slot), reason], count)
        yield restarts
        reloads = CounterMetricFamily("clusterrun_reloads", "Rolling restarts, by outcome.", labels=["outcome"])
        for outcome in ("complete", "aborted"):
            reloads.add_metric([outcome], pool.rollout.finished[outcome])
        yield reloads
        yield GaugeMetricFamily("clusterrun_dispatch_backlog", "Accepted connections waiting for a worker.",
                                value=self.backlog())
        yield from self._per_slot()

    def _per_slot(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        slots = self._slot_totals()
        requests = CounterMetricFamily("clusterrun_requests", "Responses, by worker slot and status class.",
                                       labels=["worker_index", "status_class"])
        dispatched = CounterMetricFamily("clusterrun_connections_dispatched",
                                         "Connections the primary handed to a worker slot.", labels=["worker_index"])
        cpu = CounterMetricFamily("clusterrun_worker_cpu_seconds", "CPU time of a slot's workers.",
                                  labels=["worker_index"])
        buckets = [0] * (len(BUCKETS) + 1)
        seconds = 0.0
        for index, total in sorted(slots.items()):
            for name, count in zip(CLASSES, total.statuses, strict=True):
                requests.add_metric([str(index), name], count)
            dispatched.add_metric([str(index)], total.dispatched)
            cpu.add_metric([str(index)], total.cpu_seconds)
            buckets = [a + b for a, b in zip(buckets, total.buckets, strict=True)]
            seconds += total.seconds
        yield requests
        yield dispatched
        yield cpu
        cumulative, running = [], 0
        for bound, count in zip([*map(str, BUCKETS), "+Inf"], buckets, strict=True):
            running += count
            cumulative.append((bound, running))
        duration = HistogramMetricFamily("clusterrun_request_duration_seconds",
                                         "Time from a request's head to the app's return.")
        duration.add_metric([], cumulative, sum_value=seconds)
        yield duration
        connections = GaugeMetricFamily("clusterrun_open_connections", "Open connections, by worker slot.",
                                        labels=["worker_index"])
        memory = GaugeMetricFamily("clusterrun_worker_resident_memory_bytes", "Resident memory, by worker slot.",
                                   labels=["worker_index"])
        for index in sorted(slots):
            live = [w for w in self.pool.workers.values() if w.index == index]
            connections.add_metric([str(index)], sum(w.open_connections if w.dispatched else w.counts.connections
                                                     for w in live))
            memory.add_metric([str(index)], sum(rss_bytes(w.pid) or 0 for w in live))
        yield connections
        yield memory

    def _slot_totals(self) -> dict[int, SlotTally]:
        tally = self.pool.tally
        indexes = set(tally.slots) | {w.index for w in self.pool.workers.values()}
        totals = {index: tally.slot(index) for index in indexes}
        for handle in self.pool.workers.values():
            totals[handle.index].add(handle)
        return totals
