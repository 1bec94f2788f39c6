"""Small servers in the primary's one wait: each connection brings one short request and gets one answer.

The control socket and the metrics endpoint are such servers. Nothing blocks: the listener and every
connection are registered in the primary's selector, a request is read as it arrives, the answer written as
the peer takes it. A request that grows past ``max_request`` gets ``too_large()``; one that does not complete
within ``request_timeout`` seconds is closed, and an answer the peer has not taken within ``timeout``.
Subclasses say when a request is complete and what to answer.

These servers share the primary's descriptor table with its app listeners, whose connections it hands to the
workers (rr): idle clients of a side port must never fill it. So each holds at most ``max_clients``
connections at once (the listener is not watched meanwhile: later clients wait in its backlog), and when an
accept fails for want of descriptors or memory, the listener rests for ``ACCEPT_REST`` seconds, as the
workers' listeners do, instead of waking the loop again at once.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import resource
import selectors
import socket
from dataclasses import dataclass, field

from clusterrun.host.timers import Timer, Timers

logger = logging.getLogger("clusterrun")

# Out of descriptors (or kernel memory), a listener stays readable while every accept fails: watched, it would
# wake the loop at once, again and again (78-95% of a core measured). It rests this long instead.
ACCEPT_REST = 1.0
_OUT_OF_RESOURCES = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
# Connections one side port holds at most: its share of the descriptor table is at most 1/16 of it (3 side
# ports at most: under a fifth), so that the app's connections always find descriptors in the primary.
MAX_CLIENTS = 64
_TABLE_SHARE = 16


def client_cap() -> int:
    """How many connections one side port may hold at once: MAX_CLIENTS, fewer under a low ``ulimit -n``."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CLIENTS
    return max(2, min(MAX_CLIENTS, soft // _TABLE_SHARE))


@dataclass(eq=False)
class _Client:
    sock: socket.socket
    received: bytearray = field(default_factory=bytearray)
    answer: bytes = b""
    timer: Timer | None = None


class OneShotServer:
    max_request = 8 * 1024
    request_timeout = 5.0  # from the accept to a whole request: every real client sends it at once
    timeout = 10.0  # from a whole request to the answer's last byte taken

    def __init__(self, selector: selectors.BaseSelector, timers: Timers) -> None:
        self.selector = selector
        self.timers = timers
        self.sock: socket.socket | None = None
        self._clients: set[_Client] = set()
        self.max_clients = client_cap()
        self._watched = False
        self._resting = False

    # What a subclass says.

    def refuse(self, conn: socket.socket) -> bytes | None:
        """The answer for a peer that may not ask anything; None to serve it."""
        return None

    def answer(self, received: bytes) -> bytes | None:
        """The answer once ``received`` holds a whole request; None to read more."""
        raise NotImplementedError

    def too_large(self) -> bytes:
        raise NotImplementedError

    def describe(self) -> str:
        """How log lines name this server."""
        return type(self).__name__

    # The mechanics.

    def serve(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self._update()

    def _update(self) -> None:
        """Watch the listener while a connection more may be held and it is not resting; else leave it be."""
        sock = self.sock
        want = sock is not None and not self._resting and len(self._clients) < self.max_clients
        if sock is None or want == self._watched:
            return
        if want:
            self.selector.register(sock, selectors.EVENT_READ, lambda mask: self._on_accept())
        else:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(sock)
        self._watched = want

    def _rest_over(self) -> None:
        self._resting = False
        self._update()

    def filenos(self) -> list[int]:
        own = [self.sock.fileno()] if self.sock is not None else []
        return own + [client.sock.fileno() for client in self._clients]

    def close(self) -> None:
        for client in list(self._clients):
            self._drop(client)
        if self.sock is not None:
            if self._watched:
                with contextlib.suppress(KeyError, ValueError):
                    self.selector.unregister(self.sock)
                self._watched = False
            self.sock.close()
            self.sock = None

    def _on_accept(self) -> None:
        assert self.sock is not None
        try:
            conn, _ = self.sock.accept()
        except OSError as exc:
            if exc.errno in _OUT_OF_RESOURCES:
                logger.warning("%s: cannot accept: %s; not accepting for %g s (raise ulimit -n)",
                               self.describe(), exc.strerror, ACCEPT_REST)
                self._resting = True
                self.timers.add(ACCEPT_REST, self._rest_over)
                self._update()
            return  # else gone before it was accepted (ECONNABORTED, EAGAIN): nothing to do
        conn.setblocking(False)
        client = _Client(conn)
        self._clients.add(client)
        self._update()
        client.timer = self.timers.add(self.request_timeout, lambda: self._drop(client))
        refusal = self.refuse(conn)
        if refusal is not None:
            self._send(client, refusal)
            return
        self.selector.register(conn, selectors.EVENT_READ, lambda mask: self._on_readable(client))

    def _on_readable(self, client: _Client) -> None:
        try:
            data = client.sock.recv(self.max_request + 1)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return
        client.received += data
        if len(client.received) > self.max_request:
            self._send(client, self.too_large())
        elif (answer := self.answer(bytes(client.received))) is not None:
            self._send(client, answer)

    def _send(self, client: _Client, answer: bytes) -> None:
        client.answer = answer
        if client.timer is not None:  # the request is in: the peer now has until ``timeout`` to take the answer
            client.timer.cancel()
        client.timer = self.timers.add(self.timeout, lambda: self._drop(client))
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(client.sock)
        self.selector.register(client.sock, selectors.EVENT_WRITE, lambda mask: self._on_writable(client))

    def _on_writable(self, client: _Client) -> None:
        try:
            sent = client.sock.send(client.answer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            sent = len(client.answer)
        client.answer = client.answer[sent:]
        if not client.answer:
            self._drop(client)

    def _drop(self, client: _Client) -> None:
        if client.timer is not None:
            client.timer.cancel()
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(client.sock)
        client.sock.close()
        self._clients.discard(client)
        self._update()
