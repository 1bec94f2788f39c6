"""HTTP/2 for the inline WSGI engine: the connections it hands over, served on one asyncio loop thread per worker.

The inline engine (adapters.engine) speaks HTTP/1.1 on a selectors loop with no asyncio. It decides once per
connection, never per request: a TLS connection whose ALPN chose ``h2``, or a cleartext one whose first bytes are
the HTTP/2 preface (h2c with prior knowledge) or whose first request asks for ``Upgrade: h2c`` (answered 101, then
on stream 1), leaves the engine with the bytes read so far and comes here
(``H2Side.adopt``, called on the engine's thread). HTTP/1.1 connections never meet this module: a worker that
gets no HTTP/2 connection never imports it, nor asyncio, nor h2 (adapters.entry builds it at the first one).

* One thread, started at the first HTTP/2 connection, runs an asyncio loop with adapters.stack.http2's
  ``H2Protocol`` on every handed-over connection, the WSGI app behind the bridge (adapters.stack.bridge) as on the
  stack with ``--threads 1``: SERVER_PROTOCOL ``HTTP/2``, a streamed body read in an upload thread.
* ``wsgi.multithread`` stays False: every stretch of app code (the call, each ``next()`` of its body, ``close()``)
  holds the engine's own gate, which the engine's loop and its upload threads hold for theirs; a read of a body
  still arriving lets go of it meanwhile. So app code never runs in two places at once, and --request-timeout's
  stamp (adapters.deadline.TimedGate) covers HTTP/2 requests too.
* The socket is driven by a small asyncio transport of this module's (``_SocketTransport``, readers and writers on
  the loop): asyncio refuses an ``ssl.SSLSocket``, and the engine's TLS connections are SSLSockets whose handshake
  is done (adapters.engine.tls.TLSSocket reports OpenSSL's "not now" as BlockingIOError, as a plain socket does).
  One transport for both keeps the bytes read before the hand-over in order, ahead of the socket's next.
* What the engine counts stays on the engine's thread: each response and each closed connection is posted to its
  loop (``call_soon_threadsafe``), where --max-requests, the access log, --metrics and the primary's count of
  closes read them, as for its own connections.
* Drain (``drain``): GOAWAY on every connection; streams in flight finish; the engine waits until the last one
  closed, then ``close`` stops the loop and joins the thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from email.utils import formatdate
from typing import Any, Protocol

from clusterrun.adapters.admission import Admission
from clusterrun.adapters.headers import ResponseHeaders
from clusterrun.adapters.proxy import ForwardedApp, Forwarding
from clusterrun.adapters.stack.bridge import WSGIBridge
from clusterrun.adapters.stack.http1 import Shared
from clusterrun.adapters.stack.http2 import H2Limits, H2Protocol
from clusterrun.adapters.stack.observing import Done, observed
from clusterrun.adapters.wsgi_app import Environ, StartResponse

__all__ = ["H2Side", "InlineEngine"]

logger = logging.getLogger("clusterrun")

_READ = 64 * 1024  # more than a TLS record holds (16 KiB): one read takes a whole record (adapters.engine.tls)
_HIGH_WATER, _LOW_WATER = 64 * 1024, 16 * 1024  # asyncio's own defaults for a socket transport
_LINGER = 2.0  # seconds a closed connection still reads (and drops) what the client sends, as the engine does


class InlineEngine(Protocol):
    """What this module needs of the inline engine (adapters.engine.server.WSGIEngine), declared here: the stack
    never imports the engine."""

    app: Any  # the WSGI app, read for each request: the worker replaces it after the first
    admission: Any  # --limit-concurrency's places (adapters.admission.Admission), shared with the engine's connections
    gate: Any  # held while app code runs (a threading.Lock, or adapters.deadline.TimedGate)
    loop: Any  # the engine's SelectorLoop: call_soon_threadsafe

    def h2_served(self, report: tuple[Any, ...] | None) -> None:
        """On the engine's thread: one HTTP/2 response (``report``: on_response's arguments, or None)."""

    def h2_closed(self) -> None:
        """On the engine's thread: one handed-over connection closed."""


class _State:
    """What H2Protocol reads of the server state (uvicorn's ServerState on the stack)."""

    __slots__ = ("connections", "default_headers", "tasks", "total_requests")

    def __init__(self) -> None:
        self.connections: set[Any] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.default_headers: list[tuple[bytes, bytes]] = []
        self.total_requests = 0


class H2Side:
    """The HTTP/2 connections of one inline engine, on a loop thread of their own (see the module)."""

    def __init__(self, engine: InlineEngine, *, limits: H2Limits, admission: Admission | None, root_path: str,
                 keep_alive: float, headers: ResponseHeaders, forwarding: Forwarding | None,
                 extra_environ: dict[str, Any], body_timeout: float | None, on_response: bool) -> None:
        self.engine = engine
        self.loop = asyncio.new_event_loop()
        self._limits = limits
        self._admission = admission  # the engine's --limit-concurrency: its HTTP/1.1 and HTTP/2 connections count alike
        self._headers = headers
        self._fixed = headers.fixed()
        self._state = _State()
        self._draining = False
        self.bridge = WSGIBridge(_Gated(engine), threads=1, extra_environ=extra_environ, body_timeout=body_timeout)
        app: Any = observed(self.bridge, _posting(engine, on_response))
        if forwarding is not None:
            app = ForwardedApp(app, forwarding)
        self._shared = Shared(app, self._state, {}, self.loop, root_path=root_path, timeout_keep_alive=keep_alive,
                              make_guard=_no_guard, on_close=[self._closed], upgrade=None,
                              # The bridge's input keeps the request body's clock; --body-timeout on the response
                              # is the protocol's: a stream whose client takes nothing is reset, and frees the
                              # bridge's thread for the others.
                              send_timeout=body_timeout)
        self._buffer = bytearray(_READ)  # every read on this thread lands here first
        self._thread = threading.Thread(target=self._run, name="clusterrun-h2", daemon=True)
        try:
            self._thread.start()
        except RuntimeError:  # no thread to be had: the engine refuses this connection and tries again later
            self.bridge.close()
            self.loop.close()
            raise

    # The engine's thread.

    def adopt(self, sock: Any, data: bytes, peer: Any, local: Any, upgrade: tuple[Any, ...] | None = None) -> None:
        """Serve ``sock`` (plain, or a TLSSocket past its handshake) in HTTP/2; ``data``: its bytes read so far;
        ``upgrade``: an ``Upgrade: h2c`` request (HTTP2-Settings, method, target, fields) answered 101 first."""
        self.loop.call_soon_threadsafe(self._adopt, sock, data, peer, local, upgrade)

    def drain(self) -> None:
        """GOAWAY on every connection: streams in flight finish, each connection closes once it has none."""
        self.loop.call_soon_threadsafe(self._drain)

    def close(self) -> None:
        """Stop the loop and join the thread (after the drain: no connection is left)."""
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join()
        self.bridge.close()
        self.loop.close()

    # The loop's thread.

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self._tick()
        try:
            self.loop.run_forever()
        finally:
            for task in list(self._state.tasks):
                task.cancel()

    def _tick(self) -> None:
        date = [(b"date", formatdate(usegmt=True).encode())] if self._headers.date else []
        self._state.default_headers = self._fixed + date
        self.loop.call_later(1.0 - time.time() % 1.0, self._tick)

    def _adopt(self, sock: Any, data: bytes, peer: Any, local: Any, upgrade: tuple[Any, ...] | None) -> None:
        protocol = H2Protocol(self._shared, self._limits, self._admission)
        transport = _SocketTransport(self.loop, sock, protocol, peer, local, self._buffer)
        try:
            transport.start(data, None if upgrade is None else functools.partial(protocol.upgraded, transport,
                                                                                 *upgrade))
        except Exception:  # the connection is lost, never the count of open ones a drain waits for
            logger.exception("HTTP/2 connection from %s failed as it was taken over", peer)
            transport.abort()
            return
        if self._draining:
            protocol.shutdown()

    def _drain(self) -> None:
        self._draining = True
        for protocol in list(self._state.connections):
            protocol.shutdown()

    def _closed(self) -> None:
        self.engine.loop.call_soon_threadsafe(self.engine.h2_closed)


def _no_guard(conn: Any) -> Any:
    raise RuntimeError("HTTP/2 connections have no HTTP/1.1 guard")


# App code under the engine's gate.

class _Gated:
    """The engine's WSGI app, every stretch of its code holding the engine's gate (see the module)."""

    def __init__(self, engine: InlineEngine) -> None:
        self.engine = engine

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        gate = self.engine.gate
        name: Callable[[bytes, bytes], None] | None = getattr(gate, "name", None)  # --request-timeout's stamp
        label = (environ["REQUEST_METHOD"].encode("latin-1"), environ.get("RAW_URI", "").encode("latin-1"))
        stream = environ["wsgi.input"]
        if not isinstance(stream, io.BytesIO):  # a body still arriving: waiting for it is no app code
            environ["wsgi.input"] = _Released(stream, gate)
        if name is not None:
            name(*label)
        with gate:
            result: Iterable[bytes] = self.engine.app(environ, start_response)
        if type(result) in (list, tuple):  # nothing of the app's runs to iterate or close it
            return result
        return _GatedBody(result, gate, name, label)


class _GatedBody:
    """The app's body iterable, ``next()`` and ``close()`` holding the gate."""

    def __init__(self, result: Iterable[bytes], gate: Any, name: Callable[[bytes, bytes], None] | None,
                 label: tuple[bytes, bytes]) -> None:
        self._result, self._iterator = result, iter(result)
        self._gate, self._name, self._label = gate, name, label

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        if self._name is not None:
            self._name(*self._label)
        with self._gate:
            return next(self._iterator)

    def close(self) -> None:
        close = getattr(self._result, "close", None)
        if close is not None:
            if self._name is not None:
                self._name(*self._label)
            with self._gate:
                close()


class _Released:
    """``wsgi.input`` of a body still arriving: each read lets go of the gate while it waits for the network."""

    def __init__(self, stream: Any, gate: Any) -> None:
        self._stream, self._gate = stream, gate

    def _unheld(self, method: Callable[..., Any], *args: Any) -> Any:
        self._gate.release()
        try:
            return method(*args)
        finally:
            self._gate.acquire()

    def read(self, size: int | None = -1) -> bytes:
        return self._unheld(self._stream.read, size)  # type: ignore[no-any-return]

    def readline(self, size: int | None = -1) -> bytes:
        return self._unheld(self._stream.readline, size)  # type: ignore[no-any-return]

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        return self._unheld(self._stream.readlines, hint)  # type: ignore[no-any-return]

    def readable(self) -> bool:
        return True

    def __iter__(self) -> Iterator[bytes]:
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def close(self) -> None:
        self._stream.close()


def _posting(engine: InlineEngine, on_response: bool) -> Done:
    """Each response posted to the engine's thread: counted (--max-requests), and with ``on_response`` told to the
    access log and --metrics with the engine's own arguments."""
    post = engine.loop.call_soon_threadsafe

    def done(scope: Any, status: int, size: int, seconds: float, sent: Any) -> None:
        post(engine.h2_served, _report(scope, status, size, seconds, sent) if on_response else None)

    return done


def _report(scope: Any, status: int, size: int, seconds: float, sent: Any) -> tuple[Any, ...]:
    """on_response's arguments (adapters.engine.settings.EngineSettings.on_response) for one response."""
    client = scope.get("client")
    received = scope.get("headers") or []
    fields = dict(received)
    return (f"{client[0]}:{client[1]}" if client else "-", scope["method"], scope["path"],
            scope["query_string"].decode("latin-1"), "2", status, size, seconds,
            fields.get(b"referer", b"").decode("latin-1"), fields.get(b"user-agent", b"").decode("latin-1"),
            list(received), list(sent))


class _SocketTransport(asyncio.Transport):
    """An asyncio transport over a connected non-blocking socket, plain or TLS (see the module)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, sock: Any, protocol: asyncio.Protocol, peer: Any,
                 local: Any, buffer: bytearray) -> None:
        ssl_object = sock if hasattr(sock, "selected_alpn_protocol") else None
        self._tls = ssl_object is not None
        super().__init__({"peername": peer, "sockname": local, "socket": sock, "ssl_object": ssl_object,
                          "sslcontext": getattr(ssl_object, "context", None)})
        self._loop, self._sock, self._fd = loop, sock, sock.fileno()
        self._protocol = protocol
        self._read_buffer = buffer
        self._out = bytearray()
        self._closing = self._closed = False
        self._linger: asyncio.TimerHandle | None = None
        self._reading = False
        self._writing_paused = False  # the protocol was told pause_writing()
        self._eof = False  # write_eof(): the sending side is shut once what is written went out

    def start(self, data: bytes, upgraded: Callable[[], None] | None) -> None:
        """The protocol takes the connection (``upgraded``: in place of connection_made, H2Protocol.upgraded), then
        the bytes read before the hand-over, then the socket's."""
        sock = self._sock
        sock.setblocking(False)
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            # As asyncio's transports: frames go out as written. Nagle's algorithm would hold a small frame back
            # until the client acknowledged the last, which it delays (measured on one connection with 32 streams at
            # a time: 650 requests a second, the server idle between 40 ms waits; 5,500-9,100 without it).
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if upgraded is None:
            self._protocol.connection_made(self)
        else:
            upgraded()
        if data and not self._closing:
            self._protocol.data_received(data)
        self.resume_reading()

    # Reading.

    def _readable(self) -> None:
        buffer = self._read_buffer
        try:
            count = self._sock.recv_into(buffer, _READ)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # ssl.SSLError among them
            self._finish(exc)
            return
        if not count:
            self.pause_reading()
            if not self._protocol.eof_received():
                self.close()
            return
        self._protocol.data_received(bytes(buffer[:count]))

    def is_reading(self) -> bool:
        return self._reading

    def pause_reading(self) -> None:
        if self._reading:
            self._reading = False
            self._loop.remove_reader(self._fd)

    def resume_reading(self) -> None:
        if not self._reading and not self._closing:
            self._reading = True
            self._loop.add_reader(self._fd, self._readable)

    # Writing.

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing or self._eof or not data:
            return
        if not self._out:
            try:
                sent = self._sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._finish(exc)
                return
            if sent == len(data):
                return
            data = memoryview(data)[sent:]
            self._loop.add_writer(self._fd, self._writable)
        self._out += data
        if not self._writing_paused and len(self._out) > _HIGH_WATER:
            self._writing_paused = True
            self._protocol.pause_writing()

    def _writable(self) -> None:
        out = self._out
        try:
            # A TLS write OpenSSL could not finish is tried again with the same bytes first, as it requires.
            sent = self._sock.send(out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._finish(exc)
            return
        del out[:sent]
        if self._writing_paused and len(out) <= _LOW_WATER:
            self._writing_paused = False
            self._protocol.resume_writing()
        if not out:
            self._loop.remove_writer(self._fd)
            if self._closing:
                self._shut()
            elif self._eof:
                self._shut_sending()

    def get_write_buffer_size(self) -> int:
        return len(self._out)

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return _LOW_WATER, _HIGH_WATER

    def can_write_eof(self) -> bool:
        return not self._tls  # TLS has no half-close: its close_notify ends both ways

    def write_eof(self) -> None:
        """Shut the sending side once what is written went out, reading on: HTTP/2's lingering close
        (adapters.stack.http2), where the client reads the GOAWAY, then the end, while its late frames are still
        taken. (Closed instead, the socket would answer them with a reset.)"""
        if self._closing or self._eof:
            return
        self._eof = True
        if not self._out:
            self._shut_sending()

    def _shut_sending(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            self._finish(exc)

    # Closing.

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Close once what is written went out."""
        if self._closing:
            return
        self._closing = True
        self.pause_reading()
        if not self._out:
            self._loop.call_soon(self._shut)

    def _shut(self) -> None:
        """Everything is written: shut the sending side, and read and drop what still comes until the client
        closes (at most _LINGER seconds). Closed at once, a socket with unread bytes (a WINDOW_UPDATE or SETTINGS
        ack sent just before the GOAWAY arrived) resets the connection, and the client may lose the last answer
        it has not read yet."""
        if self._closed or self._linger is not None:
            return
        try:
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._finish(None)
            return
        self._linger = self._loop.call_later(_LINGER, self._finish, None)
        self._loop.add_reader(self._fd, self._drop)

    def _drop(self) -> None:
        try:
            count = self._sock.recv_into(self._read_buffer, _READ)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            count = 0
        if not count:
            self._finish(None)

    def abort(self) -> None:
        self._closing = True
        self._finish(None)

    def _finish(self, exc: Exception | None) -> None:
        if self._closed:
            return
        self._closed = self._closing = True
        self._reading = False
        self._loop.remove_reader(self._fd)
        self._loop.remove_writer(self._fd)
        linger, self._linger = self._linger, None
        if linger is not None:
            linger.cancel()
        self._out.clear()
        with contextlib.suppress(OSError):
            self._sock.close()
        self._protocol.connection_lost(exc)

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol  # type: ignore[assignment]

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

