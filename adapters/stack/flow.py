"""Write flow control for the stack's HTTP protocols (http1, http2): the transport calls ``pause_writing`` when its
buffer passes the high-water mark and ``resume_writing`` once it drained below the low one; a sender waits on a
future of ``_writer()`` in between, and every waiting sender is released together."""

from __future__ import annotations

import asyncio


class WriteFlow:
    """Mixed into an ``asyncio.Protocol`` that has ``loop``; ``_init_flow()`` in its ``__init__``."""

    loop: asyncio.AbstractEventLoop

    def _init_flow(self) -> None:
        self._write_paused = False
        self._writers: list[asyncio.Future[None]] = []

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._release_writers()

    def _release_writers(self) -> None:
        """Wake every waiting sender: the buffer drained, or the connection is gone (they then see it closed)."""
        waiting, self._writers = self._writers, []
        for future in waiting:
            if not future.done():
                future.set_result(None)

    def _writer(self) -> asyncio.Future[None]:
        """A future that the next release completes."""
        future = self.loop.create_future()
        self._writers.append(future)
        return future
