"""The memory one worker shares with the primary: pages mapped before the fork, read without a frame.

The worker writes them as it serves, the primary reads them whenever it looks, also after the worker died:

- ``closes``: the connections the worker has closed. Under a primary-side policy the primary knows how many it
  passed, so the difference is what is open there (least-conn); under a kernel-side policy nobody reads it and
  no page is mapped.
- ``first_request``: marked just before the app takes its first request. Read when the worker dies: only a
  worker that never took one counts toward giving its slot up (the pool's restart throttling).
- ``request_clock``: when the inline app began the work in hand, and for which request (--request-timeout;
  no page without it). The watchdog reads it.
- ``load``: under --policy balanced only, the worker's cell in the array of open connections that every worker
  reads (clusterrun.wire.loads); the primary takes it for the worker before the fork and releases it once the
  worker is reaped.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from clusterrun.wire.counters import SharedCounter
from clusterrun.wire.loads import LoadCell, Loads
from clusterrun.wire.requestclock import RequestClock


@dataclass(eq=False)
class WorkerPages:
    closes: SharedCounter = field(default_factory=lambda: SharedCounter(shared=False))
    first_request: SharedCounter = field(default_factory=lambda: SharedCounter(shared=False))
    request_clock: RequestClock = field(default_factory=lambda: RequestClock(False))
    load: LoadCell | None = None

    @classmethod
    def map(cls, *, count_closes: bool, time_requests: bool, loads: Loads | None = None) -> WorkerPages:
        """Map the pages for a worker about to be forked; OSError (ENOMEM, the map limit) leaves none mapped.

        ``loads``: the balanced policy's array, where the worker gets a cell (none when every cell is taken).
        """
        with contextlib.ExitStack() as undo:
            closes = SharedCounter(shared=count_closes)
            undo.callback(closes.close)
            first_request = SharedCounter()
            undo.callback(first_request.close)
            request_clock = RequestClock(time_requests)
            load = loads.take() if loads is not None else None
            undo.pop_all()  # all mapped: they are the worker's now
        return cls(closes, first_request, request_clock, load)

    @property
    def took_request(self) -> bool:
        return self.first_request.read() > 0

    def close(self) -> None:
        """In the primary, once the worker is reaped (or its fork failed): unmap the pages now; each goes on
        answering its last value."""
        self.closes.close()
        self.first_request.close()
        self.request_clock.close()
        if self.load is not None:
            self.load.release()
            self.load = None  # released once: the cell may be another worker's next
