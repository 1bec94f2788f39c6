"""--limit-concurrency: how many connections one worker serves at once, and the 503 for the ones past it.

What counts is a connection that has sent a request and is still open: it holds its place from its first
request head until it closes, also while idle between keep-alive requests and for the life of a WebSocket it
upgraded to. A connection that arrives while N are held gets its first request answered 503 with
``Connection: close``; the N already served are never touched. The decision is made when the first request
head is complete, not at the accept, so that a place freed meanwhile is used and a connection that never
sends anything holds none (the head timeout closes it).

uvicorn's ``limit_concurrency`` differs in two ways that this avoids: it checks every request, so once N
connections are open the next request on any of them (the ones already served too) gets 503; and it counts
the connection asking, so N - 1 others are enough to refuse. What it also counts, request tasks still running
after their client left, is counted here too on uvicorn's stack (``running``).

For the inline WSGI engine, which answers one request at a time per worker, this is the natural meaning too:
its connections are what it holds open (sockets, buffers, a keep-alive client's place in line), while its
requests never run two at a time.

Refusals are logged at warning, the first at once and then at most one line per ``_LOG_EVERY`` seconds with
the count refused meanwhile: a worker at its limit under a flood of clients must not flood the log too.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from clusterrun.adapters.limits import Exceeded

__all__ = ["Admission"]

logger = logging.getLogger("clusterrun")

_LOG_EVERY = 10.0


class Admission:
    """One worker's places: ``admit`` at a connection's first request head, ``release`` when it closes."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit  # 0: no limit
        self.held = 0  # connections admitted and still open
        # The inline engine's HTTP/2 side (adapters.stack.inline_h2) admits and releases its connections from its
        # own thread: a count read and written back from two threads could lose one, and a place with it.
        self._lock = threading.Lock()
        self._clock = clock
        self._logged_at: float | None = None
        self._unlogged = 0  # refusals since the last line about them

    def admit(self, running: int = 0) -> bool:
        """A connection's first request: True if it may be served (it then holds a place until ``release``).

        ``running``: request tasks still running (on uvicorn's stack one may outlive its connection).
        """
        limit = self.limit
        with self._lock:
            if limit and (self.held >= limit or running >= limit):
                return False
            self.held += 1
        return True

    def release(self) -> None:
        with self._lock:
            self.held -= 1

    def refusal(self, client: object) -> Exceeded:
        """The 503 for a connection ``admit`` turned away (``client``: its address, for the log)."""
        now = self._clock()
        self._unlogged += 1
        if self._logged_at is None or now - self._logged_at >= _LOG_EVERY:
            more = self._unlogged - 1
            source = f" from {client[0]}:{client[1]}" if isinstance(client, tuple) else ""
            logger.warning("refused a connection%s: --limit-concurrency %d reached (503 Service Unavailable)%s",
                           source, self.limit, f"; {more} more refused since the last such line" if more else "")
            self._logged_at, self._unlogged = now, 0
        return Exceeded(503, "too many connections at once; try again", logged=True)
