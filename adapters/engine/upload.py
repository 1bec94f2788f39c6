"""A request whose body is still arriving, served by an upload thread that owns its connection meanwhile.

The inline engine answers a request on its loop when the body came whole; a larger body, or one the client
sends only after ``100 Continue``, streams to the app instead: the app runs in one of a few upload threads
and its reads of ``wsgi.input`` take the body from the socket as it comes, so that an app that rejects an
upload answers before the rest of it is read, nothing is buffered beyond one read, and ``100 Continue`` goes
out only when the app first reads. The loop leaves the connection alone until the thread gives it back.

``wsgi.multithread`` stays False: app code runs only while holding the engine's gate, which the loop takes
too, and the thread lets go of it whenever it waits for the network (a read, a write). The loop keeps
serving other connections meanwhile.

A client that stalls must not keep its thread: every wait for the network lasts at most --body-timeout (the
socket's own timeout: Python polls before each read, a cost on uploads only). A read that times out refuses
the request with 408 (the engine answers it once the thread gave the connection back), or closes the
connection if part of the response already went out; a write that makes no progress for as long closes it. The
threads themselves are no fixed pool that queues (adapters.engine.server: one more thread per upload, up to a
cap, and 503 past it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time

from clusterrun.adapters.deadline import TimedGate
from clusterrun.adapters.engine.connection import Connection, Engine, Refused, Request
from clusterrun.adapters.engine.respond import Framing, SendFile, respond
from clusterrun.adapters.limits import Exceeded
from clusterrun.adapters.wsgi_input import BodyReader, ClientDisconnected

__all__ = ["SocketInput", "serve_upload"]

logger = logging.getLogger("clusterrun")

_READ = 65536
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class SocketInput(BodyReader):
    """``wsgi.input`` of a body still arriving: reads pull it from the (blocking) socket through the parser.

    Reads past the end return b""; a client gone (or refused) before the end raises ClientDisconnected rather
    than passing a truncated body off as complete.
    """

    def __init__(self, conn: Connection, request: Request, gate: threading.Lock | TimedGate) -> None:
        super().__init__()
        self._conn, self._request, self._gate = conn, request, gate
        self.refused: Refused | None = None

    def _fill(self, size: int) -> None:
        request, buffer = self._request, self._buffer
        while True:
            if request.body:
                for piece in request.body:
                    buffer += piece
                request.body.clear()
            if request.complete or 0 <= size <= len(buffer):
                self._more = not request.complete
                return
            self._receive()

    def _receive(self) -> None:
        conn, request = self._conn, self._request
        if self.refused is not None:
            raise ClientDisconnected("the request was refused")
        self._gate.release()  # waiting for the network is no app code: the loop may run some meanwhile
        try:
            if request.continue_:
                request.continue_ = False
                conn.sock.sendall(_CONTINUE)
            data = conn.sock.recv(_READ)  # this thread's own: the loop's buffer is the loop's
        except TimeoutError:
            timeout = conn.sock.gettimeout()
            self.refused = Refused(Exceeded(408, f"no byte of the request body for {timeout:g} s (--body-timeout)"))
            raise ClientDisconnected("the request body stalled (--body-timeout)") from None
        except OSError:
            data = b""
        finally:
            self._gate.acquire()
        if not data:
            raise ClientDisconnected("the client disconnected before sending the whole request body")
        try:
            conn.feed(data)
        except Refused as refused:
            self.refused = refused
            raise ClientDisconnected("the request was refused") from refused


def serve_upload(engine: Engine, conn: Connection, request: Request) -> None:
    """In an upload thread: answer ``request`` on ``conn`` with blocking I/O, then give the connection back."""
    stream = SocketInput(conn, request, engine.gate)
    framing = Framing(engine.server_head, request.method == b"HEAD", request.version == "1.1",
                      request.keep_alive and not engine.closing_all)
    started, began = False, time.perf_counter()
    try:
        # Blocking, with the idle limit (the socket leaves the loop's MSG_DONTWAIT calls for this thread's).
        conn.sock.settimeout(engine.limits.body_timeout)
        started = _answer(engine, conn, request, stream, framing)
        if engine.on_response is not None and (started or stream.refused is None):
            engine.served(conn, request, framing, began)
    except Exception:
        logger.exception("serving an upload failed")
        framing.keep_alive = False
    finally:
        with contextlib.suppress(OSError):
            conn.sock.setblocking(False)
        refused = stream.refused
        engine.loop.call_soon_threadsafe(
            conn.handed_back, refused.hit if refused is not None else None, refused is not None and not started,
            framing.keep_alive)


def _answer(engine: Engine, conn: Connection, request: Request, stream: SocketInput, framing: Framing) -> bool:
    """Call the app and write its response; True once some of it went out. Broken: ``framing.keep_alive`` off."""
    gate, started = engine.gate, False
    framing.body_unread = lambda: not request.complete
    with gate:
        environ = engine.environ(conn, request, stream, 0)
        engine.total_requests += 1
        response = respond(engine.app, environ, framing)
        try:
            while True:
                piece = next(response, None)
                if piece is None:
                    if not request.complete:
                        framing.keep_alive = False  # the rest of the body is unread: the connection cannot go on
                    return started
                started = True
                gate.release()
                try:
                    _send(conn, piece)
                except OSError:
                    framing.keep_alive = False
                    return started
                finally:
                    gate.acquire()
        finally:
            response.close()


def _send(conn: Connection, piece: bytes | SendFile) -> None:
    """Write ``piece``; TimeoutError once the client took nothing for --body-timeout (the socket's timeout).

    Not sendall(): its timeout bounds the whole write, where a large answer to a slow client is no fault;
    each send() here waits at most the timeout for the client to take something.
    """
    if not conn.nodelay:
        conn.no_delay()  # an upload's answer may take several writes
    sock = conn.sock
    if type(piece) is not SendFile:
        data = memoryview(piece)  # type: ignore[arg-type]
        while data:
            data = data[sock.send(data):]
        return
    while piece.count:
        try:
            sent = os.sendfile(conn.fd, piece.fd, piece.offset, piece.count)
        except BlockingIOError:  # a socket with a timeout is non-blocking underneath: wait as send() would
            poll = select.poll()  # not select(): descriptors past 1023 are common in a busy worker
            poll.register(conn.fd, select.POLLOUT)
            timeout = sock.gettimeout()
            if not poll.poll(None if timeout is None else timeout * 1000):
                raise TimeoutError("the client took nothing of the response (--body-timeout)") from None
            continue
        if not sent:
            raise OSError("the file shrank while it was sent")
        piece.offset += sent
        piece.count -= sent
