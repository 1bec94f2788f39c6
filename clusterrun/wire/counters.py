"""A count one worker keeps and the primary reads, in memory they share: no frame, no system call per update.

least-conn needs each worker's open connections every time the primary
dispatches. The primary knows how many connections it has passed to a worker;
the worker counts how many of those have closed. The difference is what is open
there or still on its way, exact whenever the primary looks, and it cannot
drift: a dead worker's count goes with its handle. A connection the worker
serves that the primary never dispatched (a handle the program passed with a
message, served with clusterrun.serve_connection) is counted down when the
worker takes it, so that its close nets out: the difference stays what is open
there, and the count may go below zero.

The cell is an anonymous shared mapping that the primary makes before the fork.
Only the worker writes it, with one aligned 64-bit store per update; the primary
reads it whole. Workers forked later inherit the page too, as they inherit all
of the primary's memory, and never touch it; a worker that wrote nonsense into
its own count would only change where its next connections go.
"""

from __future__ import annotations

import array
import mmap


class SharedCounter:
    """``shared``: False under a kernel-side policy, where the primary never reads it: no page is mapped."""

    def __init__(self, shared: bool = True) -> None:
        self.shared = shared
        # Shared and anonymous: the forked worker writes the same page.
        self._map = mmap.mmap(-1, mmap.PAGESIZE) if shared else None
        # Signed 64 bits: a count may go below zero (see above), and no worker closes 2**63 connections.
        self._cell = memoryview(self._map).cast("q") if self._map is not None else memoryview(array.array("q", [0]))
        self._value = 0  # the writer's own copy, so that it never reads the shared page

    def add(self, amount: int = 1) -> None:
        """In the worker."""
        self._value += amount
        self._cell[0] = self._value

    def read(self) -> int:
        """In the primary: the worker's count so far (its last count once closed); below zero after more adds of
        -1 than of 1."""
        return int(self._cell[0])

    def close(self) -> None:
        """In the primary, once the worker is reaped: unmap the page now rather than whenever this is freed."""
        if self._map is None or self._map.closed:
            return
        last = self._cell[0]
        self._cell.release()
        self._map.close()
        self._cell = memoryview(array.array("q", [last]))  # read() goes on answering the last count
