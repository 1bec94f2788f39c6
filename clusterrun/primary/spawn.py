"""Forking one worker: its channel, its shared page, its sockets, and the primary's descriptors it must close.

The pool's real ``Spawner``. Each fork gets a fresh channel pair (the primary
keeps both ends: what the worker never reads outlives it, see channel.py), a
shared counter page made before the fork, and the listening sockets its policy
gives its slot. The child closes every descriptor that belongs to the primary
(the signal inbox, other workers' channels, listeners it does not serve) and
never returns here: the worker's entry ends in ``os._exit``.

The entry is handed in (``target``, as uvicorn's ``Multiprocess(config,
target=server.run)``): the door gives clusterrun.worker.child.run, so that the
supervisor never imports the worker's side.
"""

from __future__ import annotations

import contextlib
import selectors
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NoReturn, Protocol

from clusterrun.config.options import Config
from clusterrun.host.signals import fork_holding_signals
from clusterrun.primary.dispatch import Dispatcher
from clusterrun.primary.handle import WorkerHandle
from clusterrun.primary.policies import Policy
from clusterrun.wire.channel import Channel
from clusterrun.wire.pages import WorkerPages

if TYPE_CHECKING:  # a type only: at run time the core imports adapters lazily (see api.prepare_engine)
    from clusterrun.adapters.entry import LoadedApp

OnChannel = Callable[[WorkerHandle, int], None]


class WorkerEntry(Protocol):
    """What the child runs right after the fork; it never returns (clusterrun.worker.child.run)."""

    def __call__(
        self, config: Config, worker_id: int, index: int, channel_sock: socket.socket,
        sockets: Sequence[socket.socket], inherited_fds: Sequence[int], pages: WorkerPages,
        preloaded: LoadedApp | None, signal_mask: set[int | signal.Signals] | None, /,
    ) -> NoReturn: ...


class Forker:
    def __init__(
        self, config: Config, target: WorkerEntry, policy: Policy, listeners: Sequence[socket.socket],
        selector: selectors.BaseSelector, primary_fds: Callable[[], list[int]], dispatcher: Dispatcher,
        on_channel: OnChannel, clock: Callable[[], float], preloaded: LoadedApp | None = None,
    ) -> None:
        self.config = config
        self.target = target  # the worker's entry, run in the child
        self.policy = policy
        self.listeners = listeners
        self.selector = selector
        self.primary_fds = primary_fds  # the primary's own descriptors, the other workers' channels included
        self.dispatcher = dispatcher
        self.on_channel = on_channel
        self.clock = clock
        self.preloaded = preloaded  # the app, imported before forking (--preload)

    def spawn(self, worker_id: int, index: int, replaces: WorkerHandle | None) -> WorkerHandle:
        """Fork the worker; OSError when the system refuses (EAGAIN past the process limit, ENOMEM, EMFILE),
        with nothing of it left open in the primary."""
        parent_end, child_end = Channel.socketpair()
        pages: WorkerPages | None = None  # mapped before the fork: the worker writes them, the primary reads them
        try:
            pages = WorkerPages.map(count_closes=self.policy.dispatches, time_requests=self.config.request_timeout > 0,
                                    loads=self.policy.loads)
            sockets = self.policy.worker_sockets(index, self.listeners, self.config.backlog)
            to_close = [*self.primary_fds(), parent_end.fileno()]
            to_close += [s.fileno() for s in (*self.listeners, *self.policy.held_sockets()) if s not in sockets]
            with contextlib.suppress(AttributeError, OSError):
                to_close.append(self.selector.fileno())  # type: ignore[attr-defined]
            sys.stdout.flush()
            sys.stderr.flush()
            pid, signal_mask = fork_holding_signals()
        except OSError:
            for sock in (parent_end, child_end):
                sock.close()
            if pages is not None:
                pages.close()
            raise
        if pid == 0:
            self.target(self.config, worker_id, index, child_end, sockets, to_close, pages, self.preloaded, signal_mask)
        handle = WorkerHandle(worker_id, index, pid, Channel(parent_end, keep=child_end), started=self.clock(),
                              replaces=replaces, pages=pages)
        handle.channel.on_backlog = lambda waiting: self.dispatcher.backlog_changed(handle, waiting)
        self.selector.register(handle.channel.sock, selectors.EVENT_READ, lambda mask: self.on_channel(handle, mask))
        return handle

    def forget(self, handle: WorkerHandle) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(handle.channel.sock)
