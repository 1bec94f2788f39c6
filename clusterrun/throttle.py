"""Restart throttling, per slot: a slot that keeps dying waits longer each time, then is given up.

Two rules, as PM2's ``exp_backoff_restart_delay`` plus gunicorn-style limits:

- backoff: the first death of a slot is respawned at once (a one-off crash costs no extra downtime);
  the n-th consecutive quick death waits ``first_delay * 2**(n-2)`` seconds (capped); a worker that
  stayed up ``healthy_after`` seconds resets the sequence;
- limit: a slot that died more than ``max_restarts`` times within ``window`` seconds is not respawned.

A pure object: the clock is injected, so tests need no sleeps.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

FIRST_DELAY = 0.1
MAX_DELAY = 10.0
HEALTHY_AFTER = 30.0


@dataclass(frozen=True)
class Decision:
    respawn: bool
    delay: float  # seconds to wait before the respawn
    deaths: int  # deaths of the slot within the window, this one included


class RestartThrottle:
    def __init__(
        self, max_restarts: int, window: float, clock: Callable[[], float] = time.monotonic,
        first_delay: float = FIRST_DELAY, max_delay: float = MAX_DELAY, healthy_after: float = HEALTHY_AFTER,
    ) -> None:
        self.max_restarts = max_restarts
        self.window = window
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.healthy_after = healthy_after
        self._clock = clock
        self._deaths: dict[int, deque[float]] = {}
        self._streak: dict[int, int] = {}  # consecutive quick deaths

    def record_death(self, slot: int, uptime: float = 0.0) -> Decision:
        """Note one death of ``slot`` after ``uptime`` seconds of life, and decide what comes next."""
        now = self._clock()
        deaths = self._deaths.setdefault(slot, deque())
        deaths.append(now)
        while deaths and now - deaths[0] > self.window:
            deaths.popleft()
        streak = 1 if uptime >= self.healthy_after else self._streak.get(slot, 0) + 1
        self._streak[slot] = streak
        delay = 0.0 if streak == 1 else min(self.max_delay, self.first_delay * 2 ** (streak - 2))
        return Decision(len(deaths) <= self.max_restarts, delay, len(deaths))

    def deaths(self, slot: int) -> int:
        return len(self._deaths.get(slot, ()))
