"""--policy balanced: every worker's open connections in one array that all workers read, and the rule each
worker follows with it (when to stop watching the shared listener, and when to watch it again).

Under ``shared`` the kernel hands a new connection to whichever worker calls ``accept`` first, and under
keep-alive the awake one takes them all (8/0 measured). Under ``balanced`` the workers accept on the same
listener, but each publishes how many connections it holds, and a worker stops watching the listener while it
holds more than the least-loaded live worker plus a slack (``SLACK``: none); the least-loaded worker never
stops, so the others take what it leaves. No hop through the primary, no frame, no system call per
connection: a count is one aligned 64-bit store into memory every worker maps.

The array (``Loads``) is an anonymous shared mapping the primary makes when the policy is chosen, before any
fork, so every worker and every respawn maps the same pages. The primary gives each worker its own cell when
it forks it (``take``) and takes it back once the worker is reaped (``release``, which zeroes it): one cell per
worker, not per slot index, because during a rolling restart the old worker of a slot and its replacement both
serve at once. A cell holds the worker's count and its stamp: the monotonic clock (the same for every process
of the machine) when the worker's loop last turned, written on a timer. Only a cell with a fresh stamp counts:

- a SIGSTOPped worker, or an inline worker stuck in a long request, holds its connections but accepts nothing;
  counted, it could hold the others below its count and new clients would wait. Its stamp goes stale within
  ``STALE`` and the others then ignore it; it counts again once its loop turns.
- a worker that drains zeroes its own stamp (it stopped accepting for good); a worker that died is zeroed by
  the primary when it is reaped, and its stamp would go stale anyway.
- a worker that has not started listening yet has no stamp.

The decision is a worker's own, made on what it reads: after each accept that leaves a connection open (it may
stop watching), after each of its closes while it is not watching (it may watch again), and on a timer, since
the others' counts change without telling it. Two workers can both stop watching for a moment: A stops when B
holds less, then B fills up past A and stops too before A looked again. So a worker that does not watch looks
again soon (``RECHECK_FIRST``, doubling up to ``RECHECK_MAX`` while nothing lets it watch): a new client waits
that long at most, in the kernel's backlog. A worker that watches looks every ``TICK`` (it also refreshes its
stamp then).
"""

from __future__ import annotations

import mmap
import time
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["SLACK", "AcceptBalance", "LoadCell", "Loads"]

# A worker stops watching while it holds more than the least-loaded live worker plus this many. Measured on 2
# workers (docs/policies.md): 8 keep-alive clients opened at once end 4/4 with 0 every time (5 of 5), 5/3 in 2
# of 5 runs with 1 and with 2; 64 opened at once are all answered in 25-60 ms with 0 or 1 (13-17 with 2; 5-9
# under shared, where they end 14/50 to 28/36), since at each step two workers may both wait for a re-check; a
# new connection per request costs the same CPU with 0, 1 or shared (134-143 us per request, Flask).
SLACK = 0
TICK = 0.1  # a watching worker's stamp and re-check
RECHECK_FIRST = 0.002  # a worker that stopped watching looks again this soon...
# ...then twice as late each time, up to this: the longest a new client waits in a burst where both workers
# stopped. A worker that stays stopped (it holds one more than the other and no client comes or goes) wakes 50
# times a second for it, about 0.1% of a core.
RECHECK_MAX = 0.02
# A stamp older than this: the worker's loop has not turned (stopped, hung, in a long request). Until then new
# clients may wait for it, as they wait under rr for a worker in a slow request; longer, and the others take them.
STALE = 1.0

# Workers that may hold a cell at once: --workers at most 1024 (config.options.MAX_WORKERS), their
# replacements during a rolling restart, and old ones still draining. 16 bytes a cell; only pages that cells
# in use touch are ever resident. A worker forked when none is free serves as under shared (never stops
# watching, not counted by the others).
CAPACITY = 4096
_HEADER = 8  # the number of cells from the first to the last in use, so that workers scan no further


class Loads:
    """The array, made by the primary before any fork; workers reach it through the ``LoadCell`` they inherit."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self._map = mmap.mmap(-1, _HEADER + 16 * capacity)  # anonymous and shared: every fork sees the same pages
        view = memoryview(self._map)
        self.span = view[:_HEADER].cast("q")
        self.counts = view[_HEADER:_HEADER + 8 * capacity].cast("q")
        self.stamps = view[_HEADER + 8 * capacity:].cast("d")
        self._used: set[int] = set()

    # In the primary.

    def take(self) -> LoadCell | None:
        """A free cell for a worker about to be forked (zeroed: no stamp until it listens); None when all are
        taken."""
        free = next((n for n in range(self.capacity) if n not in self._used), None) if not self._map.closed else None
        if free is None:
            return None
        self._used.add(free)
        self.counts[free], self.stamps[free] = 0, 0.0
        self.span[0] = max(self.span[0], free + 1)
        return LoadCell(self, free)

    def release(self, cell: int) -> None:
        """The worker of ``cell`` was reaped (or never forked): it counts no more, and the cell is free again."""
        if self._map.closed or cell not in self._used:
            return
        self._used.discard(cell)
        self.stamps[cell], self.counts[cell] = 0.0, 0
        self.span[0] = max(self._used) + 1 if self._used else 0

    def close(self) -> None:
        """The cluster stopped: unmap the array."""
        if not self._map.closed:
            for view in (self.span, self.counts, self.stamps):
                view.release()
            self._map.close()

    # In a worker.

    def least_other(self, own: int, now: float) -> int | None:
        """The fewest connections any other live worker holds; None when no other is live."""
        span = self.span[0]
        counts, stamps = self.counts[:span].tolist(), self.stamps[:span].tolist()
        fresh_since = now - STALE
        least = None
        for cell in range(span):
            if cell != own and stamps[cell] > fresh_since and (least is None or counts[cell] < least):
                least = counts[cell]
        return least


class LoadCell:
    """One worker's cell: written by that worker only (a count, a stamp), released by the primary."""

    def __init__(self, loads: Loads, index: int) -> None:
        self.loads, self.index = loads, index

    def release(self) -> None:
        """In the primary, once the worker is reaped."""
        self.loads.release(self.index)


class Listening(Protocol):
    """What the rule drives in a serving: stop and resume watching its listeners (both idempotent)."""

    def pause_accepting(self) -> None: ...

    def resume_accepting(self) -> None: ...


class AcceptBalance:
    """One worker's side: ``opened`` and ``closed`` count (a few attribute operations and one store each),
    ``held`` may stop watching after an accept that stays open, and a timer does the rest.

    ``call_later`` is the serving's loop's (asyncio's or the inline engine's); everything runs on that loop.
    """

    def __init__(self, cell: LoadCell, serving: Listening, call_later: Callable[..., Any],
                 slack: int = SLACK) -> None:
        self.loads, self.cell = cell.loads, cell.index
        self._counts, self._stamps = cell.loads.counts, cell.loads.stamps
        self.serving = serving
        self.call_later = call_later
        self.slack = slack
        self.open = 0
        self.paused = False
        self.stopped = True  # until ``start``: the cell has no stamp, no other worker counts it
        self._timer: Any = None
        self._recheck = RECHECK_FIRST

    def start(self) -> None:
        """The serving watches its listeners from now on."""
        self.stopped = False
        self._stamps[self.cell] = time.monotonic()
        self._schedule(TICK)

    def stop(self) -> None:
        """The worker drains: it accepts no more, so it counts no more for the others; nothing more is scheduled."""
        self.stopped = True
        self._stamps[self.cell] = 0.0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def opened(self) -> None:
        """A connection was accepted (before it is served: if it closes at once, ``closed`` follows)."""
        self.open += 1
        self._counts[self.cell] = self.open

    def held(self) -> None:
        """The connection just accepted stays open: stop watching if this worker now holds too many."""
        if self.open > self.slack and not self.paused and self._over(time.monotonic()):
            self._pause()

    def closed(self, count: int = 1) -> None:
        self.open -= count
        self._counts[self.cell] = self.open
        if self.paused and not self._over(time.monotonic()):
            self._resume()

    def _over(self, now: float) -> bool:
        least = self.loads.least_other(self.cell, now)
        return least is not None and self.open > least + self.slack

    def _pause(self) -> None:
        self.paused = True
        self.serving.pause_accepting()
        self._recheck = RECHECK_FIRST
        self._schedule(RECHECK_FIRST)

    def _resume(self) -> None:
        self.paused = False
        if not self.stopped:
            self.serving.resume_accepting()
            self._schedule(TICK)

    def _schedule(self, delay: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.call_later(delay, self._tick)

    def _tick(self) -> None:
        self._timer = None
        if self.stopped:
            return
        now = time.monotonic()
        self._stamps[self.cell] = now
        over = self.open > self.slack and self._over(now)
        if self.paused and not over:
            self._resume()
        elif self.paused:
            self._recheck = min(self._recheck * 2, RECHECK_MAX)
            self._schedule(self._recheck)
        elif over:
            self._pause()
        else:
            self._schedule(TICK)
