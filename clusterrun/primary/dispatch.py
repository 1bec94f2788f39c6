"""Primary-side dispatch: accept on the listeners, hand each connection to a worker.

Used by policies whose ``dispatches`` is True. The policy orders the ready
workers; a worker that could not serve a connection now is skipped: one whose
heartbeat is late (hung, stopped, or busy in a long inline request), one whose
descriptor table is full (it would lose the connection), and, unless every
worker is, one whose channel is backed up. When no worker can take a
connection, it is held rather than dropped, and accepting pauses (new clients
wait in the kernel's backlog) until one can: a worker's next heartbeat, or any
frame from it, is when the primary looks again.

A primary out of descriptors cannot accept: the listener stays readable, so it
stops watching it for a moment instead of spinning, and says so once with a
count rather than once per failed accept.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import selectors
import socket
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence

from clusterrun.host.timers import Timers
from clusterrun.primary.handle import WorkerHandle
from clusterrun.primary.policies import Dispatching, Policy
from clusterrun.wire.channel import MAX_FDS_PER_FRAME, connection_frame

# How long accepting pauses when the primary's own descriptor table is full, and how often that is logged.
_FULL_PAUSE = 0.1
_REPORT_EVERY = 5.0

logger = logging.getLogger("clusterrun")

_ACCEPT_BATCH = MAX_FDS_PER_FRAME  # connections per wake-up, so that worker frames are not starved

Accepted = tuple[int, str, int]  # a connection's descriptor, the client's address (for sticky), its family


class Dispatcher:
    def __init__(
        self, policy: Policy, selector: selectors.BaseSelector, timers: Timers, late_after: float,
        clock: Callable[[], float] = time.monotonic, concurrency: int = 0,
    ) -> None:
        self.policy = policy
        # --limit-concurrency: a worker holding this many connections answers a new one 503, so it gets one
        # only when every worker does (0: no limit).
        self.concurrency = concurrency
        # Its ordering, under a dispatching policy; None where workers accept for themselves.
        self._order = policy.order if isinstance(policy, Dispatching) else None
        self.selector = selector
        self.timers = timers
        self.late_after = late_after  # silence after which a worker gets nothing new
        self.clock = clock
        self.listeners: list[socket.socket] = []
        self.ready: list[WorkerHandle] = []
        self.held: deque[Accepted] = deque()  # accepted connections nobody could take yet
        self.accepting = False
        self.closed = False
        self.paused_until = 0.0  # the primary ran out of descriptors: no accept before then
        self._failed_accepts = 0  # since the last report
        self._last_report = -_REPORT_EVERY
        self._full: set[WorkerHandle] = set()  # workers reported at their descriptor limit, until they are not

    def listen(self, listeners: Sequence[socket.socket]) -> None:
        if not self.policy.dispatches:
            return
        self.listeners = list(listeners)
        for sock in self.listeners:
            sock.setblocking(False)
        self._update()

    def ready_worker(self, handle: WorkerHandle) -> None:
        self.ready.append(handle)
        self.ready.sort(key=lambda w: w.index)
        self._release_held()
        self._update()

    def gone(self, handle: WorkerHandle) -> None:
        self._full.discard(handle)
        if handle in self.ready:
            self.ready.remove(handle)
            self._update()

    def filenos(self) -> list[int]:
        """The connections held for want of a worker: a worker forked meanwhile must close its copies (a copy
        left open keeps the client's connection open after another worker answered and closed it)."""
        return [fd for fd, _peer, _family in self.held]

    def heard_from(self, handle: WorkerHandle) -> None:
        """A worker sent frames (its heartbeat at least): a late or full worker may take connections again."""
        if self.policy.dispatches and (self.held or not self.accepting):
            self._release_held()
            self._update()

    def backlog_changed(self, handle: WorkerHandle, waiting: bool) -> None:
        with contextlib.suppress(KeyError, ValueError):
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if waiting else 0)
            key = self.selector.get_key(handle.channel.sock)
            self.selector.modify(handle.channel.sock, events, key.data)
        if not waiting:
            self._release_held()
        self._update()

    def close(self) -> None:
        """Stop accepting; connections held for want of a worker go to whoever can still take them."""
        self._release_held()
        self._drop_held()
        self.closed = True
        self._update()

    def _drop_held(self) -> None:
        while self.held:
            os.close(self.held.popleft()[0])

    def _on_accept(self, sock: socket.socket, family: int) -> None:
        """``family``: the listener's, read once when it is watched (``sock.family`` makes an enum per read)."""
        # The bare descriptor: socket.accept() would wrap it in a socket object (one more system call) only for
        # it to be detached again, since the descriptor is all that is passed on.
        accept = sock._accept  # type: ignore[attr-defined]
        accepted: list[Accepted] = []
        for _ in range(_ACCEPT_BATCH):
            try:
                fd, addr = accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self._out_of_descriptors(exc)
                # Else the client left before it was accepted (ECONNABORTED): nothing to do.
                break
            accepted.append((fd, addr[0] if isinstance(addr, tuple) else "", family))
        self._dispatch(accepted)

    def _out_of_descriptors(self, exc: OSError) -> None:
        """The listener stays readable while the primary cannot accept: stop watching it for a moment."""
        self._failed_accepts += 1
        now = self.clock()
        if now - self._last_report >= _REPORT_EVERY:
            logger.warning("cannot accept connections: %s (%d time%s since the last report); pausing %gs — raise "
                           "the primary's ulimit -n", exc.strerror, self._failed_accepts,
                           "" if self._failed_accepts == 1 else "s", _FULL_PAUSE)
            self._failed_accepts = 0
            self._last_report = now
        self.paused_until = now + _FULL_PAUSE
        self.timers.add(_FULL_PAUSE, self._update)
        self._update()

    def _dispatch(self, connections: list[Accepted]) -> None:
        """Choose a worker for each connection, then pass each worker its share in one frame per family."""
        shares: dict[tuple[WorkerHandle, int], list[int]] = {}
        for connection in connections:
            fd, peer, family = connection
            chosen = self._choose(peer)
            if chosen is None:
                self.held.append(connection)
            else:
                chosen.dispatched += 1
                shares.setdefault((chosen, family), []).append(fd)
        for (handle, family), share in shares.items():
            handle.channel.send_bytes(connection_frame(len(share), family), share)
        if self.held or any(handle.channel.backlog for handle, _family in shares):
            self._update()

    def _choose(self, peer: str) -> WorkerHandle | None:
        now = self.clock()
        fallback: WorkerHandle | None = None
        at_limit: WorkerHandle | None = None  # the first in order of those at --limit-concurrency
        candidates: Iterable[WorkerHandle] = self._order(self.ready, peer) if self._order is not None else ()
        for handle in candidates:
            if not self._can_take(handle, now):
                continue
            if self.concurrency and handle.open_connections >= self.concurrency:
                at_limit = at_limit or handle
                continue
            if not handle.channel.backlog:
                return handle
            if fallback is None or handle.channel.backlog < fallback.channel.backlog:
                fallback = handle
        # Everyone is behind: queue it on the least behind; accepting pauses until someone catches up. Every
        # worker at its limit: the policy's choice answers 503, as --limit-concurrency promises.
        return fallback or at_limit

    def _can_take(self, handle: WorkerHandle, now: float) -> bool:
        """Alive by its heartbeat and with room in its descriptor table (a full worker would lose it)."""
        if handle.is_full:
            if handle not in self._full:
                self._full.add(handle)
                logger.warning("%s is at its descriptor limit (%d open connections; raise ulimit -n): passing "
                               "it nothing until connections close", handle.info, handle.open_connections)
            return False
        self._full.discard(handle)
        return now - handle.last_seen < self.late_after

    def redispatch(self, fds: list[int]) -> None:
        """Pass on connections a dead worker never received; with nobody left to take them, drop them."""
        if fds:
            self.held.extend(_describe(fd) for fd in fds)
            self._release_held()
            if self.closed:
                self._drop_held()
            self._update()

    def _release_held(self) -> None:
        if self.held and self.ready:
            held = list(self.held)
            self.held.clear()
            self._dispatch(held)

    def _update(self) -> None:
        now = self.clock()
        want = (
            not self.closed
            and not self.held
            and now >= self.paused_until
            and any(not w.channel.backlog and self._can_take(w, now) for w in self.ready)
        )
        if want == self.accepting:
            return
        self.accepting = want
        for sock in self.listeners:
            if want:
                self.selector.register(sock, selectors.EVENT_READ,
                                       lambda mask, s=sock, f=int(sock.family): self._on_accept(s, f))
            else:
                with contextlib.suppress(KeyError, ValueError):
                    self.selector.unregister(sock)


def _describe(fd: int) -> Accepted:
    """A passed-back connection as the accept loop would have described it (a rare path: ask the kernel)."""
    sock = socket.socket(fileno=fd)
    family = sock.family
    try:
        peer = sock.getpeername()
    except OSError:
        peer = ""
    finally:
        sock.detach()
    return fd, peer[0] if isinstance(peer, tuple) else "", family
