"""What exited workers did, per slot, so that the cluster's counters never go backwards.

A worker's counts live in its handle while it runs (they come with its heartbeat). When it exits, the pool
folds its last counts into its slot's tally here; the metrics add the tally and the live workers. So a
crash, a recycle or a rolling restart moves counts from a worker to its slot's tally, never drops them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from clusterrun.primary.handle import WorkerHandle
from clusterrun.wire.requeststats import BUCKETS, CLASSES


@dataclass
class SlotTally:
    requests: int = 0
    statuses: list[int] = field(default_factory=lambda: [0] * len(CLASSES))
    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    seconds: float = 0.0
    dispatched: int = 0
    cpu_seconds: float = 0.0

    def add(self, handle: WorkerHandle) -> None:
        counts = handle.counts
        self.requests += counts.requests
        for i, count in enumerate(counts.statuses[:len(self.statuses)]):
            self.statuses[i] += count
        for i, count in enumerate(counts.buckets[:len(self.buckets)]):
            self.buckets[i] += count
        self.seconds += counts.seconds
        self.dispatched += handle.dispatched
        self.cpu_seconds += handle.cpu_seconds


class Tally:
    def __init__(self) -> None:
        self.slots: dict[int, SlotTally] = {}
        self.restarts: Counter[tuple[int, str]] = Counter()  # (slot, how the worker exited)

    def fold(self, handle: WorkerHandle) -> None:
        self.slots.setdefault(handle.index, SlotTally()).add(handle)

    def slot(self, index: int) -> SlotTally:
        """The slot's tally plus nothing live: a fresh copy to add live workers to."""
        folded = self.slots.get(index)
        total = SlotTally()
        if folded is not None:
            total.requests, total.seconds = folded.requests, folded.seconds
            total.statuses, total.buckets = list(folded.statuses), list(folded.buckets)
            total.dispatched, total.cpu_seconds = folded.dispatched, folded.cpu_seconds
        return total
