"""Restart throttling, per slot: which deaths count toward giving a slot up, and how long a respawn waits.

A worker's death is one of three kinds, told apart by the primary from what the worker left behind:

- served: its app took a request. The worker marks a shared page before its app runs its first request
  (spawn.py), so a worker that died with its very first request in flight has taken one. A request can
  crash a worker (a segfault, ``os._exit``, the OOM killer), and no client may take the service down by
  doing it again and again: such a death is never counted, and its slot is respawned at once, always (as
  gunicorn does).
- stable: it never took a request, but it was ready for ``min_uptime`` seconds (PM2's ``min_uptime``): an
  idle worker killed from outside. Not counted; respawned at once.
- unstable: it never took a request and died before it was ready, or within ``min_uptime`` seconds of it
  (a broken deploy, a crash at start-up). Only these count: a slot with more than ``max_restarts`` of them
  within ``window`` seconds is not respawned again.

Backoff, as PM2's ``exp_backoff_restart_delay``, for unstable deaths only: the first of a run of them is
respawned at once, the n-th in a row waits ``first_delay * 2**(n-2)`` seconds (``--restart-delay``), at most
``max_delay`` (``--restart-delay-max``); a
served or stable death ends the run. And a delay never leaves the cluster with nothing: when no other
worker is serving, the respawn is at once, whatever the run (the limit above still ends a crash loop).

A fork the system refuses (EAGAIN past ``ulimit -u``, ENOMEM) is no death: nothing ran. The slot is tried
again after a wait that grows the same way, for as long as it takes, and never counted.

A pure object: the clock is injected, so tests need no sleeps.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from clusterrun.config.options import Config

# The defaults of --restart-delay and --restart-delay-max.
FIRST_DELAY = Config.restart_delay
MAX_DELAY = Config.restart_delay_max


@dataclass(frozen=True)
class Decision:
    respawn: bool
    delay: float  # seconds to wait before the respawn
    deaths: int  # unstable deaths of the slot within the window, this one included
    stable: bool = False  # this death does not count toward the limit (it served, or stayed up --min-uptime)
    crashes: int = 0  # every death of the slot so far, of any kind
    served: bool = False  # the worker had taken a request


class RestartThrottle:
    def __init__(
        self, max_restarts: int, window: float, clock: Callable[[], float] = time.monotonic,
        first_delay: float = FIRST_DELAY, max_delay: float = MAX_DELAY, min_uptime: float = 1.0,
    ) -> None:
        self.max_restarts = max_restarts
        self.window = window
        self.min_uptime = min_uptime
        self.first_delay = first_delay
        self.max_delay = max_delay
        self._clock = clock
        self._deaths: dict[int, deque[float]] = {}
        self._streak: dict[int, int] = {}  # unstable deaths in a row
        self._crashes: dict[int, int] = {}

    def record_death(self, slot: int, ready_for: float | None = None, took_request: bool = False,
                     others_serving: bool = True) -> Decision:
        """Note one death of ``slot`` and decide what comes next.

        ``ready_for``: seconds from the worker's ready to its death, None if it never was ready;
        ``took_request``: its app took a request; ``others_serving``: another worker of the cluster serves now.
        """
        now = self._clock()
        stable = took_request or (ready_for is not None and ready_for >= self.min_uptime)
        deaths = self._deaths.setdefault(slot, deque())
        if not stable:
            deaths.append(now)
        while deaths and now - deaths[0] > self.window:
            deaths.popleft()
        crashes = self._crashes[slot] = self._crashes.get(slot, 0) + 1
        streak = self._streak[slot] = 0 if stable else self._streak.get(slot, 0) + 1
        delay = 0.0
        if streak > 1 and others_serving:
            delay = min(self.max_delay, self.first_delay * 2 ** (streak - 2))
        return Decision(stable or len(deaths) <= self.max_restarts, delay, len(deaths), stable, crashes, took_request)

    def fork_refused(self, slot: int) -> float:
        """The system refused to fork a worker for ``slot`` (the process limit, memory): seconds to wait before
        trying again. No worker ran, so nothing counts toward the limit; the wait is never 0, since trying again
        at once would meet the same refusal, and it grows as unstable deaths' does, up to ``max_delay``."""
        streak = self._streak[slot] = self._streak.get(slot, 0) + 1
        return float(min(self.max_delay, self.first_delay * 2 ** (streak - 1)))

    def crashes(self, slot: int) -> int:
        """How often the slot's workers died unplanned, in all: its respawns."""
        return self._crashes.get(slot, 0)

    def deaths(self, slot: int) -> int:
        return len(self._deaths.get(slot, ()))
