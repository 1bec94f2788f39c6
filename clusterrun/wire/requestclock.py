"""--request-timeout for inline WSGI workers: the worker says when its app began its current stretch of work, in
memory the primary reads, and the primary kills a worker whose app overran (uWSGI's harakiri).

An inline worker calls the app on its one thread: a request stuck in the app stalls the whole worker, its event
loop included, so nothing in the worker can be relied on to notice (a signal handler or a watchdog thread
needs the GIL, which C code may hold for good). The primary can: it reads the stamp, and a worker whose app
has been running for longer than the deadline is killed by the primary's watchdog (clusterrun.primary.handle:
after a traceback dump, as a hung worker is) and respawned, with the request named in the log.

Each worker has one page, mapped by the primary before the fork (as clusterrun.wire.counters): a stamp (the
monotonic clock, which is the same for every process of the machine; 0 when no app code runs), then the
request's method and path. The worker writes it with no system call: an aligned store for the stamp, a slice
copy for the label. A label is written before its stamp, and the primary only acts on a stamp older than the
deadline, long after its label was written.
"""

from __future__ import annotations

import mmap
import struct
import time

__all__ = ["RequestClock"]

_LABEL_AT = 16  # the stamp (a double) and the label's length (a 64-bit count) come first
_LABEL_MAX = 512  # of "METHOD /path", the rest is cut


class RequestClock:
    """One worker's page. ``enabled`` False (no --request-timeout): no page, and ``begin``/``end`` never run."""

    def __init__(self, enabled: bool) -> None:
        self._map = mmap.mmap(-1, mmap.PAGESIZE) if enabled else None
        self._stamp = memoryview(self._map)[:8].cast("d") if self._map is not None else None

    @property
    def enabled(self) -> bool:
        return self._map is not None

    # In the worker.

    def label(self, method: bytes, path: bytes) -> None:
        """Name the request whose app code runs next (written before the stamp that makes it count)."""
        assert self._map is not None
        text = (method + b" " + path)[:_LABEL_MAX]
        self._map[_LABEL_AT:_LABEL_AT + len(text)] = text
        struct.pack_into("Q", self._map, 8, len(text))

    def begin(self) -> None:
        """App code starts running."""
        assert self._stamp is not None
        self._stamp[0] = time.monotonic()

    def end(self) -> None:
        """App code gave the worker back."""
        assert self._stamp is not None
        self._stamp[0] = 0.0

    # In the primary.

    def running_since(self) -> tuple[float, str] | None:
        """When the app code running now began, and the request it runs for; None when none runs."""
        if self._map is None or self._map.closed or self._stamp is None:
            return None
        since = self._stamp[0]
        if not since:
            return None
        size = min(struct.unpack_from("Q", self._map, 8)[0], _LABEL_MAX)
        return since, self._map[_LABEL_AT:_LABEL_AT + size].decode("latin-1")

    def close(self) -> None:
        """In the primary, once the worker is reaped."""
        if self._map is not None and not self._map.closed:
            assert self._stamp is not None
            self._stamp.release()
            self._stamp = None
            self._map.close()
