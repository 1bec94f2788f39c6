"""Primary-side dispatch: accept on the listeners, hand each connection to a worker.

Used by policies whose ``dispatches`` is True. The policy orders the ready
workers; a worker whose channel is backed up (it is not keeping up) is skipped.
When no worker can take a connection now, it is held rather than dropped, and
accepting pauses (new clients wait in the kernel's backlog) until one can.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
from collections import deque
from collections.abc import Sequence

from .channel import MAX_FDS_PER_FRAME, connection_frame
from .policies import Policy
from .supervision import WorkerHandle

logger = logging.getLogger("clusterrun")

_ACCEPT_BATCH = MAX_FDS_PER_FRAME  # connections per wake-up, so that worker frames are not starved

Accepted = tuple[int, str, int]  # a connection's descriptor, the client's address (for sticky), its family


class Dispatcher:
    def __init__(self, policy: Policy, selector: selectors.BaseSelector) -> None:
        self.policy = policy
        self.selector = selector
        self.listeners: list[socket.socket] = []
        self.ready: list[WorkerHandle] = []
        self.held: deque[Accepted] = deque()  # accepted connections nobody could take yet
        self.accepting = False
        self.closed = False

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
        if handle in self.ready:
            self.ready.remove(handle)
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

    def _on_accept(self, sock: socket.socket) -> None:
        # The bare descriptor: socket.accept() would wrap it in a socket object (one more system call) only for
        # it to be detached again, since the descriptor is all that is passed on.
        accept = sock._accept  # type: ignore[attr-defined]
        family = sock.family
        accepted: list[Accepted] = []
        for _ in range(_ACCEPT_BATCH):
            try:
                fd, addr = accept()
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # out of descriptors, or the client left already
                logger.warning("accept failed: %s", exc)
                break
            accepted.append((fd, addr[0] if isinstance(addr, tuple) else "", family))
        self._dispatch(accepted)

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
        fallback: WorkerHandle | None = None
        for handle in self.policy.order(self.ready, peer):
            if not handle.channel.backlog:
                return handle
            if fallback is None or handle.channel.backlog < fallback.channel.backlog:
                fallback = handle
        # Everyone is behind: queue it on the least behind; accepting pauses until someone catches up.
        return fallback

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
        want = (
            not self.closed
            and not self.held
            and any(not w.channel.backlog for w in self.ready)
        )
        if want == self.accepting:
            return
        self.accepting = want
        for sock in self.listeners:
            if want:
                self.selector.register(sock, selectors.EVENT_READ, lambda mask, s=sock: self._on_accept(s))
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
