"""``wsgi.input`` for a request body that is still arriving, and inline mode's one-app-call-at-a-time gate.

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
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

__all__ = ["AppGate", "BodyReader", "BodyTimeout", "ClientDisconnected", "InputStream"]

Message = dict[str, Any]
T = TypeVar("T")


class ClientDisconnected(OSError):
    """The client went away before sending its whole request body (raised by reads of ``wsgi.input``)."""


class BodyTimeout(ClientDisconnected):
    """The client sent nothing of its request body for --body-timeout seconds: answered 408 when nothing of the
    response went out yet (raised by reads of ``wsgi.input``)."""


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


class BodyReader:
    """The file-like half of a streamed ``wsgi.input``: a buffer that ``_fill`` tops up, read in any way PEP 3333
    allows. Subclasses say where the bytes come from (``_fill``) and whether more can come (``_more``)."""

    _more = True

    def __init__(self, first: bytes = b"") -> None:
        self._buffer = bytearray(first)
        self.closed = False

    def _fill(self, size: int) -> None:
        """Get bytes until the buffer holds ``size`` (< 0: all) or the body ended."""
        raise NotImplementedError

    def _take(self, size: int) -> bytes:
        buffer = self._buffer
        if size < 0 or size >= len(buffer):
            data = bytes(buffer)
            buffer.clear()
        else:
            data = bytes(buffer[:size])
            del buffer[:size]
        return data

    def read(self, size: int | None = -1, /) -> bytes:
        size = -1 if size is None else size
        self._fill(size)
        return self._take(size)

    def readline(self, size: int | None = -1, /) -> bytes:
        size = -1 if size is None else size
        buffer, start = self._buffer, 0
        while True:
            end = buffer.find(b"\n", start)
            if end >= 0:
                return self._take(end + 1 if size < 0 else min(end + 1, size))
            if not self._more or 0 <= size <= len(buffer):
                return self._take(size)
            start = len(buffer)
            self._fill(len(buffer) + 1)

    def readlines(self, hint: int = -1, /) -> list[bytes]:
        lines, total = [], 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                break
        return lines

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True


class InputStream(BodyReader):
    """A blocking, file-like request body whose reads pull ASGI ``http.request`` messages through the loop.

    Read only from a thread other than the loop's (a read on the loop thread would wait on itself). Reads
    past the end return b"" (so ``wsgi.input_terminated`` holds); a client gone before the end raises
    ClientDisconnected rather than passing a truncated body off as complete, one silent for ``timeout`` seconds
    BodyTimeout (the thread is then free: the body is given up as if the client had left).
    """

    def __init__(
        self, receive: Callable[[], Awaitable[Message]], loop: asyncio.AbstractEventLoop, first: bytes = b"",
        gate: AppGate | None = None, timeout: float | None = None,
    ) -> None:
        super().__init__(first)
        self._receive, self._loop, self._gate, self._timeout = receive, loop, gate, timeout
        self._gone: Message | None = None
        self.timed_out = False
        self._finished = asyncio.Event()  # set on the loop once the last body message (or a disconnect) came

    # The loop side.

    async def _pull(self) -> Message:
        gate, timeout = self._gate, self._timeout
        # uvicorn's receive() waits on an event: cancelling it at the timeout leaves the connection as it was.
        receiving = self._receive() if timeout is None else asyncio.wait_for(self._receive(), timeout)
        try:
            message = await (gate.released(receiving) if gate is not None else receiving)
        except asyncio.TimeoutError:
            self.timed_out = True
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
                if self.timed_out:
                    raise BodyTimeout(f"no byte of the request body for {self._timeout:g} s (--body-timeout)")
                raise ClientDisconnected("the client disconnected before sending the whole request body")
            buffer += message.get("body", b"")
            self._more = bool(message.get("more_body", False))
