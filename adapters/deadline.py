"""--request-timeout: the deadline of one request, enforced where the app runs.

* Inline WSGI engine (``--threads 1``): the app runs on the worker's one thread, so a stuck request stalls the
  worker and nothing in it can be relied on to act (C code may hold the GIL for good). ``TimedGate`` is the
  engine's gate (held exactly while app code runs) with a stamp: each stretch of app code writes when it began,
  and for which request, where the primary reads it (clusterrun.wire.requestclock); the primary kills the worker
  when a stretch overruns, as uWSGI's harakiri does, and names the request. A response streamed to a slow
  reader does not count: the worker serves others while it waits for the client.
* ASGI apps and WSGI apps on the bridge (``--threads N``): ``with_deadline`` cancels the request's task at the
  deadline and answers 504 when nothing of the response went out, else leaves the response incomplete, which
  makes uvicorn close the connection. A WSGI app's thread cannot be cancelled: the bridge counts it as stuck
  and the worker asks to be replaced gracefully (clusterrun.worker.runtime).

Off (0), none of this is installed: the engine keeps its plain lock, the app is not wrapped.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

__all__ = ["RequestStamp", "TimedGate", "with_deadline"]

logger = logging.getLogger("clusterrun")

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


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


class RequestTimedOut(OSError):
    """Raised by ``send`` once the request's deadline passed: what the app still sends goes nowhere."""


def _answer_504(seconds: float) -> tuple[Message, Message]:
    body = f"Gateway Timeout: the request took longer than {seconds:g} s (--request-timeout)\n".encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    return ({"type": "http.response.start", "status": 504, "headers": headers},
            {"type": "http.response.body", "body": body, "more_body": False})


def with_deadline(app: Any, seconds: float) -> Any:
    """``app`` with each HTTP request cancelled after ``seconds``: 504, or the connection closed once answering.

    One timer per request on the loop (no system call); WebSocket and lifespan scopes are left alone.
    """

    async def deadline_app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        task = asyncio.current_task()
        assert task is not None
        started = expired = False

        async def send_in_time(message: Message) -> None:
            nonlocal started
            if expired:
                raise RequestTimedOut(f"the request took longer than {seconds:g} s (--request-timeout)")
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        timer = asyncio.get_running_loop().call_later(seconds, expire)
        try:
            await app(scope, receive, send_in_time)
        except asyncio.CancelledError:
            if not expired:
                raise  # cancelled by someone else (the server going away)
            uncancel = getattr(task, "uncancel", None)  # 3.11+: the cancel was ours, and it is handled here
            if uncancel is not None:
                uncancel()
            what = "answered 504" if not started else "its connection closed (the response had begun)"
            logger.warning("request %s %s ran past --request-timeout %g s: cancelled, %s", scope.get("method", "-"),
                           scope.get("path", "-"), seconds, what)
            if not started:
                for message in _answer_504(seconds):
                    await send(message)
            # Else the response stays incomplete: uvicorn then closes the connection, so the client cannot
            # take it for a whole one.
        finally:
            timer.cancel()

    return deadline_app
