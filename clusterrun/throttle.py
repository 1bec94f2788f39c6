"""Restart throttling, per slot: a slot that keeps dying is given up, not respawned forever."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class RestartThrottle:
    """Counts deaths per slot in a sliding window; the clock is injected so tests need no sleeps."""

    def __init__(self, max_restarts: int, window: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_restarts = max_restarts
        self.window = window
        self._clock = clock
        self._deaths: dict[int, deque[float]] = {}

    def record_death(self, slot: int) -> bool:
        """Note one death of ``slot``; True if it may be respawned, False once it died too often."""
        now = self._clock()
        deaths = self._deaths.setdefault(slot, deque())
        deaths.append(now)
        while deaths and now - deaths[0] > self.window:
            deaths.popleft()
        return len(deaths) <= self.max_restarts

    def deaths(self, slot: int) -> int:
        return len(self._deaths.get(slot, ()))

    def forget(self, slot: int) -> None:
        self._deaths.pop(slot, None)
