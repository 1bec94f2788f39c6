"""The primary's signals, delivered into its one wait, and the host's handlers given back afterwards.

A Python signal handler runs between two bytecodes of whatever the primary is
doing; acting there would re-enter the loop. So the handlers do nothing, and
``signal.set_wakeup_fd`` writes each signal's number to a socket that the
primary's selector watches: the loop reads the numbers and acts on each, in
order, at a point where acting is safe. ``restore`` puts back what the process
had before (handlers and wake-up fd): a program that embeds ``Cluster.run()``
goes on with its own Ctrl-C.
"""

from __future__ import annotations

import selectors
import signal
import socket
from collections.abc import Callable
from typing import Any

# Signals the primary acts on.
HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP, signal.SIGUSR2, signal.SIGTTIN,
           signal.SIGTTOU, signal.SIGCHLD, signal.SIGUSR1)
# Signals whose default action would end the primary without a word, though nothing here uses them: a stray
# one is logged and ignored. (SIGPIPE is ignored by Python already; SIGKILL and SIGSTOP cannot be caught.)
IGNORED = tuple(getattr(signal, name) for name in ("SIGALRM", "SIGVTALRM", "SIGPROF", "SIGIO", "SIGPWR")
                if hasattr(signal, name))


class SignalInbox:
    """Catches HANDLED and IGNORED signals and hands each number to ``act`` from the selector's wait."""

    def __init__(self, selector: selectors.BaseSelector, act: Callable[[int], None]) -> None:
        self._selector = selector
        self._act = act
        self._read, self._write = socket.socketpair()
        self._host_handlers: dict[int, Any] = {}  # signal: the handler before ours
        self._host_wakeup_fd = -1

    def filenos(self) -> list[int]:
        """Its descriptors: a forked worker closes them."""
        return [self._read.fileno(), self._write.fileno()]

    def install(self) -> None:
        self._read.setblocking(False)
        self._write.setblocking(False)
        self._host_wakeup_fd = signal.set_wakeup_fd(self._write.fileno(), warn_on_full_buffer=False)
        for signum in (*HANDLED, *IGNORED):
            self._host_handlers[signum] = signal.getsignal(signum)
            signal.signal(signum, _note)
        self._selector.register(self._read, selectors.EVENT_READ, self._on_readable)

    def _on_readable(self, mask: int) -> None:
        try:
            data = self._read.recv(4096)
        except BlockingIOError:
            return
        for signum in data:
            self._act(signum)

    def restore(self) -> None:
        """Give the process back the handlers and the wake-up fd it had; close the inbox."""
        try:
            if self._host_handlers:
                signal.set_wakeup_fd(self._host_wakeup_fd)
            for signum, handler in self._host_handlers.items():
                # None: a handler installed outside Python, which cannot be put back; the default is closest.
                signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        except ValueError:  # not the main thread: nothing was installed
            pass
        self._host_handlers.clear()
        self._read.close()
        self._write.close()


def _note(signum: int, frame: Any) -> None:
    """Nothing to do here: the wake-up fd already carries the signal number to the loop."""


def fork_holding_signals() -> tuple[int, set[int | signal.Signals]]:
    """``os.fork()`` with every signal held; the child gets ``(0, mask)`` and must restore ``mask`` itself.

    A child starts with the primary's handlers, whose only effect is a note in the primary's inbox (the
    wake-up socket is shared). A signal that reaches the child before it has reset them — the primary's
    SIGTERM to a worker that is still starting, when a stop follows a spawn at once — would be swallowed,
    and the worker would serve on until it is killed. Held, it waits until the child has reset its
    handlers and restored ``mask``, and then acts as the child's own.
    """
    import os

    saved = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        pid = os.fork()
    except BaseException:  # no child (EAGAIN past the process limit, ENOMEM): the primary goes on, unblocked
        signal.pthread_sigmask(signal.SIG_SETMASK, saved)
        raise
    if pid != 0:
        signal.pthread_sigmask(signal.SIG_SETMASK, saved)
    return pid, saved
