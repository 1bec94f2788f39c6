"""--request-timeout for inline WSGI workers: the worker says when its app began its current stretch of work, in
memory the primary reads, and the primary kills a worker whose app overran (uWSGI's harakiri).

An inline worker calls the app on its one thread: a request stuck in the app stalls the whole worker, its event
loop included, so nothing in the worker can be relied on to notice (a signal handler or a watchdog thread
needs the GIL, which C code may hold for good). The primary can: it reads the stamp, and a worker whose app
has been running for longer than the deadline is killed (after a traceback dump, as the hung-worker watchdog
does) and respawned, with the request named in the log.

Each worker has one page, mapped by the primary before the fork (as clusterrun.counters): a stamp (the
monotonic clock, which is the same for every process of the machine; 0 when no app code runs), then the
request's method and path. The worker writes it with no system call: an aligned store for the stamp, a slice
copy for the label. A label is written before its stamp, and the primary only acts on a stamp older than the
deadline, long after its label was written.
"""

from __future__ import annotations

import logging
import mmap
import struct
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from .identity import WorkerInfo

__all__ = ["RequestClock", "RequestDeadline"]

logger = logging.getLogger("clusterrun")

_LABEL_AT = 16  # the stamp (a double) and the label's length (a 64-bit count) come first
_LABEL_MAX = 512  # of "METHOD /path", the rest is cut
_DUMP_GRACE = 1.0  # time the overrunning worker gets to write its tracebacks before SIGKILL
_LEAST_WAIT = 0.05  # between two checks: a stamp at its deadline to the microsecond must not spin the primary


class _Timers(Protocol):  # supervision.Timers (which imports this module: no import back)
    def add(self, delay: float, callback: Callable[[], None]) -> Any: ...


class _Worker(Protocol):  # supervision.WorkerHandle
    @property
    def info(self) -> WorkerInfo: ...

    @property
    def request_clock(self) -> RequestClock: ...

    def dump_threads(self) -> None: ...

    def kill(self) -> None: ...


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


class RequestDeadline:
    """In the primary: kills an inline worker whose app has run longer than ``timeout`` seconds (0: off).

    Not a poll: it wakes when the oldest stretch of app code running now would reach the deadline, else one
    deadline from now (app code that starts later cannot overrun sooner).
    """

    def __init__(self, timeout: float, clock: Callable[[], float], timers: _Timers,
                 workers: Mapping[int, _Worker]) -> None:
        self.timeout = timeout
        self._clock, self._timers, self._workers = clock, timers, workers
        # Workers being dumped and killed. Weak: a reaped worker's handle must not stay alive here.
        self._killing: weakref.WeakSet[_Worker] = weakref.WeakSet()

    def start(self) -> None:
        if self.timeout > 0:
            self._timers.add(self.timeout, self._check)

    def _check(self) -> None:
        now = self._clock()
        wake = now + self.timeout
        for handle in list(self._workers.values()):
            running = handle.request_clock.running_since()
            if running is None or handle in self._killing:
                continue
            since, request = running
            if now - since < self.timeout:
                wake = min(wake, since + self.timeout)
                continue
            self._killing.add(handle)
            logger.error("%s: request %s ran %.1fs, past --request-timeout %g s: killing and respawning the worker "
                         "(its threads' tracebacks follow)", handle.info, request or "-", now - since, self.timeout)
            handle.dump_threads()
            self._timers.add(_DUMP_GRACE, handle.kill)
        self._timers.add(max(_LEAST_WAIT, wake - now), self._check)
