"""--request-timeout: the deadline of one request, enforced where the app runs.

* Inline WSGI engine (``--threads 1``): the app runs on the worker's one thread, so a stuck request stalls the
  worker and nothing in it can be relied on to act (C code may hold the GIL for good). ``TimedGate`` is the
  engine's gate (held exactly while app code runs) with a stamp: each stretch of app code writes when it began,
  and for which request, where the primary reads it (clusterrun.wire.requestclock); the primary kills the worker
  when a stretch overruns, as uWSGI's harakiri does, and names the request. A response streamed to a slow
  reader does not count: the worker serves others while it waits for the client.
* ASGI apps and WSGI apps on the bridge (``--threads N``): ``with_deadline`` (adapters.stack.deadline) cancels
  the request's task at the deadline and answers 504 when nothing of the response went out, else leaves the
  response incomplete, which makes uvicorn close the connection. A WSGI app's thread cannot be cancelled: the
  bridge counts it as stuck and the worker asks to be replaced gracefully (clusterrun.worker.runtime).

Off (0), none of this is installed: the engine keeps its plain lock, the app is not wrapped.
"""

from __future__ import annotations

import threading
from typing import Protocol

__all__ = ["RequestStamp", "TimedGate"]


class RequestStamp(Protocol):
    """Where a worker stamps the app code it runs (clusterrun.wire.requestclock.RequestClock)."""

    def label(self, method: bytes, path: bytes) -> None: ...

    def begin(self) -> None: ...

    def end(self) -> None: ...


class TimedGate:
    """The inline engine's gate (a lock held while app code runs), stamping each hold for the primary.

    The request is named per thread (``name``, where its environ is made: the loop's thread, or the upload
    thread that runs it), and written to the stamp when that thread takes the gate.
    """

    __slots__ = ("_holder", "_labels", "_lock", "_stamp", "_written")

    def __init__(self, stamp: RequestStamp) -> None:
        self._lock = threading.Lock()
        self._stamp = stamp
        self._labels: dict[int, tuple[bytes, bytes]] = {}
        self._written: tuple[bytes, bytes] | None = None
        self._holder = 0  # the thread holding the gate

    def name(self, method: bytes, target: bytes) -> None:
        """The request whose app code this thread runs from now on (its path only: a query may hold secrets)."""
        ident = threading.get_ident()
        self._labels[ident] = label = (method, target.partition(b"?")[0])
        if self._holder == ident:  # named while holding the gate (an upload thread): the stamp counts for it
            self._write(label)

    def _write(self, label: tuple[bytes, bytes]) -> None:
        if label is not self._written:
            self._written = label
            self._stamp.label(*label)

    def acquire(self) -> bool:
        self._lock.acquire()
        self._holder = ident = threading.get_ident()
        label = self._labels.get(ident)
        if label is not None:
            self._write(label)
        self._stamp.begin()
        return True

    def release(self) -> None:
        self._stamp.end()
        self._holder = 0
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()
