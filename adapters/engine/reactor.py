"""A small event loop over epoll, with no asyncio anywhere: the inline WSGI engine's thread runs it.

It offers the part of asyncio's loop API that a worker's runtime uses, with the same signatures, so that the
runtime drives either an asyncio loop (ASGI, ``--threads N``) or this one (inline WSGI): readers and writers
on descriptors, timers (``call_later``, ``call_at``, ``time``), ``call_soon`` and ``call_soon_threadsafe``
(which wakes the loop through a self-pipe), ``add_signal_handler`` (through ``signal.set_wakeup_fd``: the
Python-level handler only records the signal, the loop runs the callback), ``run_forever``/``stop`` and
``run_until``.

Why not asyncio: an app called on a thread where an asyncio loop runs sees it (Django's ORM refuses to run,
``asyncio.run()`` in a view fails), and asyncio's transports, protocols and tasks cost a WSGI request 2-3x
what a plain epoll loop does (measured, DESIGN.md "Where WSGI speed comes from").

A callback that raises is logged and the loop goes on, as asyncio does.
"""

from __future__ import annotations

import contextlib
import heapq
import logging
import os
import select
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
    """One thread's loop: descriptors in epoll (poll where there is none), timers in a heap, a self-pipe for other
    threads.

    Straight on ``select.epoll`` rather than through ``selectors``: the selector's key objects, its mapping back
    from descriptors and its event translation cost each ready descriptor about a microsecond of Python, and each
    request of a keep-alive connection is one. A descriptor's callbacks run as its events are read, without a
    queue: a callback that closes another descriptor also removes its handles, so nothing runs for it after.
    """

    def __init__(self) -> None:
        self._poller, self._poll = _poller()
        self._readers: dict[int, Handle] = {}
        self._writers: dict[int, Handle] = {}
        self._masks: dict[int, int] = {}  # what each descriptor is registered for
        self._timers: list[TimerHandle] = []
        self._ready: deque[Handle] = deque()
        self._stopping = False
        # Not ``_thread``: the compiled build (mypyc) names a C struct field after the attribute with one more
        # underscore, and ``__thread`` is a C keyword that gcc refuses.
        self._runner: int | None = None  # the thread running the loop
        self._signals: dict[int, Handle] = {}
        self._old_wakeup_fd: int | None = None
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)
        self.add_reader(self._wake_read, self._on_wake)

    # Descriptors: a handle per side in ``_readers`` and ``_writers``, the registered events in ``_masks``. Asking
    # the dicts first makes removing what is not watched (a connection closing that never waited to write) a
    # lookup.

    def add_reader(self, fd: Any, callback: Callback, *args: Any) -> None:
        self._watch(fd if type(fd) is int else fd.fileno(), self._readers, _IN, Handle(callback, args))

    def add_writer(self, fd: Any, callback: Callback, *args: Any) -> None:
        self._watch(fd if type(fd) is int else fd.fileno(), self._writers, _OUT, Handle(callback, args))

    def remove_reader(self, fd: Any) -> bool:
        return self._unwatch(fd if type(fd) is int else fd.fileno(), self._readers, _IN)

    def remove_writer(self, fd: Any) -> bool:
        return self._unwatch(fd if type(fd) is int else fd.fileno(), self._writers, _OUT)

    def _watch(self, fd: int, handles: dict[int, Handle], event: int, handle: Handle) -> None:
        old = handles.get(fd)
        handles[fd] = handle
        if old is not None:
            old.cancelled = True  # replaced, as asyncio's loop does
            return
        mask = self._masks.get(fd, 0)
        if mask:
            self._poller.modify(fd, mask | event)
        else:
            self._poller.register(fd, event)
        self._masks[fd] = mask | event

    def _unwatch(self, fd: int, handles: dict[int, Handle], event: int) -> bool:
        handle = handles.pop(fd, None)
        if handle is None:
            return False
        handle.cancelled = True
        mask = self._masks[fd] & ~event
        if mask:
            self._masks[fd] = mask
            self._poller.modify(fd, mask)
        else:
            del self._masks[fd]
            with contextlib.suppress(OSError):  # already closed: the kernel dropped it from the set (selectors too)
                self._poller.unregister(fd)
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
        if self._runner is not None and self._runner != threading.get_ident():
            self._wake()

    def run_forever(self) -> None:
        self.run_until(lambda: False)

    def run_until(self, predicate: Callable[[], bool]) -> None:
        """Run until ``predicate()`` is true (checked after each round) or ``stop()`` is called."""
        self._stopping = False
        self._runner = threading.get_ident()
        try:
            while not (self._stopping or predicate()):
                self._run_once()
        finally:
            self._runner = None

    def _run_once(self) -> None:
        timeout: float | None = None
        if self._ready:
            timeout = 0
        elif self._timers:
            timeout = max(0.0, self._timers[0].when - time.monotonic())
        readers, writers = self._readers, self._writers
        for fd, events in self._poll(timeout):
            # Errors and hang-ups wake both sides, as selectors reports them: the reads or writes then see them.
            if events & _NOT_OUT:
                handle = readers.get(fd)
                if handle is not None:
                    handle.run()
            if events & _NOT_IN:
                handle = writers.get(fd)
                if handle is not None:
                    handle.run()
        timers = self._timers
        if timers:
            now = time.monotonic()
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
        self._poller.close()
        os.close(self._wake_read)
        os.close(self._wake_write)


class _Poll:
    """poll(2) with epoll's methods, where there is no epoll (not Linux)."""

    def __init__(self) -> None:
        self._poll = select.poll()
        self.register, self.modify, self.unregister = self._poll.register, self._poll.modify, self._poll.unregister

    def poll(self, timeout: float | None) -> list[tuple[int, int]]:
        return self._poll.poll(None if timeout is None else timeout * 1000)  # poll(2) wants milliseconds

    def close(self) -> None:
        pass


# One definition chosen at run time, not two under an ``if``: the compiled build (mypyc) refuses a name defined
# twice and a class defined inside a branch. poll(2) has the same event bits as epoll.
_EPOLL = hasattr(select, "epoll")
_IN, _OUT = (select.EPOLLIN, select.EPOLLOUT) if _EPOLL else (select.POLLIN, select.POLLOUT)


def _poller() -> tuple[Any, Callable[[float | None], list[tuple[int, int]]]]:
    poller: Any = select.epoll() if _EPOLL else _Poll()
    return poller, poller.poll  # epoll's poll takes seconds; None waits


_NOT_OUT, _NOT_IN = ~_OUT, ~_IN


def _record_signal(signum: int, frame: FrameType | None) -> None:
    """Nothing to do here: C already wrote the signal's number to the wake-up pipe."""
