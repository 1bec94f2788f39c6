"""Deadlines for the primary's one wait: timers that only shorten it, never a thread or a signal."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable


class Timer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True
        # A cancelled timer stays in the heap until its deadline (a boot timer: --boot-timeout); its callback
        # goes now, so that it keeps alive nothing it refers to (a replaced worker's handle and buffers).
        self.callback = _nothing



class Timers:
    """Deadlines for the primary's loop: they only shorten its one wait."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._heap: list[tuple[float, int, Timer]] = []
        self._order = itertools.count()

    def add(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(self._clock() + delay, callback)
        heapq.heappush(self._heap, (timer.when, next(self._order), timer))
        return timer

    def wait_time(self) -> float | None:
        while self._heap and self._heap[0][2].cancelled:
            heapq.heappop(self._heap)
        if not self._heap:
            return None
        return max(0.0, self._heap[0][0] - self._clock())

    def run_due(self) -> None:
        now = self._clock()
        while self._heap and self._heap[0][0] <= now:
            _, _, timer = heapq.heappop(self._heap)
            if not timer.cancelled:
                timer.callback()



def _nothing() -> None:
    pass


NO_TIMER = Timer(0.0, _nothing)
