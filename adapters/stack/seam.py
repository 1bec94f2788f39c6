"""The one module that touches uvicorn's internals: everything else in clusterrun uses the names below.

clusterrun serves on uvicorn's HTTP and WebSocket protocol classes but runs its own server around them (a
worker adopts connections the primary passes, drains its own way, recycles itself), so it needs more of
uvicorn than ``uvicorn.Config`` and ``uvicorn.Server`` publish. What it needs, and where:

* ``Stack`` — a worker's protocols: ``uvicorn.Config(...).load()`` for the protocol classes, one
  ``uvicorn.server.ServerState`` shared by the worker's connections, the protocol constructor's ``_loop=``,
  the server state's ``default_headers`` (our Date header), ``total_requests``, ``connections`` and
  ``tasks``, ``Config.ws_protocol_class`` replaced (uvicorn reads it on each WebSocket upgrade), and
  ``Config.loaded_app`` wrapped where uvicorn closes a connection without saying so (``_announcing_close``:
  the request cycle's bound ``send`` and its ``keep_alive``, ``uvicorn.__version__``);
* ``OpenConnection`` — one open connection as the drain sees it: the protocol's ``app`` (read for each new
  request), ``cycle.response_started`` / ``cycle.response_complete``, and ``shutdown()``;
* ``HttpConnection`` and ``RequestGuard`` — the hooks adapters.stack.guard needs to bound request heads and
  bodies: the HTTP protocol subclassed (httptools or h11), its ``loop``, ``transport``, ``client``,
  ``logger``, ``cycle`` (``disconnected``, ``message_event``), the httptools parser callbacks
  (``on_headers_complete`` with ``parser``, ``url``, ``headers``; ``on_body``; ``on_message_complete``), h11's
  ``conn`` (built in ``__init__``), ``send_400_response(msg)``, which both protocols call after a parser
  error, ``tasks`` (the server state's, for --limit-concurrency), and the protocol's ``ws_protocol_class``
  (read in ``__init__``, called with keywords on an upgrade: the guard learns of an upgraded connection's close
  from the WebSocket protocol's ``connection_lost``). For framing (issue 22): the httptools protocol's
  ``headers`` list (the scope's, which its ``on_header`` keeps appending to: rebound after the head so that
  trailers stay out), ``parser.get_http_version()``, ``parser.should_upgrade()``, ``scope["method"]``, a new
  parser built as ``type(parser)(protocol)`` (``HttpConnection.reparse``), the request cycle's ``on_response``
  and ``response_complete`` (``after_responses``), its ``transport`` (wrapped for an HTTP/1.0 request's status
  line), h11's ``Request`` event rebuilt, its ``EndOfMessage.headers``, and its ``Connection.send``.

Every name here was checked against uvicorn 0.30.0 (the oldest the pin in pyproject.toml allows) and 0.54.0
(the newest on PyPI on 2026-11-29), reading their ``config.py``, ``server.py``,
``protocols/http/httptools_impl.py``, ``protocols/http/h11_impl.py`` and ``protocols/websockets/*.py``, and
running the test suite on both (``tox -e uvicorn-oldest,uvicorn-latest``). Before widening the pin, re-read
those files for the names above and run both envs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import h11
import uvicorn
from clusterrun.adapters.admission import Admission
from clusterrun.adapters.limits import Exceeded, Headers, Limits
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

__all__ = ["ConnectionView", "HttpConnection", "OpenConnection", "RequestGuard", "RequestRefused", "Stack",
           "WebSocketLimits"]

ProtocolFactory = Callable[[], asyncio.Protocol]


# Raised by a ``RequestGuard`` hook to refuse the request; its text says why (h11 carries it along). The limits'
# own refusal, engine-neutral (adapters.limits), so that the checks the inline engine shares import no uvicorn.
RequestRefused = Exceeded


class RequestGuard(Protocol):
    """What adapters.stack.guard plugs into every HTTP connection (one guard per connection).

    uvicorn's protocol calls these; the ``*_parsed``/``*_received`` hooks run inside the parser and may raise
    ``RequestRefused``: the parser then fails, uvicorn calls ``send_400_response``, and the guard's
    ``bad_request`` answers instead.
    """

    def connection_made(self) -> None:
        """After uvicorn's own ``connection_made``."""

    def connection_lost(self) -> None:
        """Before uvicorn's own ``connection_lost``; for a connection upgraded to WebSocket, when that closes."""

    def data_received(self, data: bytes) -> None:
        """Bytes from the client; the guard passes them on to ``HttpConnection.parse`` (or does not)."""

    def head_parsed(self, method: bytes, target: bytes, version: str, headers: Headers) -> None:
        """A request head is parsed (``version``: "1.1"; header names lowercased); uvicorn calls the app next."""

    def body_received(self, size: int) -> None:
        """``size`` bytes of a request body were parsed; uvicorn hands them to the app next."""

    def trailers_received(self, trailers: Headers) -> None:
        """A chunked body ended with these trailer fields (names lowercased); they never reach the app."""

    def message_completed(self) -> None:
        """A request ended (after uvicorn's own handling of its end)."""

    def body_stalled(self, timeout: float) -> None:
        """The body being read sent nothing for ``timeout`` seconds while the app waited (clusterrun's protocol
        only: --body-timeout)."""

    def refusing(self) -> bool:
        """True while a refusal is being answered: uvicorn's generic warnings are then muted."""
        ...

    def bad_request(self) -> bool:
        """uvicorn is about to answer 400 to a request its parser rejected; True if the guard answered it."""
        ...


class ConnectionView(Protocol):
    """What a ``RequestGuard`` may see and do of one HTTP connection: ``HttpConnection`` for uvicorn's protocols,
    clusterrun's own protocol (adapters.stack.http1) for itself."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...
    @property
    def transport(self) -> asyncio.Transport: ...
    @property
    def client(self) -> tuple[str, int] | None: ...
    @property
    def default_headers(self) -> Headers: ...
    @property
    def running_requests(self) -> int: ...
    @property
    def has_request(self) -> bool: ...
    @property
    def in_flight(self) -> bool: ...
    @property
    def response_started(self) -> bool: ...
    def parse(self, data: bytes) -> None: ...
    def reparse(self, data: bytes, method: bytes) -> bool: ...
    def after_responses(self, callback: Callable[[], None]) -> None: ...
    def disconnect_app(self) -> None: ...


class HttpConnection:
    """What a ``RequestGuard`` may see and do of one of uvicorn's HTTP connections (a ``ConnectionView``)."""

    __slots__ = ("_protocol", "parse")

    def __init__(self, protocol: Any, parse: Callable[[bytes], None]) -> None:
        self._protocol = protocol
        self.parse = parse  # uvicorn's data_received: feeds the parser

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._protocol.loop  # type: ignore[no-any-return]

    @property
    def transport(self) -> asyncio.Transport:
        return self._protocol.transport  # type: ignore[no-any-return]

    @property
    def client(self) -> tuple[str, int] | None:
        return self._protocol.client  # type: ignore[no-any-return]

    @property
    def default_headers(self) -> Headers:
        """The headers uvicorn adds to every response (Server, Date)."""
        return self._protocol.server_state.default_headers  # type: ignore[no-any-return]

    @property
    def running_requests(self) -> int:
        """The worker's request tasks still running (HTTP and WebSocket; one may outlive its connection)."""
        return len(self._protocol.tasks)

    @property
    def has_request(self) -> bool:
        """A request reached the app on this connection (and may still be running)."""
        return self._protocol.cycle is not None

    @property
    def in_flight(self) -> bool:
        """A request's response is not complete yet."""
        cycle = self._protocol.cycle
        return cycle is not None and not cycle.response_complete

    @property
    def response_started(self) -> bool:
        cycle = self._protocol.cycle
        return cycle is not None and bool(cycle.response_started)

    def reparse(self, data: bytes, method: bytes) -> bool:
        """Parse ``data``, the start of a request, again with a new parser, and give the app ``method`` as the
        request's method (``data`` has a stand-in the parser knows: adapters.methods); False if the protocol
        is not httptools' (h11 takes any method itself)."""
        protocol = self._protocol
        if not isinstance(protocol, _MethodStandIn):
            return False
        parser = type(protocol.parser)(protocol)
        # uvicorn sets this leniency from 0.3x on (answer a request followed by bytes after its Connection:
        # close); set here whatever the version, as answering every complete request is what the guard wants.
        with contextlib.suppress(AttributeError):
            parser.set_dangerous_leniencies(lenient_data_after_close=True)
        protocol.parser = parser
        protocol.stand_in_for = method
        self.parse(data)
        return True

    def after_responses(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once every request parsed so far is answered (at once if none is in flight).

        Responses complete in order, and the protocol's ``cycle`` is the newest request's: its cycle calls its
        ``on_response`` when its response is complete (after the ones pipelined before it).
        """
        cycle = self._protocol.cycle
        if cycle is None or cycle.response_complete:
            callback()
            return
        completed = cycle.on_response

        def then() -> None:
            completed()
            callback()

        cycle.on_response = then

    def disconnect_app(self) -> None:
        """The app's request sees the client gone: ``receive()`` says disconnect, its sends are dropped."""
        cycle = self._protocol.cycle
        cycle.disconnected = True
        cycle.message_event.set()

    def release(self) -> None:
        """The connection is over: let go of uvicorn's protocol (this view is of no use past its close).

        The protocol holds the guard and the guard holds this view: left in place, every connection would end
        as a reference cycle that only Python's garbage collector frees: measured, about 23 objects per
        connection, a collection every few dozen connections, and a worker's CPU per request with a new
        connection each a sixth higher than with the cycle broken (tests/adapters/test_e2e_garbage.py).
        """
        self._protocol = None
        self.parse = _released


class OpenConnection:
    """One of a worker's open connections (HTTP or WebSocket), as the drain sees it."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol

    @property
    def ident(self) -> int:
        """Stable for the connection's life (views come and go)."""
        return id(self._protocol)

    def wrap_app(self, wrap: Callable[[Any], Any]) -> bool:
        """Serve the connection's next requests with ``wrap(app)``; False if it has no app to wrap."""
        if not hasattr(self._protocol, "app"):
            return False
        self._protocol.app = wrap(self._protocol.app)  # uvicorn reads it for each new request
        return True

    @property
    def idle(self) -> bool:
        """No request in flight (a WebSocket has no request cycle: idle)."""
        cycle = getattr(self._protocol, "cycle", None)
        return cycle is None or bool(cycle.response_complete)

    @property
    def response_started(self) -> bool:
        cycle = getattr(self._protocol, "cycle", None)
        return cycle is not None and bool(cycle.response_started)

    def shutdown(self) -> None:
        """uvicorn's graceful close: now if idle, else after the response in flight (Connection: close)."""
        self._protocol.shutdown()


class _QuietLogger:
    """uvicorn's protocol logger, muted for warnings while the guard refuses a request: uvicorn's generic
    "Invalid HTTP request received." would follow the guard's own line, which names the limit."""

    __slots__ = ("_guard", "_wrapped")

    def __init__(self, wrapped: logging.Logger, guard: RequestGuard) -> None:
        self._wrapped, self._guard = wrapped, guard

    @property
    def level(self) -> int:
        # Read by uvicorn as each connection opens and closes: found here, it costs no failed lookup (which
        # builds an AttributeError) on the way to __getattr__.
        return self._wrapped.level

    def warning(self, msg: object, *args: Any, **kwargs: Any) -> None:
        if not self._guard.refusing():
            self._wrapped.warning(msg, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._wrapped, name)


@dataclass(frozen=True)
class WebSocketLimits:
    """--ws-max-size, --ws-ping-interval, --ws-ping-timeout (0: no pings / no pong deadline); uvicorn's defaults."""

    max_size: int = 16 * 1024 * 1024
    ping_interval: float = 20.0
    ping_timeout: float = 20.0


# A Stack's HTTP protocols: clusterrun's own on httptools (adapters.stack.http1), or uvicorn's on httptools or h11.
PROTOCOLS = ("clusterrun", "httptools", "h11")


class Stack:
    """A worker's HTTP protocols for the stack, the classes to serve with and the state they share: clusterrun's
    own (``protocol="clusterrun"``) or uvicorn's ("httptools", "h11"); WebSockets always on uvicorn's."""

    def __init__(self, app: Any, *, protocol: str, access_log: bool, timeout_keep_alive: int, backlog: int,
                 headers: list[tuple[str, str]] | None = None, root_path: str = "",
                 ws: WebSocketLimits | None = None, body_timeout: float | None = None,
                 send_timeout: float | None = None, h2_max_streams: int = 100, h2_max_fields: int = 0) -> None:
        """``body_timeout`` and ``send_timeout``: --body-timeout on the request body and on the response, which
        clusterrun's own protocol applies (http1.Shared); uvicorn's protocols have neither."""
        if protocol not in PROTOCOLS:
            raise ValueError(f"unknown HTTP protocol {protocol!r}: one of {', '.join(PROTOCOLS)}")
        ws = ws or WebSocketLimits()
        config = uvicorn.Config(
            app=lambda: app,  # a factory, so that uvicorn does not probe the app by calling it
            factory=True,
            interface="asgi3",
            http="h11" if protocol == "h11" else "httptools",
            lifespan="off",  # clusterrun runs the lifespan itself (adapters.stack.lifespan)
            log_config=None,
            access_log=access_log,
            proxy_headers=False,  # clusterrun applies them itself (adapters.proxy), the same for both engines
            root_path=root_path,
            server_header=False,
            headers=headers if headers is not None else [("server", "clusterrun")],
            timeout_keep_alive=timeout_keep_alive,
            backlog=backlog,
            # 0 means off in clusterrun; uvicorn's WebSocket implementations each take None for that.
            ws_max_size=ws.max_size,
            ws_ping_interval=ws.ping_interval or None,
            ws_ping_timeout=ws.ping_timeout or None,
        )
        config.load()  # imports the protocol classes, sets encoded_headers and loaded_app
        if issubclass(config.http_protocol_class, H11Protocol) or _version(uvicorn.__version__) < (0, 53):
            config.loaded_app = _announcing_close(config.loaded_app)  # every protocol reads it in __init__
        self._app = app
        self._config = config
        self._body_timeout, self._send_timeout = body_timeout, send_timeout
        self._state = ServerState()
        self._own = protocol == "clusterrun"
        self._http_protocol: type[Any] = config.http_protocol_class
        self._make_guard: Callable[[ConnectionView], RequestGuard] | None = None
        self._upgraded_close = False
        self._on_close: list[Callable[[], None]] = []
        self._h2_max_streams, self._h2_max_fields = h2_max_streams, h2_max_fields
        self._head_limit = 0
        self._limits: Limits | None = None
        self._admission: Admission | None = None
        self.encoded_headers: Headers = list(config.encoded_headers)

    @property
    def name(self) -> str:
        """What serves HTTP, for the start log: "clusterrun http1 (httptools, compiled)" (or "pure Python": how
        setup.py built it), "uvicorn httptools", "uvicorn h11"."""
        if self._own:
            from clusterrun.adapters.stack import http1

            build = "pure Python" if str(http1.__file__).endswith(".py") else "compiled"
            return f"clusterrun http1 (httptools, {build})"
        return "uvicorn h11" if issubclass(self._config.http_protocol_class, H11Protocol) else "uvicorn httptools"

    # Building the protocol classes (before serving).

    def guard_requests(self, make_guard: Callable[[ConnectionView], RequestGuard], head_limit: int, *,
                       upgraded_close: bool = True, limits: Limits | None = None,
                       admission: Admission | None = None) -> None:
        """Give every HTTP connection a guard (adapters.stack.guard); ``head_limit`` bounds a request head in bytes.

        ``upgraded_close``: the guard must hear when a connection upgraded to WebSocket closes (it holds a place
        of --limit-concurrency until then). Without it, an upgrade's HTTP protocol is left to the collector.
        ``limits`` and ``admission`` (--limit-concurrency's places), the guards' own: HTTP/2 applies them itself.
        """
        self._head_limit = head_limit
        self._limits, self._admission = limits, admission
        if self._own:  # the protocol calls the guard itself, and is its own view (ConnectionView)
            self._make_guard, self._upgraded_close = make_guard, upgraded_close
            return
        base = self._http_protocol
        if issubclass(base, H11Protocol):
            self._http_protocol = _guarded_h11(base, make_guard, head_limit, upgraded_close)
        else:
            self._http_protocol = _guarded_httptools(base, make_guard, upgraded_close)

    def notify_close(self, on_close: Callable[[], None]) -> None:
        """Call ``on_close`` whenever a connection closes (for least-conn).

        Both protocols are wrapped: a connection upgraded to WebSocket closes through the WebSocket protocol
        only, which uvicorn takes from the config on each upgrade.
        """
        if self._own:
            self._on_close.append(on_close)
        else:
            self._http_protocol = _counting(self._http_protocol, on_close)
        if self._config.ws_protocol_class is not None:
            self._config.ws_protocol_class = _counting(self._config.ws_protocol_class, on_close)

    def protocol_factory(self, loop: asyncio.AbstractEventLoop, app_state: dict[str, Any]) -> ProtocolFactory:
        """What ``loop.create_server`` and ``loop.connect_accepted_socket`` call for each connection."""
        if self._own:
            # Here, not at the top: http1 needs httptools, an optional dependency (h11 alone serves uvicorn's).
            from clusterrun.adapters.stack.http1 import H1Protocol, Shared

            config, make_guard = self._config, self._make_guard
            if make_guard is None:  # the order of the worker's set-up (adapters.stack.serving), not a request's
                raise RuntimeError("guard_requests() must come before protocol_factory()")
            upgrade = functools.partial(self._upgrade, app_state) if config.ws_protocol_class is not None else None
            shared = Shared(self._app, self._state, app_state, loop, root_path=config.root_path,
                            timeout_keep_alive=config.timeout_keep_alive, make_guard=make_guard,
                            on_close=self._on_close, upgrade=upgrade, body_timeout=self._body_timeout,
                            send_timeout=self._send_timeout)
            if self.http2:
                from clusterrun.adapters.stack.http2 import H2Limits, H2Protocol

                request = self._limits
                limits = H2Limits(max_concurrent_streams=self._h2_max_streams, max_header_list_size=self._head_limit,
                                  max_fields=self._h2_max_fields,
                                  max_field_size=request.header_field if request is not None else 0,
                                  head_timeout=request.head_timeout if request is not None else 0.0,
                                  max_body=request.body if request is not None else 0)
                shared.h2 = functools.partial(H2Protocol, shared, limits, self._admission)
            return functools.partial(H1Protocol, shared)
        protocol: Callable[..., asyncio.Protocol] = self._http_protocol
        return functools.partial(protocol, config=self._config, server_state=self._state, app_state=app_state,
                                 _loop=loop)

    @property
    def http2(self) -> bool:
        """HTTP/2 is served: on clusterrun's own protocol, where the h2 library is installed (clusterrun[http2])."""
        if not self._own:
            return False
        try:
            import h2  # noqa: F401
        except ImportError:
            return False
        return True

    def _upgrade(self, app_state: dict[str, Any], guard: RequestGuard) -> asyncio.Protocol:
        """The WebSocket protocol (uvicorn's) that takes over a connection of clusterrun's own protocol; ``guard``,
        the connection's, hears of its close where --limit-concurrency needs it."""
        config = self._config
        # Read on each upgrade: notify_close may have wrapped it.
        ws_class: type[Any] = config.ws_protocol_class  # type: ignore[assignment]
        extra: dict[str, Any] = {}
        if self._upgraded_close:
            ws_class, extra = _reporting_close(ws_class), {"on_close": guard.connection_lost}
        protocol: asyncio.Protocol = ws_class(config=config, server_state=self._state, app_state=app_state, **extra)
        return protocol

    # The server state the connections share (while serving).

    def set_default_headers(self, headers: Headers) -> None:
        """The headers every response gets (uvicorn's protocols read them from the server state)."""
        self._state.default_headers = headers

    @property
    def total_requests(self) -> int:
        return self._state.total_requests

    @property
    def connection_count(self) -> int:
        return len(self._state.connections)

    @property
    def in_flight(self) -> int:
        """Requests being served: uvicorn runs each request's cycle as one task."""
        return len(self._state.tasks)

    @property
    def busy(self) -> bool:
        """A connection is open or a request task still runs."""
        return bool(self._state.connections or self._state.tasks)

    def open_connections(self) -> list[OpenConnection]:
        return [OpenConnection(protocol) for protocol in list(self._state.connections)]


def _released(data: bytes) -> None:
    """``HttpConnection.parse`` after the connection closed (no transport delivers data past its close)."""


def _connection_ended(guard: RequestGuard, conn: HttpConnection) -> None:
    """A connection upgraded to WebSocket closed: the guard hears of it, and its view lets go of the protocol."""
    guard.connection_lost()
    conn.release()


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:2] if part.isdigit())


def _tokens(value: bytes) -> list[bytes]:
    return [token.strip() for token in value.lower().split(b",")]


def _announcing_close(app: Any) -> Any:
    """``app``, its responses saying ``Connection: close`` when uvicorn closes the connection after them.

    ``shutdown()`` of a connection whose request is in flight makes uvicorn close it after the response
    (``cycle.keep_alive`` false). Since 0.53.0 uvicorn's httptools protocol then adds ``Connection: close`` to
    the response; its h11 protocol (0.54.0 included) and its httptools protocol before 0.53.0 (checked: 0.30.0,
    0.52.0) do not, and a keep-alive client reuses the connection as it closes and fails. This adds the header
    as 0.53.0 does: only where no ``Connection`` header of the response says close already.
    """

    async def announcing(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        cycle = getattr(send, "__self__", None)  # uvicorn passes its RequestResponseCycle's bound send

        async def send_announcing(message: Any) -> None:
            if message["type"] == "http.response.start" and cycle is not None and not cycle.keep_alive:
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"connection" and b"close" in _tokens(value) for name, value in headers):
                    message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await app(scope, receive, send_announcing)

    return announcing


def _counting(base: type[Any], on_close: Callable[[], None]) -> type[Any]:
    class Counting(base):  # type: ignore[misc, valid-type]
        def connection_lost(self, exc: Exception | None) -> None:
            super().connection_lost(exc)
            on_close()

    return Counting


_REPORTING_CLOSE: dict[type[Any], type[Any]] = {}


def _reporting_close(base: type[Any]) -> type[Any]:
    """``base`` (a WebSocket protocol class) calling ``on_close`` after its ``connection_lost``; made once per
    class (every upgrade asks)."""
    made = _REPORTING_CLOSE.get(base)
    if made is None:
        made = _REPORTING_CLOSE[base] = _make_reporting_close(base)
    return made


def _make_reporting_close(base: type[Any]) -> type[Any]:
    class ReportingClose(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, on_close: Callable[[], None], **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._on_close = on_close

        def connection_lost(self, exc: Exception | None) -> None:
            super().connection_lost(exc)
            self._on_close()

    return ReportingClose


def _guarded(base: type[Any], make_guard: Callable[[ConnectionView], RequestGuard], upgraded_close: bool
             ) -> type[Any]:
    """``base`` calling a guard around uvicorn's transport-side methods (both parsers)."""

    class Guarded(base):  # type: ignore[misc, valid-type]
        _guard: RequestGuard
        _view: HttpConnection
        logger: Any  # uvicorn's, set in its __init__
        ws_protocol_class: Any  # uvicorn's, set in its __init__ from the config

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            # The guard is set up here rather than in __init__: one call layer less per connection (uvicorn
            # builds the protocol with keywords that an __init__ of ours would have to pass on).
            self._init_guard()
            super().connection_made(transport)
            self._guard.connection_made()

        def _init_guard(self) -> None:
            self._view = view = HttpConnection(self, super().data_received)
            self._guard = guard = make_guard(view)
            self.logger = _QuietLogger(self.logger, guard)
            # On an upgrade uvicorn hands the transport to a new WebSocket protocol (built from this attribute,
            # read in its __init__) and this one never hears of the connection again: the guard then learns of
            # its close from the WebSocket protocol. Built only where the guard needs it: one object less per
            # connection otherwise.
            if upgraded_close and self.ws_protocol_class is not None:
                ws_class: Callable[..., Any] = _reporting_close(self.ws_protocol_class)
                on_close = functools.partial(_connection_ended, guard, view)
                self.ws_protocol_class = functools.partial(ws_class, on_close=on_close)

        def connection_lost(self, exc: Exception | None) -> None:
            self._guard.connection_lost()
            super().connection_lost(exc)
            self._view.release()

        def data_received(self, data: bytes) -> None:
            self._guard.data_received(data)

        def send_400_response(self, msg: str) -> None:
            if not self._guard.bad_request():
                super().send_400_response(msg)

    return Guarded


class _Http10Writer:
    """A request cycle's transport that says ``HTTP/1.0`` in the response's status line (and a 100 Continue's)."""

    __slots__ = ("_pending", "_transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._pending = True  # the final status line is not written yet

    def write(self, data: bytes) -> None:
        if self._pending and data.startswith(b"HTTP/1.1 "):
            self._pending = data[9:10] == b"1"  # an interim answer: the final one follows
            data = b"HTTP/1.0 " + data[9:]
        self._transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _JoinedWriter:
    """A request cycle's transport that sends the response head with the first write after it: one system call
    for the usual answer, where uvicorn writes the head and the body apart (two sends, each of which wakes the
    client). A head whose body does not follow in the same turn of the loop (a streamed answer, an interim
    100 Continue) goes out at the end of that turn on its own."""

    __slots__ = ("_fresh", "_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._fresh = True  # nothing written yet: the first write (the head) is held
        self._held: bytes | None = None

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.writelines((held, data))  # one writev: a large body is not copied to be joined
        elif self._fresh:
            self._fresh = False
            self._held = data
            self._loop.call_soon(self._flush)
        else:
            self._transport.write(data)

    def _flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():  # the client left meanwhile: nothing to tell it
                self._transport.write(held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _MethodStandIn:
    """What the guarded httptools protocol keeps of a request besides uvicorn's: the method the parser was given a
    stand-in for (HttpConnection.reparse), the trailer fields."""

    parser: Any
    stand_in_for: bytes | None = None  # a class default: no cost per connection
    trailing: Headers | None = None  # the trailer fields of the request being parsed


def _guarded_httptools(base: type[Any], make_guard: Callable[[ConnectionView], RequestGuard], upgraded_close: bool
                       ) -> type[Any]:
    class GuardedHttptools(_guarded(base, make_guard, upgraded_close), _MethodStandIn):  # type: ignore[misc]
        headers: Headers  # uvicorn's: the request's header fields (the scope's list, until the head is parsed)
        scope: Any
        # httptools calls these by the names it finds on the protocol when uvicorn builds the parser; an
        # exception raised in one makes the parser fail (HttpParserCallbackError, an HttpParserError).
        def on_headers_complete(self) -> None:
            parser = self.parser
            method = self.stand_in_for or parser.get_method()
            version = parser.get_http_version()
            self._guard.head_parsed(method, self.url, version, self.headers)
            super().on_headers_complete()
            if self.stand_in_for is not None:  # the parser saw a stand-in for this request's method
                self.scope["method"] = method.decode("ascii")
                self.stand_in_for = None
            # uvicorn's on_header goes on appending to this list, the scope's, when a chunked body's trailer
            # fields come: a trailer would reach the app (and the proxy headers: a trailer X-Forwarded-For).
            # Trailers go to a list of their own; the scope keeps the head's fields. An upgrade keeps the list:
            # uvicorn reads it again to decide (and a request that upgrades has no trailers).
            if parser.should_upgrade():
                self.trailing = None
            else:
                self.headers = self.trailing = []
                cycle = self.cycle
                cycle.transport = _JoinedWriter(cycle.transport, self.loop)
                if version == "1.0":  # uvicorn answers "HTTP/1.1" to every request; gunicorn answers in kind
                    cycle.transport = _Http10Writer(cycle.transport)

        def on_body(self, body: bytes) -> None:
            self._guard.body_received(len(body))
            super().on_body(body)

        def on_message_complete(self) -> None:
            if self.trailing:
                self._guard.trailers_received(self.trailing)
            super().on_message_complete()
            self._guard.message_completed()

    return GuardedHttptools


def _guarded_h11(
    base: type[Any], make_guard: Callable[[ConnectionView], RequestGuard], head_limit: int, upgraded_close: bool
) -> type[Any]:
    class GuardedConnection(h11.Connection):
        """h11's connection, showing the guard each request event before uvicorn acts on it."""

        def __init__(self, guard: RequestGuard, max_incomplete_event_size: int) -> None:
            super().__init__(h11.SERVER, max_incomplete_event_size=max_incomplete_event_size)
            self._guard = guard

        def _send_http10(self, event: Any) -> bytes | None:
            """h11's send, saying ``HTTP/1.0`` in a response's status line (h11 says 1.1 to every request)."""
            data: bytes | None = h11.Connection.send(self, event)
            if data and isinstance(event, (h11.Response, h11.InformationalResponse)):
                data = b"HTTP/1.0" + data[8:]
            return data

        def next_event(self) -> Any:
            event = super().next_event()
            try:
                if isinstance(event, h11.Data):
                    self._guard.body_received(len(event.data))
                elif isinstance(event, h11.Request):
                    self._guard.head_parsed(event.method, event.target, event.http_version.decode(),
                                            list(event.headers))
                    if 35 in event.target:  # 35: "#". A fragment is the client's (RFC 9112 3.2): uvicorn's h11
                        # protocol would leave it in the scope's query string (httptools' URL parser drops it).
                        event = h11.Request(method=event.method, target=event.target.partition(b"#")[0],
                                            headers=event.headers.raw_items(), http_version=event.http_version)
                    # This request's answer says HTTP/1.0 if it did (an instance attribute over h11's send).
                    if event.http_version == b"1.0":
                        vars(self)["send"] = self._send_http10
                    else:
                        vars(self).pop("send", None)
                elif isinstance(event, h11.EndOfMessage):
                    if event.headers:  # trailers: uvicorn drops them
                        self._guard.trailers_received(list(event.headers))
                    self._guard.message_completed()
            except RequestRefused as exc:
                raise h11.RemoteProtocolError(str(exc)) from exc  # uvicorn then calls send_400_response
            return event

    class GuardedH11(_guarded(base, make_guard, upgraded_close)):  # type: ignore[misc]
        def _init_guard(self) -> None:
            super()._init_guard()
            # The guard bounds a head as its bytes arrive; h11's own bound (on a buffer with no complete
            # event) is a backstop just above it, so that both parsers answer alike.
            self.conn = GuardedConnection(self._guard, head_limit + 4096)

    return GuardedH11
