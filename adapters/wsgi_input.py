"""``wsgi.input`` for a request body that is still arriving, engine-neutral: the file-like reader both engines'
streamed inputs are built on (``BodyReader``) and the errors its reads raise.

The inline engine fills it from its upload thread (adapters.engine.upload); the WSGI bridge from ASGI
messages pulled through the loop (adapters.stack.body, with asyncio). Nothing here imports either.
"""

from __future__ import annotations

from collections.abc import Iterator

__all__ = ["BodyReader", "BodyTimeout", "ClientDisconnected"]


class ClientDisconnected(OSError):
    """The client went away before sending its whole request body (raised by reads of ``wsgi.input``)."""


class BodyTimeout(ClientDisconnected):
    """The client sent nothing of its request body for --body-timeout seconds: answered 408 when nothing of the
    response went out yet (raised by reads of ``wsgi.input``)."""


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
