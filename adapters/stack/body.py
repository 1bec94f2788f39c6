"""The WSGI bridge's request bodies: the streamed ``wsgi.input`` (``InputStream``), --body-timeout's clock on every
body read (``BodyClock``), and inline mode's one-app-call-at-a-time gate on the bridge (``AppGate``, an asyncio
lock).

A WSGI app reads its body with blocking calls; an ASGI server delivers it with ``await receive()``. A body
that arrived whole with its head is handed to the app as a BytesIO (the WSGI bridge does that). Any other
body streams: the app runs in a thread and each read waits on the loop for the next ``receive()``, so that an
app that rejects an upload answers before the server read more than uvicorn's 64 KiB window of it, nothing
is spooled to disk, and ``Expect: 100-continue`` is answered only when the app first reads (uvicorn sends the
100 on the first ``receive()``).

Inline mode (``--threads 1``) promises ``wsgi.multithread`` False: app code never runs in two places at
once. An upload's app call runs off the loop, so ``AppGate`` (an asyncio lock) is held whenever app code
runs there, and the loop waits for it before running app code of its own. The off-loop call lets go of it
while it waits on the loop for the network (a read, a send), as the loop's own requests interleave at
their awaits: the off-loop call is scheduled like one more request on the loop, not given the worker.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from clusterrun.adapters.wsgi_input import BodyReader, BodyTimeout, ClientDisconnected

__all__ = ["AppGate", "BodyClock", "InputStream"]

Message = dict[str, Any]
T = TypeVar("T")

_SWEEP_EVERY = 1.0  # seconds between two looks at the waiting reads (half the timeout where that is shorter)


class BodyClock:
    """--body-timeout on one loop: every read of a request body that waits on it, checked by one sweep a second.

    The bridge's read ahead of the app and ``InputStream``'s reads for it both wait through ``within``. As for
    request heads (guard.HeadClock): a timer per read, a ``call_later`` and its cancel, cost every request a few
    us (docs/benchmarks.md, the HTTP/2 profile), most of them reads already answered; joining and leaving a dict
    costs a tenth of that. A silent read is given up between ``timeout`` and ``timeout`` plus one sweep.
    """

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._every = min(_SWEEP_EVERY, timeout / 2)
        self._deadlines: dict[asyncio.Task[Any], float] = {}  # the tasks waiting in ``within``
        self._expired: set[asyncio.Task[Any]] = set()  # cancelled by the sweep, not yet told
        self._sweeping = False  # a sweep is scheduled: only while some read waits

    async def within(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` (a ``receive()``), or raise BodyTimeout once it waited past the timeout. Cancelling
        the waiting task leaves uvicorn's and clusterrun's ``receive`` as it was: it waits on an event."""
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        self._deadlines[task] = loop.time() + self.timeout
        if not self._sweeping:
            self._sweeping = True
            loop.call_later(self._every, self._sweep, loop)
        try:
            return await awaitable
        except asyncio.CancelledError:
            if task not in self._expired:
                raise  # cancelled by its owner (the server going away), not by this clock
            if sys.version_info >= (3, 11):
                task.uncancel()  # the cancel was this clock's, and it ends here
            raise BodyTimeout(f"no byte of the request body for {self.timeout:g} s (--body-timeout)") from None
        finally:
            self._deadlines.pop(task, None)
            self._expired.discard(task)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for task, deadline in list(self._deadlines.items()):
            if deadline <= now:
                del self._deadlines[task]
                self._expired.add(task)
                task.cancel()
        if self._deadlines:
            loop.call_later(self._every, self._sweep, loop)
        else:
            self._sweeping = False


class AppGate:
    """Held while app code runs off the loop in inline mode; taken and released on the loop only."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = asyncio.Lock()  # binds to the running loop at first use (the bridge is built before it)

    def locked(self) -> bool:
        return self._lock.locked()

    async def acquire(self) -> None:
        await self._lock.acquire()

    def release(self) -> None:
        if self._lock.locked():  # tolerant: an acquire cancelled at shutdown leaves nothing to release
            self._lock.release()

    async def __aenter__(self) -> None:
        await self._lock.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()

    async def released(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` (network I/O) with the gate let go, and take it back before returning."""
        self.release()
        try:
            return await awaitable
        finally:
            await self.acquire()


class InputStream(BodyReader):
    """A blocking, file-like request body whose reads pull ASGI ``http.request`` messages through the loop.

    Read only from a thread other than the loop's (a read on the loop thread would wait on itself). Reads
    past the end return b"" (so ``wsgi.input_terminated`` holds); a client gone before the end raises
    ClientDisconnected rather than passing a truncated body off as complete, one silent for ``timeout`` seconds
    BodyTimeout (the thread is then free: the body is given up as if the client had left).
    """

    def __init__(
        self, receive: Callable[[], Awaitable[Message]], loop: asyncio.AbstractEventLoop, first: bytes = b"",
        gate: AppGate | None = None, clock: BodyClock | None = None,
    ) -> None:
        super().__init__(first)
        self._receive, self._loop, self._gate, self._clock = receive, loop, gate, clock
        self._gone: Message | None = None
        self._timed_out: BodyTimeout | None = None
        self._finished = asyncio.Event()  # set on the loop once the last body message (or a disconnect) came

    # The loop side.

    async def _pull(self) -> Message:
        gate, clock = self._gate, self._clock
        receiving = self._receive() if clock is None else clock.within(self._receive())
        try:
            message = await (gate.released(receiving) if gate is not None else receiving)
        except BodyTimeout as exc:
            self._timed_out = exc
            message = {"type": "http.disconnect"}  # what the disconnect watcher sees: nobody to send more to
        if message["type"] != "http.request":
            self._gone = message
            self._finished.set()
        elif not message.get("more_body", False):
            self._finished.set()
        return message

    async def receive_after_body(self) -> Message:
        """``receive()`` for the bridge's disconnect watcher: it must not take body messages from the app."""
        await self._finished.wait()
        if self._gone is not None:
            return self._gone
        return await self._receive()

    # The app side (a thread).

    def _fill(self, size: int) -> None:
        """Pull messages until the buffer holds ``size`` bytes (< 0: all) or the body ended."""
        buffer = self._buffer
        while self._more and (size < 0 or len(buffer) < size):
            message = asyncio.run_coroutine_threadsafe(self._pull(), self._loop).result()
            if message["type"] != "http.request":
                self._more = False
                if self._timed_out is not None:
                    raise self._timed_out
                raise ClientDisconnected("the client disconnected before sending the whole request body")
            buffer += message.get("body", b"")
            self._more = bool(message.get("more_body", False))
