"""Restart throttling, per slot: a slot that keeps dying waits longer each time, then is given up.

Two rules, as PM2's ``exp_backoff_restart_delay`` and ``min_uptime``:

- backoff: the first death of a slot is respawned at once (a one-off crash costs no extra downtime);
  the n-th consecutive quick death waits ``first_delay * 2**(n-2)`` seconds (capped); a worker that
  stayed up ``healthy_after`` seconds resets the sequence;
- limit: only unstable deaths count — a worker that died before it was ready, or within ``min_uptime``
  seconds of it. A slot with more than ``max_restarts`` of those within ``window`` seconds is not
  respawned. A worker that served and then died is always respawned (with the backoff): a request can
  crash a worker, and no client may take the service down by doing it again and again.

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
    deaths: int  # unstable deaths of the slot within the window, this one included
    stable: bool = False  # the worker had served for --min-uptime: this death does not count toward the limit
    crashes: int = 0  # every death of the slot so far, stable or not


class RestartThrottle:
    def __init__(
        self, max_restarts: int, window: float, clock: Callable[[], float] = time.monotonic,
        first_delay: float = FIRST_DELAY, max_delay: float = MAX_DELAY, healthy_after: float = HEALTHY_AFTER,
        min_uptime: float = 1.0,
    ) -> None:
        self.max_restarts = max_restarts
        self.window = window
        self.min_uptime = min_uptime
        self.first_delay = first_delay
        self.max_delay = max_delay
        self.healthy_after = healthy_after
        self._clock = clock
        self._deaths: dict[int, deque[float]] = {}
        self._streak: dict[int, int] = {}  # consecutive quick deaths
        self._crashes: dict[int, int] = {}

    def record_death(self, slot: int, uptime: float = 0.0, served: float | None = None) -> Decision:
        """Note one death of ``slot`` and decide what comes next.

        ``uptime``: seconds since the worker was forked; ``served``: seconds since it was ready, None if it
        never was.
        """
        now = self._clock()
        stable = served is not None and served >= self.min_uptime
        deaths = self._deaths.setdefault(slot, deque())
        if not stable:
            deaths.append(now)
        while deaths and now - deaths[0] > self.window:
            deaths.popleft()
        crashes = self._crashes[slot] = self._crashes.get(slot, 0) + 1
        streak = 1 if uptime >= self.healthy_after else self._streak.get(slot, 0) + 1
        self._streak[slot] = streak
        delay = 0.0 if streak == 1 else min(self.max_delay, self.first_delay * 2 ** (streak - 2))
        return Decision(stable or len(deaths) <= self.max_restarts, delay, len(deaths), stable, crashes)

    def crashes(self, slot: int) -> int:
        """How often the slot's workers died unplanned, in all: its respawns."""
        return self._crashes.get(slot, 0)

    def deaths(self, slot: int) -> int:
        return len(self._deaths.get(slot, ()))
