"""Small servers in the primary's one wait: each connection brings one short request and gets one answer.

The control socket and the metrics endpoint are such servers. Nothing blocks: the listener and every
connection are registered in the primary's selector, a request is read as it arrives, the answer written as
the peer takes it. A request that grows past ``max_request`` gets ``too_large()``; one that does not complete
within ``timeout`` seconds is closed. Subclasses say when a request is complete and what to answer.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
from dataclasses import dataclass, field

from .supervision import Timer, Timers


@dataclass(eq=False)
class _Client:
    sock: socket.socket
    received: bytearray = field(default_factory=bytearray)
    answer: bytes = b""
    timer: Timer | None = None


class OneShotServer:
    max_request = 8 * 1024
    timeout = 10.0

    def __init__(self, selector: selectors.BaseSelector, timers: Timers) -> None:
        self.selector = selector
        self.timers = timers
        self.sock: socket.socket | None = None
        self._clients: set[_Client] = set()

    # What a subclass says.

    def refuse(self, conn: socket.socket) -> bytes | None:
        """The answer for a peer that may not ask anything; None to serve it."""
        return None

    def answer(self, received: bytes) -> bytes | None:
        """The answer once ``received`` holds a whole request; None to read more."""
        raise NotImplementedError

    def too_large(self) -> bytes:
        raise NotImplementedError

    # The mechanics.

    def serve(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.selector.register(sock, selectors.EVENT_READ, lambda mask: self._on_accept())

    def filenos(self) -> list[int]:
        own = [self.sock.fileno()] if self.sock is not None else []
        return own + [client.sock.fileno() for client in self._clients]

    def close(self) -> None:
        for client in list(self._clients):
            self._drop(client)
        if self.sock is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(self.sock)
            self.sock.close()
            self.sock = None

    def _on_accept(self) -> None:
        assert self.sock is not None
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return  # gone before it was accepted, or out of descriptors: the listener stays readable
        conn.setblocking(False)
        client = _Client(conn)
        self._clients.add(client)
        client.timer = self.timers.add(self.timeout, lambda: self._drop(client))
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
