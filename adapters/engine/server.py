"""The inline WSGI engine (``--threads 1``): a worker serves HTTP/1.x straight from a ``SelectorLoop``.

Per worker one thread runs one ``selectors`` loop (adapters.engine.reactor) over its listeners and connections; the
app is called on that thread, where no asyncio loop exists (Django's ORM, Flask ``async def`` views and
``asyncio.run()`` in a view just work). Measured: asyncio's transports, protocols and tasks plus the ASGI
messages cost WSGI serving 2-3x (DESIGN.md, "Where WSGI speed comes from").

* ``listen(sock)``: one ``accept`` per wake-up that keeps a connection open, so that workers sharing a
  listener share its keep-alive clients (connections answered and closed at once are taken in a row);
  ``adopt(sock)``: a connection the primary accepted and passed. Either way the new connection's request
  is read and answered at once when it already came with it, before the connection is ever registered in
  the selector (the common case with a new connection per request costs no epoll_ctl at all).
* ``drain(linger, done)``: finish what is in flight; close idle keep-alive connections at once (linger 0) or
  keep them up to ``linger`` seconds, answering a request that arrives on one with ``Connection: close``:
  closing an idle keep-alive connection races the client's next request on it.
* Once a second, on the loop: the Date header, and the sweep that closes connections idle past
  --timeout-keep-alive and heads not complete within the head timeout (408).
* HTTP/2 (``to_http2``): a connection that begins as HTTP/2 (ALPN h2 on TLS; in cleartext the h2c preface, or an
  ``Upgrade: h2c`` first request) leaves the loop for the HTTP/2 side that ``EngineSettings.http2`` builds at the
  first one (adapters.entry: adapters.stack.inline_h2, an asyncio loop thread); it posts each response
  (--max-requests, ``on_response``) and each close back to this loop (``h2_served``, ``h2_closed``), and a drain
  waits for its connections.
"""

from __future__ import annotations

import http
import logging
import socket
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from email.utils import formatdate
from typing import IO, Any
from urllib.parse import unquote, unquote_to_bytes

import httptools
from clusterrun.adapters.accepting import ACCEPT_BATCH, ACCEPT_REST, accept
from clusterrun.adapters.admission import Admission
from clusterrun.adapters.deadline import RequestStamp, TimedGate
from clusterrun.adapters.edge.proxy_protocol import HeaderReader
from clusterrun.adapters.engine.connection import Connection, Request, Upgrade
from clusterrun.adapters.engine.reactor import SelectorLoop
from clusterrun.adapters.engine.respond import Framing
from clusterrun.adapters.engine.settings import EngineSettings
from clusterrun.adapters.engine.tls import TLSConnection, TLSFileWrapper, prepare, wrap
from clusterrun.adapters.engine.upload import serve_upload
from clusterrun.adapters.limits import Exceeded
from clusterrun.adapters.proxy import apply_to_environ
from clusterrun.adapters.wsgi_app import Environ, FileWrapper, HeaderKeys, WSGIApp, path_info, split_host

from clusterrun._version import __version__

__all__ = ["TimedWSGIEngine", "WSGIEngine", "new_engine"]

logger = logging.getLogger("clusterrun")

# Uploads (bodies still arriving) run in threads, one app call at a time (the gate). A thread waiting for a slow
# client must not hold up the next upload, so there is no fixed pool that queues: a new upload gets an idle
# thread or a new one, up to this many at once per worker, and past that a 503 at once (a refusal the client
# can retry) rather than a wait behind stalled clients; each stalled one frees its thread within --body-timeout.
_UPLOAD_THREADS = 128
_DRAIN_CHECK = 0.02

_DEFAULTS = EngineSettings()


class WSGIEngine:
    """A worker's HTTP server for a WSGI app, on ``loop``; connections come from ``listen`` and ``adopt``."""

    def __init__(self, loop: SelectorLoop, app: WSGIApp, settings: EngineSettings = _DEFAULTS) -> None:
        self.loop, self.app = loop, app
        # The settings the loop reads per request are copied to attributes: one lookup each, as before.
        self.headers = settings.headers
        self._fixed_head = b"".join(name + b": " + value + b"\r\n" for name, value in self.headers.fixed())
        self.limits = settings.limits
        # --limit-concurrency counts this engine's connections too (adapters.admission): it answers one request
        # at a time, so what a client can make it hold is open connections, not running requests.
        self.admission = Admission(self.limits.concurrency)
        self.keep_alive = settings.keep_alive
        self.forwarding = settings.forwarding  # None: --no-proxy-headers
        self.proxy_protocol = settings.proxy_protocol  # None: connections begin with HTTP (or TLS) at once
        self.reading_headers = 0  # --proxy-protocol: connections whose PROXY header is still coming
        self.root_path, self.on_close = settings.root_path, settings.on_close
        self.on_response = settings.on_response  # after each response (EngineSettings.on_response)
        self.gate = self._new_gate(settings.request_clock)  # app code runs holding it
        self.total_requests = 0
        self.active = self.uploading = 0  # requests being answered now, and of them by upload threads
        self._in_flight_peak = 0
        self.connections: set[Connection] = set()
        self.listeners: list[socket.socket] = []
        self._accepting: dict[socket.socket, tuple[tuple[int, int, int], Any]] = {}  # _accept's arguments
        self.closing_all = False  # draining: every response says Connection: close
        self.server_head = b""
        self.read_buffer = bytearray(256 * 1024)  # every recv() on the loop's thread lands here first
        self._uploads: ThreadPoolExecutor | None = None
        self._keys = HeaderKeys()
        self._base: Environ = {
            "SCRIPT_NAME": settings.root_path,
            "SERVER_SOFTWARE": f"clusterrun/{__version__}",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "wsgi.version": (1, 0),
            "wsgi.url_scheme": "http",
            "wsgi.multithread": False,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
            "wsgi.file_wrapper": FileWrapper,
            "wsgi.input_terminated": True,  # wsgi.input returns b"" at the end of the body: reading to EOF is safe
            **settings.extra_environ,
        }
        self.tls = ssl_context = settings.ssl_context  # None: plain HTTP, and nothing of adapters.engine.tls runs
        if ssl_context is not None:
            prepare(ssl_context)
            self._base["wsgi.url_scheme"] = "https"
            self._base["wsgi.file_wrapper"] = TLSFileWrapper  # no sendfile through TLS
        self._serve_http2(settings.http2)
        self._tick()

    def _serve_http2(self, http2: Callable[[Any], Any] | None) -> None:
        """HTTP/2 (adapters.stack.inline_h2, built by adapters.entry where h2 is installed): connections are handed
        over to it (to_http2) and leave this engine's set; it reports their responses and closes to this loop."""
        self.http2 = http2
        self.h2: Any = None  # what serves them, made at the first HTTP/2 connection
        self.h2_open = 0  # handed-over connections not closed yet: a drain waits for them
        if self.tls is not None:  # ALPN: h2 first where it is served; a client without ALPN gets HTTP/1.1
            self.tls.set_alpn_protocols(["h2", "http/1.1"] if http2 is not None else ["http/1.1"])

    def _new_gate(self, request_clock: RequestStamp | None) -> Any:
        return threading.Lock()  # without --request-timeout (TimedWSGIEngine has the other)

    # Connections in.

    # --policy balanced: an AcceptBalance (clusterrun.wire.loads) that counts each connection accepted (and, as
    # on_close, each closed) and calls pause_accepting/resume_accepting; None under every other policy.
    balance: Any = None

    def listen(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.listeners.append(sock)
        kind = (int(sock.family), int(sock.type), sock.proto)  # ints: the properties convert to enums per call
        accept_args = self._accepting[sock] = kind, sock.getsockname()
        self._watch_listener(sock, *accept_args)

    def _watch_listener(self, listener: socket.socket, kind: tuple[int, int, int], local: Any) -> None:
        # Not closed by a drain while it rested, nor left unwatched by the balanced policy meanwhile.
        if listener in self.listeners and not (self.balance is not None and self.balance.paused):
            self.loop.add_reader(listener.fileno(), self._accept, listener, kind, local)

    def pause_accepting(self) -> None:
        """Stop watching the listeners (balanced: this worker holds more than its share); what is open goes on."""
        for sock in self.listeners:
            self.loop.remove_reader(sock.fileno())

    def resume_accepting(self) -> None:
        for sock in self.listeners:
            self._watch_listener(sock, *self._accepting[sock])

    def _accept(self, listener: socket.socket, kind: tuple[int, int, int], local: Any) -> None:
        """Accept and serve; again at once while each connection was answered and closed right away.

        One connection per wake-up that stays open, so that workers sharing a listener share its keep-alive
        clients; one that is already closed holds no place, and taking the next spares the loop a round
        (an epoll_wait and its Python) per connection when clients open one per request.
        """
        balance = self.balance
        for _ in range(ACCEPT_BATCH):
            taken = accept(listener, self._rest, listener, kind, local)
            if taken is None:
                return
            fd, peer = taken
            if balance is not None:
                balance.opened()  # before it is served: a connection answered and closed at once is counted out
            # A plain connection needs only the C socket type: socket.socket's Python layer (its __init__,
            # close() and reference counting for makefile) costs a new connection about 0.3 us and serves none.
            sock = socket.SocketType(*kind, fd) if self.tls is None else socket.socket(*kind, fd)
            if self._open(sock, peer, local):
                if balance is not None:
                    balance.held()  # it stays open: this worker may now hold too many to accept more
                return

    def _rest(self, listener: socket.socket, kind: tuple[int, int, int], local: Any) -> None:
        """Out of descriptors: keep serving what is open; take new connections again after a rest."""
        self.loop.remove_reader(listener.fileno())
        self.loop.call_later(ACCEPT_REST, self._watch_listener, listener, kind, local)

    def adopt(self, sock: socket.socket) -> None:
        """Serve a connection the primary accepted, as if this worker's own listener had."""
        self._open(sock, None, None)

    def _open(self, sock: socket.SocketType, peer: Any, local: Any) -> bool:
        """Serve a new connection what already came with it; whether it is still open after."""
        if self.proxy_protocol is not None:
            # --proxy-protocol: first the header, off the raw socket (before TLS); then served with the client's
            # address it names. Pending, it counts as open (the accept batch stops for it).
            # A drain waits for it as for a request in flight: the worker took the connection.
            self.reading_headers += 1
            HeaderReader(self.loop, sock, peer, self.proxy_protocol,
                         lambda sock, client: self._header_read(sock, client, local), self._refused).start()
            return True
        return self._serve(sock, peer, local)

    def _header_read(self, sock: socket.SocketType, client: Any, local: Any) -> None:
        self.reading_headers -= 1
        self._serve(sock, client, local)

    def _refused(self) -> None:
        self.reading_headers -= 1
        if self.on_close is not None:
            self.on_close(1)

    def _serve(self, sock: socket.SocketType, peer: Any, local: Any) -> bool:
        # A plain connection stays in blocking mode: its reads and writes on the loop say MSG_DONTWAIT, which
        # spares the ioctl that setblocking(False) costs per connection (Connection.dontwait).
        if self.tls is None:
            conn = Connection(self, sock, peer, local)
        else:
            sock.setblocking(False)  # TLS takes no flags on its reads and writes
            try:
                conn = TLSConnection(self, wrap(self.tls, sock), peer, local)
            except OSError as exc:  # the client left before the connection could be wrapped
                logger.debug("dropping a connection before its TLS handshake: %s", exc)
                sock.close()
                if self.on_close is not None:
                    self.on_close(1)
                return False
        self.connections.add(conn)
        conn.start()
        return not conn.closed

    def closed(self, conn: Connection) -> None:
        self.connections.discard(conn)
        if self.on_close is not None:
            self.on_close(1)

    # HTTP/2: decided once per connection (adapters.engine.connection: the h2c preface, Upgrade: h2c; tls: ALPN h2).

    def to_http2(self, conn: Connection, data: bytes, upgrade: Upgrade | None = None) -> None:
        """``conn`` (taken off the loop by the connection itself) is served in HTTP/2 from now on, ``data`` first;
        ``upgrade``: the ``Upgrade: h2c`` request it answers 101, then on stream 1."""
        self.connections.discard(conn)
        side = self.h2
        if side is None:
            assert self.http2 is not None  # a connection hands itself over only where HTTP/2 is served
            try:
                side = self.h2 = self.http2(self)
            except (OSError, RuntimeError) as exc:
                # Its loop needs descriptors and its thread a thread: at the descriptor limit (or the process's
                # thread limit) this connection is closed, not left open with nobody serving it; the next HTTP/2
                # connection tries again.
                logger.warning("cannot serve HTTP/2 yet: %s; closed the connection (raise ulimit -n)", exc)
                conn.sock.close()
                self.closed(conn)
                return
            if self.closing_all:
                side.drain()
        self.h2_open += 1
        side.adopt(conn.sock, data, conn.peer_address(), conn.local_address(), upgrade)

    def h2_served(self, report: tuple[Any, ...] | None) -> None:
        """An HTTP/2 response (posted by its thread): counted (--max-requests), and told to ``on_response``."""
        self.total_requests += 1
        if report is not None and self.on_response is not None:
            self.on_response(*report)

    def h2_closed(self) -> None:
        """A handed-over connection closed (posted by its thread)."""
        self.h2_open -= 1
        if self.on_close is not None:
            self.on_close(1)

    def close_listeners(self) -> None:
        for sock in self.listeners:
            self.loop.remove_reader(sock.fileno())
            sock.close()
        self.listeners.clear()
        self._accepting.clear()

    @property
    def open_connections(self) -> int:
        return len(self.connections) + self.h2_open

    @property
    def busy(self) -> bool:
        return bool(self.connections) or self.h2_open > 0

    def take_in_flight(self) -> int:
        """The most requests in flight at once since the last call (the heartbeat's count).

        The loop turns only between requests (an inline app call blocks it), so at the moment a heartbeat
        goes out the count is nearly always 0; the most since the previous heartbeat says what the worker did.
        """
        peak = max(self._in_flight_peak, self.active)
        self._in_flight_peak = self.active
        return peak

    def began(self) -> None:
        """A request is being answered (on the loop or by an upload thread)."""
        self.active += 1
        self._in_flight_peak = max(self._in_flight_peak, self.active)

    def ended(self) -> None:
        self.active -= 1

    # Requests.

    def environ(self, conn: Connection, request: Request, stream: IO[bytes] | Any, size: int) -> Environ:
        """The request's environ (its head passed adapters.limits' checks when it was parsed)."""
        environ = self._base.copy()
        url = request.url
        if b"#" in url:  # a fragment is the client's own: never part of the path or the query
            url = url.partition(b"#")[0]
        if url[:1] != b"/" and url != b"*":  # absolute form (a proxy's): the path is what counts here
            try:
                # Any: httptools' stub types path and query as bytes, but either is None when absent, and the
                # compiled build checks what it reads against the stub (a TypeError for a target with no path).
                parsed: Any = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError:
                pass  # authority form (CONNECT host:port): passed on as it came
            else:
                url = (parsed.path or b"/") + (b"?" + parsed.query if parsed.query else b"")
        raw_path, _, query = url.partition(b"?")
        environ["REQUEST_METHOD"] = request.method.decode("ascii")
        # PEP 3333: the path's bytes, percent-decoded, seen as latin-1.
        path = (unquote_to_bytes(raw_path) if b"%" in raw_path else raw_path).decode("latin-1")
        environ["PATH_INFO"] = path_info(self.root_path, path) if self.root_path else path
        environ["QUERY_STRING"] = query.decode("latin-1")
        environ["RAW_URI"] = url.decode("latin-1")
        environ["SERVER_PROTOCOL"] = "HTTP/" + request.version
        environ["wsgi.input"] = stream
        environ["wsgi.errors"] = sys.stderr  # looked up per request: the worker may redirect stderr later
        self._keys.add_to(environ, request.headers)
        if size and "CONTENT_LENGTH" not in environ:
            environ["CONTENT_LENGTH"] = str(size)  # chunked upload: the real length is known by now
        keys = conn.environ_keys
        if keys is None:
            keys = self._address_keys(conn)
        environ.update(keys)
        if "SERVER_NAME" not in keys:  # unix socket: the socket path is no server name, the Host header is the best
            environ["SERVER_NAME"], environ["SERVER_PORT"] = split_host(environ.get("HTTP_HOST", ""),
                                                                        environ["wsgi.url_scheme"])
        if conn.proxied:
            origin = apply_to_environ(environ, self.forwarding)  # type: ignore[arg-type]
            if origin is not None and origin.client is not None:
                request.client = origin.client  # for the access log
        return environ

    def _address_keys(self, conn: Connection) -> dict[str, str]:
        """A connection's addresses as environ keys, and whether its peer is a trusted proxy: made at its first
        request, the same for every other."""
        keys: dict[str, str] = {}
        peer, local = conn.peer_address(), conn.local_address()
        if isinstance(peer, tuple):
            keys["REMOTE_ADDR"], keys["REMOTE_PORT"] = peer[0], str(peer[1])
        if isinstance(local, tuple):
            keys["SERVER_NAME"], keys["SERVER_PORT"] = local[0], str(local[1])
        forwarding = self.forwarding
        conn.proxied = forwarding is not None and forwarding.trusts(peer[0] if isinstance(peer, tuple) else None)
        conn.environ_keys = keys
        return keys

    def hand_over(self, conn: Connection, request: Request) -> None:
        """A request whose body is still coming: an upload thread owns the connection until it answered."""
        if self.uploading >= _UPLOAD_THREADS:
            conn.reject(Exceeded(503, f"{_UPLOAD_THREADS} uploads in progress in this worker (the most at once)"))
            return
        if self._uploads is None:
            # An executor grows to max_workers only when no thread is idle: one thread per upload in progress.
            self._uploads = ThreadPoolExecutor(_UPLOAD_THREADS, thread_name_prefix="clusterrun-upload")
        conn.handed = True
        self.began()
        self.uploading += 1
        conn.pause_reading()
        try:
            self._uploads.submit(serve_upload, self, conn, request)
        except RuntimeError as exc:  # no thread could be started (a process or memory limit)
            self.uploading -= 1
            self.ended()
            conn.handed = False
            conn.reject(Exceeded(503, f"no thread for the upload: {exc}"))

    def served(self, conn: Connection, request: Request, framing: Framing, began: float) -> None:
        """Report one response to ``on_response``."""
        assert self.on_response is not None
        seconds = time.perf_counter() - began
        peer = request.client or conn.peer_address()
        client = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else "-"
        raw_path, _, query = request.url.partition(b"?")
        path = raw_path.decode("latin-1")
        referer = user_agent = ""
        for name, value in request.headers:
            if name == b"referer":
                referer = value.decode("latin-1")
            elif name == b"user-agent":
                user_agent = value.decode("latin-1")
        self.on_response(client, request.method.decode("ascii"), unquote(path) if "%" in path else path,
                         query.decode("latin-1"), request.version, framing.status or 500, framing.size, seconds,
                         referer, user_agent, request.headers, framing.headers)

    def log_refusal(self, peer: Any, hit: Exceeded) -> None:
        if hit.logged:
            return
        source = f" from {peer[0]}:{peer[1]}" if isinstance(peer, tuple) else ""
        logger.warning("refused a request%s: %s (%d %s)", source, hit.why, hit.status,
                       http.HTTPStatus(hit.status).phrase)

    # Once a second: the Date header and the sweep.

    def _tick(self) -> None:
        now = self.loop.time()
        date = b"date: %s\r\n" % formatdate(usegmt=True).encode() if self.headers.date else b""
        self.server_head = self._fixed_head + date
        self._sweep(now)
        self.loop.call_later(1.0 - time.time() % 1.0, self._tick)  # just after the wall clock's next second

    def _sweep(self, now: float) -> None:
        keep_alive, head_timeout = self.keep_alive, self.limits.head_timeout
        for conn in list(self.connections):
            if conn.handed or conn.rejected:
                continue
            if conn.idle_since is not None and now - conn.idle_since >= keep_alive:
                conn.close()
            elif conn.head_since is not None and conn.response is None and not conn.out and not conn.queue:
                if now - conn.head_since >= head_timeout:
                    if conn.head_size:
                        conn.reject(Exceeded(408, f"a request head not complete after {head_timeout:g} s"))
                    else:
                        conn.close()  # nothing of a request came: closed as an idle keep-alive one

    # Draining.

    def drain(self, linger: float, done: Callable[[], object]) -> None:
        """Finish every request in flight, then call ``done``; idle connections close at once, or after
        ``linger`` seconds when other workers take over (a request arriving meanwhile gets Connection: close)."""
        self.close_listeners()
        self.closing_all = True
        if self.h2 is not None:
            self.h2.drain()  # GOAWAY on every HTTP/2 connection: their streams in flight finish
        self._drain_step(self.loop.time() + linger, done)

    def _drain_step(self, deadline: float, done: Callable[[], object]) -> None:
        patient = self.loop.time() < deadline
        for conn in list(self.connections):
            if conn.idle and not patient:
                conn.close()
        if not self.connections and not self.reading_headers and not self.h2_open:
            if self._uploads is not None:
                self._uploads.shutdown(wait=False)
            if self.h2 is not None:
                self.h2.close()  # no HTTP/2 connection left: its thread stops, joined
            done()
            return
        self.loop.call_later(_DRAIN_CHECK, self._drain_step, deadline, done)


class TimedWSGIEngine(WSGIEngine):
    """The engine under --request-timeout: the gate, each hold of it stamped for the primary (adapters.deadline),
    and each request named where its environ is made, on the thread that will run it.

    A subclass, so that without the option neither costs anything; not a method replaced on the instance, which
    a compiled class (setup.py) does not allow."""

    timed: TimedGate

    def _new_gate(self, request_clock: RequestStamp | None) -> Any:
        assert request_clock is not None  # new_engine makes this class only with a clock
        self.timed = TimedGate(request_clock)
        return self.timed

    def environ(self, conn: Connection, request: Request, stream: IO[bytes] | Any, size: int) -> Environ:
        self.timed.name(request.method, request.url)
        return super().environ(conn, request, stream, size)


def new_engine(loop: SelectorLoop, app: WSGIApp, settings: EngineSettings = _DEFAULTS) -> WSGIEngine:
    """The engine ``settings`` ask for: timed with a ``request_clock`` (--request-timeout), plain without."""
    if settings.request_clock is None:
        return WSGIEngine(loop, app, settings)
    return TimedWSGIEngine(loop, app, settings)
