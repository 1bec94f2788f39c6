"""The memory one worker shares with the primary: three pages mapped before the fork, read without a frame.

The worker writes them as it serves, the primary reads them whenever it looks, also after the worker died:

- ``closes``: the connections the worker has closed. Under a primary-side policy the primary knows how many it
  passed, so the difference is what is open there (least-conn); under a kernel-side policy nobody reads it and
  no page is mapped.
- ``first_request``: marked just before the app takes its first request. Read when the worker dies: only a
  worker that never took one counts toward giving its slot up (the pool's restart throttling).
- ``request_clock``: when the inline app began the work in hand, and for which request (--request-timeout;
  no page without it). The watchdog reads it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

from clusterrun.wire.counters import SharedCounter
from clusterrun.wire.requestclock import RequestClock


@dataclass(eq=False)
class WorkerPages:
    closes: SharedCounter = field(default_factory=lambda: SharedCounter(shared=False))
    first_request: SharedCounter = field(default_factory=lambda: SharedCounter(shared=False))
    request_clock: RequestClock = field(default_factory=lambda: RequestClock(False))

    @classmethod
    def map(cls, *, count_closes: bool, time_requests: bool) -> WorkerPages:
        """Map the pages for a worker about to be forked; OSError (ENOMEM, the map limit) leaves none mapped."""
        with contextlib.ExitStack() as undo:
            closes = SharedCounter(shared=count_closes)
            undo.callback(closes.close)
            first_request = SharedCounter()
            undo.callback(first_request.close)
            request_clock = RequestClock(time_requests)
            undo.pop_all()  # all three mapped: they are the worker's now
        return cls(closes, first_request, request_clock)

    @property
    def took_request(self) -> bool:
        return self.first_request.read() > 0

    def close(self) -> None:
        """In the primary, once the worker is reaped (or its fork failed): unmap the pages now; each goes on
        answering its last value."""
        self.closes.close()
        self.first_request.close()
        self.request_clock.close()
