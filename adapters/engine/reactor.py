"""A small event loop over ``selectors``, with no asyncio anywhere: the inline WSGI engine's thread runs it.

It offers the part of asyncio's loop API that a worker's runtime uses, with the same signatures, so that the
runtime drives either an asyncio loop (ASGI, ``--threads N``) or this one (inline WSGI): readers and writers
on descriptors, timers (``call_later``, ``call_at``, ``time``), ``call_soon`` and ``call_soon_threadsafe``
(which wakes the loop through a self-pipe), ``add_signal_handler`` (through ``signal.set_wakeup_fd``: the
Python-level handler only records the signal, the loop runs the callback), ``run_forever``/``stop`` and
``run_until``.

Why not asyncio: an app called on a thread where an asyncio loop runs sees it (Django's ORM refuses to run,
``asyncio.run()`` in a view fails), and asyncio's transports, protocols and tasks cost a WSGI request 2-3x
what a plain ``selectors`` loop does (measured, DESIGN.md "Where WSGI speed comes from").

A callback that raises is logged and the loop goes on, as asyncio does.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import selectors
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from types import FrameType
from typing import Any

__all__ = ["Handle", "SelectorLoop", "TimerHandle"]

logger = logging.getLogger("clusterrun")

Callback = Callable[..., object]


class Handle:
    """A scheduled callback; ``cancel()`` keeps it from running (asyncio.Handle's contract)."""

    __slots__ = ("_args", "_callback", "cancelled")

    def __init__(self, callback: Callback, args: tuple[Any, ...]) -> None:
        self._callback, self._args = callback, args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def run(self) -> None:
        try:
            self._callback(*self._args)
        except Exception:
            logger.exception("Exception in callback %r", self._callback)


class TimerHandle(Handle):
    """A callback due at ``when`` (loop time); ordered by it in the loop's heap."""

    __slots__ = ("when",)

    def __init__(self, when: float, callback: Callback, args: tuple[Any, ...]) -> None:
        super().__init__(callback, args)
        self.when = when

    def __lt__(self, other: TimerHandle) -> bool:
        return self.when < other.when


class SelectorLoop:
    """One thread's loop: descriptors in a selector, timers in a heap, a self-pipe for other threads."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._watched: dict[int, tuple[Handle | None, Handle | None]] = {}
        self._timers: list[TimerHandle] = []
        self._ready: deque[Handle] = deque()
        self._stopping = False
        self._thread: int | None = None
        self._signals: dict[int, Handle] = {}
        self._old_wakeup_fd: int | None = None
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self._selector.register(self._wake_read, selectors.EVENT_READ, (None, None))

    # Descriptors. ``_watched`` maps a descriptor to its (reader handle or None, writer handle or None), the
    # selector key's data too: asking it first makes removing what is not watched (a connection closing that
    # never waited to write) a dict lookup, where the selector's get_key would raise and catch a KeyError.

    def add_reader(self, fd: Any, callback: Callback, *args: Any) -> None:
        self._watch(fd, 0, Handle(callback, args))

    def add_writer(self, fd: Any, callback: Callback, *args: Any) -> None:
        self._watch(fd, 1, Handle(callback, args))

    def remove_reader(self, fd: Any) -> bool:
        return self._unwatch(fd, 0)

    def remove_writer(self, fd: Any) -> bool:
        return self._unwatch(fd, 1)

    def _watch(self, fd: Any, side: int, handle: Handle) -> None:
        fd = fd if type(fd) is int else fd.fileno()
        pair = self._watched.get(fd)
        if pair is None:
            pair = (handle, None) if side == 0 else (None, handle)
            self._selector.register(fd, selectors.EVENT_READ if side == 0 else selectors.EVENT_WRITE, pair)
        else:
            pair = (handle, pair[1]) if side == 0 else (pair[0], handle)
            events = (selectors.EVENT_READ if pair[0] else 0) | (selectors.EVENT_WRITE if pair[1] else 0)
            self._selector.modify(fd, events, pair)
        self._watched[fd] = pair

    def _unwatch(self, fd: Any, side: int) -> bool:
        fd = fd if type(fd) is int else fd.fileno()
        pair = self._watched.get(fd)
        if pair is None or pair[side] is None:
            return False
        pair = (None, pair[1]) if side == 0 else (pair[0], None)
        if pair == (None, None):
            del self._watched[fd]
            self._selector.unregister(fd)
        else:
            self._watched[fd] = pair
            self._selector.modify(fd, selectors.EVENT_READ if pair[0] else selectors.EVENT_WRITE, pair)
        return True

    # Time and callbacks.

    def time(self) -> float:
        return time.monotonic()

    def call_soon(self, callback: Callback, *args: Any) -> Handle:
        handle = Handle(callback, args)
        self._ready.append(handle)
        return handle

    def call_soon_threadsafe(self, callback: Callback, *args: Any) -> Handle:
        handle = self.call_soon(callback, *args)  # deque.append is atomic
        self._wake()
        return handle

    def call_later(self, delay: float, callback: Callback, *args: Any) -> TimerHandle:
        return self.call_at(time.monotonic() + delay, callback, *args)

    def call_at(self, when: float, callback: Callback, *args: Any) -> TimerHandle:
        timer = TimerHandle(when, callback, args)
        heapq.heappush(self._timers, timer)
        return timer

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, InterruptedError):
            os.write(self._wake_write, b"\0")

    def _on_wake(self) -> None:
        """Empty the self-pipe; the bytes name signals when set_wakeup_fd wrote them."""
        try:
            data = os.read(self._wake_read, 4096)
        except (BlockingIOError, InterruptedError):
            return
        for signum in data:
            handle = self._signals.get(signum)
            if handle is not None:
                self._ready.append(handle)

    # Signals: Python's handler runs between bytecodes of whatever runs; it only makes C write the signal's
    # number to the self-pipe (set_wakeup_fd), and the loop runs the callback.

    def add_signal_handler(self, sig: int, callback: Callback, *args: Any) -> None:
        if threading.current_thread() is not threading.main_thread():
            raise RuntimeError("add_signal_handler() works only in the main thread")
        if self._old_wakeup_fd is None:
            self._old_wakeup_fd = signal.set_wakeup_fd(self._wake_write, warn_on_full_buffer=False)
        self._signals[sig] = Handle(callback, args)
        signal.signal(sig, _record_signal)
        signal.siginterrupt(sig, False)

    def remove_signal_handler(self, sig: int) -> bool:
        if self._signals.pop(sig, None) is None:
            return False
        signal.signal(sig, signal.SIG_DFL)
        return True

    # Running.

    def stop(self) -> None:
        self._stopping = True
        if self._thread is not None and self._thread != threading.get_ident():
            self._wake()

    def run_forever(self) -> None:
        self.run_until(lambda: False)

    def run_until(self, predicate: Callable[[], bool]) -> None:
        """Run until ``predicate()`` is true (checked after each round) or ``stop()`` is called."""
        self._stopping = False
        self._thread = threading.get_ident()
        try:
            while not (self._stopping or predicate()):
                self._run_once()
        finally:
            self._thread = None

    def _run_once(self) -> None:
        timeout: float | None = None
        if self._ready:
            timeout = 0
        elif self._timers:
            timeout = max(0.0, self._timers[0].when - time.monotonic())
        for key, mask in self._selector.select(timeout):
            reader, writer = key.data
            if key.fd == self._wake_read:
                self._on_wake()
                continue
            if mask & selectors.EVENT_READ and reader is not None:
                self._ready.append(reader)
            if mask & selectors.EVENT_WRITE and writer is not None:
                self._ready.append(writer)
        timers, now = self._timers, time.monotonic()
        while timers and timers[0].when <= now:
            timer = heapq.heappop(timers)
            if not timer.cancelled:
                self._ready.append(timer)
        ready = self._ready
        for _ in range(len(ready)):  # what came in during this round waits for the next one
            handle = ready.popleft()
            if not handle.cancelled:
                handle.run()

    def close(self) -> None:
        for sig in list(self._signals):
            self.remove_signal_handler(sig)
        if self._old_wakeup_fd is not None:
            signal.set_wakeup_fd(self._old_wakeup_fd)
            self._old_wakeup_fd = None
        self._selector.close()
        os.close(self._wake_read)
        os.close(self._wake_write)


def _record_signal(signum: int, frame: FrameType | None) -> None:
    """Nothing to do here: C already wrote the signal's number to the wake-up pipe."""
