"""Per-request counts a worker keeps for --metrics: responses by status class, and a duration histogram.

Kept as plain integers in the worker and sent, whole, with every heartbeat (a few dozen numbers); the primary
turns them into Prometheus metrics (clusterrun.ops.metrics). Cumulative since the worker started, so that a lost
heartbeat loses nothing and the primary can fold a dead worker's last counts into the cluster's totals.
"""

from __future__ import annotations

from bisect import bisect_left

# Upper bounds in seconds, as prometheus_client's defaults, one more at 30 s for slow uploads.
BUCKETS: tuple[float, ...] = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 30.0)
CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


class RequestStats:
    __slots__ = ("buckets", "by_class", "seconds")

    def __init__(self) -> None:
        self.by_class = [0] * len(CLASSES)
        self.buckets = [0] * (len(BUCKETS) + 1)  # the last: above every bound (+Inf, not cumulative)
        self.seconds = 0.0

    def record(self, status: int, seconds: float) -> None:
        """One response: its status code and how long it took from the request's head to its last byte."""
        self.by_class[min(max(status // 100, 1), 5) - 1] += 1
        self.buckets[bisect_left(BUCKETS, seconds)] += 1
        self.seconds += seconds
