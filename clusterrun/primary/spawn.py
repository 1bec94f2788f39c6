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
import os
import selectors
import signal
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from clusterrun.config.options import Config
from clusterrun.errors import ConfigError
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
        fork_settings: ForkSettings | None = None,
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
        self.settings = fork_settings or ForkSettings()  # setup_primary() and fork(env=...): the pool's too

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
            self.settings.apply(index)
            self.target(self.config, worker_id, index, child_end, sockets, to_close, pages, self.preloaded, signal_mask)
        handle = WorkerHandle(worker_id, index, pid, Channel(parent_end, keep=child_end), started=self.clock(),
                              replaces=replaces, pages=pages)
        handle.channel.on_backlog = lambda waiting: self.dispatcher.backlog_changed(handle, waiting)
        self.selector.register(handle.channel.sock, selectors.EVENT_READ, lambda mask: self.on_channel(handle, mask))
        return handle

    def forget(self, handle: WorkerHandle) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(handle.channel.sock)


# Node's cluster.setupPrimary() settings that mean something for a forked worker (see docs/api.md for the others).
FORK_SETTINGS = ("env", "args")


@dataclass
class ForkSettings:
    """Node's ``cluster.settings``: what every later fork gets (Cluster.setup_primary), and each slot's own
    environment (Cluster.fork(env=...)), which the slot's respawns and replacements keep."""

    env: dict[str, str] = field(default_factory=dict)
    args: list[str] | None = None  # the worker's sys.argv[1:]; None: the primary's
    slot_env: dict[int, dict[str, str]] = field(default_factory=dict)

    def update(self, settings: Mapping[str, Any]) -> None:
        """Take ``settings`` (setup_primary's keywords) over the current ones; ConfigError naming a bad one."""
        for key in settings:
            if key not in FORK_SETTINGS:
                raise ConfigError(f"setup_primary() has no setting {key!r}: it takes {', '.join(FORK_SETTINGS)} "
                                  "(the app and its options are Cluster()'s; see the API docs)")
        if "env" in settings:
            self.env = {**self.env, **checked_env(settings["env"], "setup_primary(env=...)")}
        if "args" in settings:
            args = settings["args"]
            if args is not None and (isinstance(args, str) or not all(isinstance(a, str) for a in args)):
                raise ConfigError(f"setup_primary(args={args!r}): give a list of strings, the workers' sys.argv[1:]")
            self.args = None if args is None else list(args)

    def as_dict(self) -> dict[str, Any]:
        return {"env": dict(self.env), "args": None if self.args is None else list(self.args)}

    def apply(self, index: int) -> None:
        """In the child, right after the fork, before the app is imported (unless --preload imported it)."""
        os.environ.update(self.env)
        os.environ.update(self.slot_env.get(index, {}))
        if self.args is not None:
            sys.argv[1:] = self.args


def checked_env(env: object, where: str) -> dict[str, str]:
    """``env`` as a dict of strings; ConfigError naming the bad entry (os.environ takes strings only)."""
    if not isinstance(env, Mapping):
        raise ConfigError(f"{where}: env is a {type(env).__name__}; give a dict of strings")
    for key, value in env.items():
        if not isinstance(key, str) or not isinstance(value, str) or not key or "=" in key:
            raise ConfigError(f"{where}: env entry {key!r}: {value!r} is not a variable name and a string value; "
                              "give str(value)")
    return dict(env)
