"""clusterrun's own HTTP/1.1 protocol for ASGI apps: httptools parsing on an asyncio (or uvloop) loop.

The default for ASGI (``--http auto`` or ``httptools``); ``--http uvicorn`` keeps uvicorn's protocol classes
(adapters.stack.seam). Written here rather than taken from uvicorn because a request on uvicorn's protocol pays
for what this one does not (measured in bench/, issue 25):

* the scope is copied from a template built once per connection, not rebuilt key by key;
* a request's ``receive`` waits on a future made only when it must wait, not on an ``asyncio.Event`` per
  request, and a request whose body is already complete never waits;
* the response head is held until the first body write and both go out in one ``writelines`` (one system
  call), or at the end of the loop turn for a streamed answer;
* the guard (adapters.stack.guard) sees this object itself as its connection: no view, no wrapper subclass,
  no logger proxy per connection.

What it keeps, as uvicorn's httptools protocol does: keep-alive and pipelining (answers in order, reading
paused while a request waits its turn), request bodies streamed to ``receive`` with reading paused past
64 KiB, responses streamed with the app's ``send`` waiting while the transport's buffer is full, Expect:
100-continue, HTTP/1.0 (answered as 1.0, closed after), ``Connection: close`` announced when the connection
closes after the answer (a drain), the 500 for an app that fails before answering, and the WebSocket
upgrade, handed to uvicorn's WebSocket protocol through the ``upgrade`` callable the seam gives.

Imports asyncio, httptools, adapters.limits (the plain-text refusal both engines send) and stack.flow (the write
flow control http2 shares) only: what it needs of uvicorn (the WebSocket protocol, the server state) and of
HTTP/2 comes in through ``Shared``.
"""

from __future__ import annotations

import asyncio
import http
import logging
import os
import re
from collections import deque
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import unquote

import httptools
from clusterrun.adapters.limits import header_lines, plain_answer
from clusterrun.adapters.stack.flow import WriteFlow

__all__ = ["H1Protocol", "Shared", "set_target"]

logger = logging.getLogger("clusterrun")

Headers = list[tuple[bytes, bytes]]

# Reading pauses while this many bytes of a request body wait for the app's receive() (uvicorn's figure).
_HIGH_WATER = 65536
# Bytes parsed at a time from one read. A read can hold thousands of pipelined requests; once one of them waits
# its turn, the rest of the read is held unparsed, so a client that pipelines without reading the answers costs
# what it sent, not a scope and a request cycle for each request in it.
_PARSE_SLICE = 8192
# A header name is a token (RFC 9110 5.6.2); a value may hold no control character but HTAB (RFC 9110 5.5).
_BAD_NAME = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9A-Za-z]")
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")


def _status_lines(version: bytes) -> dict[int, bytes]:
    lines = {}
    for status in range(100, 600):
        try:
            phrase = http.HTTPStatus(status).phrase.encode()
        except ValueError:
            phrase = b""
        lines[status] = b"HTTP/%s %d %s\r\n" % (version, status, phrase)
    return lines


_STATUS = {"1.1": _status_lines(b"1.1"), "1.0": _status_lines(b"1.0")}
_INTERNAL_ERROR = {"type": "http.response.start", "status": 500, "headers": [
    (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"21"), (b"connection", b"close")]}
_ZEROCOPY: dict[str, Any] = {"http.response.zerocopysend": {}}
_INTERNAL_ERROR_BODY = {"type": "http.response.body", "body": b"Internal Server Error", "more_body": False}
_DISCONNECT = {"type": "http.disconnect"}


def set_target(scope: dict[str, Any], raw_path: bytes, query: bytes) -> None:
    """The scope's ``path``, ``raw_path`` and ``query_string`` from a request target's path and query, under the
    scope's root_path: one way for HTTP/1.1 and HTTP/2 (adapters.stack.http2). The path is percent-decoded; a raw byte
    outside ASCII becomes U+FFFD (HTTP/2 lets one through to here) rather than fail the request."""
    path = raw_path.decode("ascii", "replace")
    if "%" in path:
        path = unquote(path)
    root_path = scope["root_path"]
    if root_path:
        path = root_path + path
        raw_path = root_path.encode("ascii") + raw_path
    scope["path"] = path
    scope["raw_path"] = raw_path
    scope["query_string"] = query


class Shared:
    """What a worker's connections share: the app, the server state (uvicorn's ``ServerState``: connections, tasks,
    default headers, total requests), and the hooks the seam plugs in before serving."""

    def __init__(self, app: Any, state: Any, app_state: dict[str, Any], loop: asyncio.AbstractEventLoop, *,
                 root_path: str, timeout_keep_alive: float, make_guard: Callable[[H1Protocol], Any],
                 on_close: list[Callable[[], None]], upgrade: Callable[[Any], asyncio.Protocol] | None,
                 body_timeout: float | None = None, send_timeout: float | None = None,
                 h2: Callable[[], asyncio.Protocol] | None = None) -> None:
        self.app = app
        self.state = state
        self.app_state = app_state
        self.loop = loop
        self.root_path = root_path
        self.timeout_keep_alive = timeout_keep_alive
        self.make_guard = make_guard
        self.on_close = on_close  # the seam's list, read at each close: a drain adds to it while serving
        # Builds the WebSocket protocol that takes over an upgraded connection, given the connection's guard (the
        # seam's: uvicorn's class); None where no WebSocket library is installed.
        self.upgrade = upgrade
        # --body-timeout, as the inline engine applies it: the seconds a request body still arriving may send
        # nothing while the app waits for it (None where the app's input keeps its own clock: the --threads
        # bridge), and the seconds a client may take nothing of a response while the app waits to send more.
        self.body_timeout = body_timeout
        self.send_timeout = send_timeout
        # The ASGI zero-copy extension (http.response.zerocopysend), offered where loop.sendfile sends from the
        # kernel: asyncio's own loops do, uvloop's raises NotImplementedError (and it is no BaseEventLoop).
        self.zerocopy = isinstance(loop, asyncio.BaseEventLoop)
        # Builds the HTTP/2 protocol (adapters.stack.http2) that takes over a connection; None
        # where h2 is not installed. Offered by ALPN on TLS, taken on the preface in cleartext (h2c).
        self.h2 = h2


class H1Protocol(WriteFlow, asyncio.Protocol):
    """One HTTP/1.1 connection serving an ASGI app; also the guard's view of it (adapters.stack.guard)."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.loop = shared.loop
        self.app = shared.app  # read for each request: a drain wraps it (seam.OpenConnection.wrap_app)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.client: tuple[str, int] | None = None
        self.cycle: _Cycle | None = None  # the newest request's
        self.parser: Any = None
        self.stand_in_for: bytes | None = None  # the method a parser stand-in replaced (guard: methods)
        self._guard: Any = None
        self._template: dict[str, Any] = {}
        self._pipeline: deque[_Cycle] = deque()
        self._held: list[bytes] = []  # bytes read behind a request that waits its turn, parsed once it runs
        # The keep-alive clock: one timer per connection at most, not one per request. A response's end stamps
        # ``_idle_since``; the next request's bytes clear it; the timer, when it fires, closes the connection if
        # it has been idle for the whole timeout and otherwise sets itself again for what is left.
        self._keep_alive_timer: asyncio.TimerHandle | None = None
        self._idle_since: float | None = None
        self._init_flow()
        self._send_timer: asyncio.TimerHandle | None = None
        self._reading_paused = False
        self._upgrading = False
        self._h2c = False  # the request being parsed asks for Upgrade: h2c, and can have it
        self._successor: asyncio.Protocol | None = None  # the HTTP/2 protocol this connection was handed to
        # The request being parsed.
        self._url = b""
        self._headers: Headers = []
        self._trailing: Headers | None = None
        self._expect_100 = False

    # asyncio's protocol.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # An asyncio.Transport in effect (uvloop's transports do not subclass it: no isinstance check).
        transport = cast(asyncio.Transport, transport)
        shared = self.shared
        shared.state.connections.add(self)
        self.transport = transport
        self.client = _address(transport.get_extra_info("peername"))
        scheme = "https" if transport.get_extra_info("sslcontext") is not None else "http"
        if scheme == "https" and shared.h2 is not None:  # decided once per connection: ALPN chose h2, or not
            ssl_object = transport.get_extra_info("ssl_object")
            if ssl_object is not None and ssl_object.selected_alpn_protocol() == "h2":
                shared.state.connections.discard(self)
                self._to_h2(b"")
                return
        self._template = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
                          "http_version": "1.1", "server": _address(transport.get_extra_info("sockname")),
                          "client": self.client, "scheme": scheme, "root_path": shared.root_path}
        if shared.zerocopy and scheme == "http":  # through TLS the bytes must pass the encryption: no sendfile
            self._template["extensions"] = _ZEROCOPY
        self.parser = self._new_parser()
        self._guard = guard = shared.make_guard(self)
        guard.connection_made()

    def _new_parser(self) -> Any:
        parser = httptools.HttpRequestParser(self)
        # Answer a request followed by bytes after its Connection: close (httptools 0.6.3 on).
        if hasattr(parser, "set_dangerous_leniencies"):
            parser.set_dangerous_leniencies(lenient_data_after_close=True)
        return parser

    def connection_lost(self, exc: Exception | None) -> None:
        guard = self._guard
        if guard is not None:
            guard.connection_lost()
        self.shared.state.connections.discard(self)
        cycle = self.cycle
        if cycle is not None:
            if not cycle.response_complete:
                cycle.disconnected = True
            cycle.wake()
        self._release_writers()
        self._cancel_keep_alive()
        if exc is None:
            self.transport.close()
        for on_close in self.shared.on_close:
            on_close()
        self._forget()

    def _forget(self) -> None:
        """Let go of what points back here (parser, guard, cycles): the connection is freed by reference counting,
        not left to the cycle collector (tests/adapters/test_e2e_garbage.py)."""
        self.parser = None
        self._guard = None
        self.cycle = None
        self._pipeline.clear()
        self._held.clear()

    def eof_received(self) -> None:
        """The client shut its side: answer what it sent, then the transport closes (False: the default)."""

    def data_received(self, data: bytes) -> None:
        self._idle_since = None
        if self._pipeline or self._held:  # a request waits its turn: these came with the read that paused
            self._held.append(data)
        elif len(data) <= _PARSE_SLICE:
            self._guard.data_received(data)
        else:
            self._feed(data)

    def _feed(self, data: bytes) -> None:
        """Parse ``data`` a slice at a time, holding what is left once a request has to wait its turn."""
        end = len(data)
        for start in range(0, end, _PARSE_SLICE):
            guard = self._guard
            if guard is None:  # closed, or handed over to a WebSocket protocol
                return
            guard.data_received(data[start:start + _PARSE_SLICE])
            successor = self._successor
            if successor is not None:  # handed over to HTTP/2 within this slice: the rest of the read is its
                if start + _PARSE_SLICE < end:
                    successor.data_received(data[start + _PARSE_SLICE:])
                return
            if self._pipeline and start + _PARSE_SLICE < end:
                self._held.append(data[start + _PARSE_SLICE:])
                self._pause_reading()
                return

    async def drain(self) -> None:
        """Wait until the transport's buffer drains below its low-water mark (or the connection is lost).

        A client that takes nothing of the response for --body-timeout is cut off (the app's later sends are
        dropped), as the inline engine does: otherwise a client that never reads holds the request forever."""
        waiter = self._writer()
        timeout = self.shared.send_timeout
        if not timeout:
            await waiter
            return
        self._send_timer = self.loop.call_later(timeout, self._send_stalled, timeout,
                                                self.transport.get_write_buffer_size())
        try:
            await waiter
        finally:
            if self._send_timer is not None:
                self._send_timer.cancel()
                self._send_timer = None

    def _send_stalled(self, timeout: float, size_then: int) -> None:
        self._send_timer = None
        transport = self.transport
        if transport.is_closing() or not self._write_paused:
            return
        size = transport.get_write_buffer_size()
        if size < size_then:  # the client took some: it gets another full timeout
            self._send_timer = self.loop.call_later(timeout, self._send_stalled, timeout, size)
            return
        client = self.client
        logger.warning("closed the connection%s: the client took nothing of the response for %g s (--body-timeout)",
                       f" from {client[0]}:{client[1]}" if client else "", timeout)
        transport.abort()  # close() would wait for the buffer to be sent, which this client never reads

    # The guard's view of the connection (adapters.stack.guard; the seam's ConnectionView).

    def parse(self, data: bytes) -> None:
        """Feed ``data`` to the parser; a request it rejects is answered 400 (by the guard, if it takes it)."""
        parser = self.parser
        if parser is None:
            return
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            if self._h2c:
                self._to_h2c(data[exc.args[0]:] if exc.args else b"")
            elif self._upgrading:
                self._hand_over()
            else:
                logger.warning("unsupported upgrade request: answered as plain HTTP/1.1")
        except httptools.HttpParserError:
            if self.shared.h2 is not None and self.cycle is None and parser.get_method() == b"PRI":
                self._to_h2(_after_preface_head(data))  # h2c with prior knowledge: the connection's first bytes
                return
            if not self._guard.refusing():
                logger.warning("Invalid HTTP request received.")
            self.send_400_response("Invalid HTTP request received.")

    @property
    def default_headers(self) -> Headers:
        return self.shared.state.default_headers  # type: ignore[no-any-return]

    @property
    def running_requests(self) -> int:
        return len(self.shared.state.tasks)

    @property
    def has_request(self) -> bool:
        return self.cycle is not None

    @property
    def in_flight(self) -> bool:
        cycle = self.cycle
        return cycle is not None and not cycle.response_complete

    @property
    def response_started(self) -> bool:
        cycle = self.cycle
        return cycle is not None and cycle.response_started

    def reparse(self, data: bytes, method: bytes) -> bool:
        """Parse ``data`` again with a new parser, the request's method being ``method`` (adapters.methods)."""
        self.parser = self._new_parser()
        self.stand_in_for = method
        self.parse(data)
        return True

    def after_responses(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once every request parsed so far is answered (at once if none is in flight)."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            callback()
            return
        cycle.after.append(callback)

    def disconnect_app(self) -> None:
        """The app's request sees the client gone: ``receive()`` says disconnect, its sends are dropped."""
        cycle = self.cycle
        if cycle is not None:
            cycle.disconnected = True
            cycle.wake()

    def body_stalled(self, cycle: _Cycle, timeout: float) -> None:
        """``cycle``'s body sent nothing for ``timeout`` seconds while its app waited: the guard answers 408 (or
        closes, once the response began), and the app sees a disconnect."""
        guard = self._guard
        if guard is not None and cycle is self.cycle and not cycle.response_complete:
            guard.body_stalled(timeout)

    def send_400_response(self, msg: str) -> None:
        if self._guard.bad_request():
            return
        self.transport.write(plain_answer(400, msg.encode("ascii"), header_lines(self.default_headers)))
        self.transport.close()

    # The drain (seam.OpenConnection).

    def shutdown(self) -> None:
        """Close now if idle, else after the response in flight (which then says Connection: close)."""
        cycle = self.cycle
        if cycle is None or cycle.response_complete:
            self.transport.close()
        else:
            cycle.keep_alive = False
            for waiting in self._pipeline:
                waiting.keep_alive = False

    # httptools' callbacks (found by name when the parser is built); an exception in one fails the parse.

    def on_message_begin(self) -> None:
        self._url = b""
        self._headers = []
        self._expect_100 = False

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self._expect_100 = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self.parser
        method = self.stand_in_for or parser.get_method()
        version = parser.get_http_version()
        headers = self._headers
        self._guard.head_parsed(method, self._url, version, headers)
        self.stand_in_for = None
        if parser.should_upgrade():
            protocol = _upgrade(headers)
            if protocol == b"websocket" and self.shared.upgrade is not None:
                self._upgrading = True  # feed_data raises HttpParserUpgrade next: _hand_over
                self._trailing = None
                return
            if protocol == b"h2c" and self.shared.h2 is not None and _h2c_ready(headers):
                self._upgrading = self._h2c = True  # feed_data raises HttpParserUpgrade at its end: _to_h2c
                self._trailing = None
                return
        # Trailer fields (a chunked body's end) go to a list of their own: they never reach the scope.
        self._headers = self._trailing = []
        url = self._url
        if url[:1] == b"/" and b"#" not in url:  # origin-form, the usual: no URL parser needed
            raw_path, _, query = url.partition(b"?")
        else:
            # Any: httptools' stub says bytes for parts that are None when absent ("*", an authority), and the
            # compiled build (setup.py) checks annotations at run time.
            parsed: Any = httptools.parse_url(url)
            raw_path, query = parsed.path or b"/", parsed.query or b""
        scope = self._template.copy()
        set_target(scope, raw_path, query)
        scope["method"] = method.decode("ascii")
        if version != "1.1":
            scope["http_version"] = version
        scope["headers"] = headers
        scope["state"] = self.shared.app_state.copy()
        keep_alive = version != "1.0" and parser.should_keep_alive()
        cycle = _Cycle(self, scope, keep_alive, version, self._expect_100)
        previous = self.cycle
        self.cycle = cycle
        if previous is None or previous.response_complete:
            self._run(cycle)
        else:  # pipelined: answered once the ones before it are (responses go out in order)
            self._pipeline.append(cycle)
            self._pause_reading()

    def on_body(self, body: bytes) -> None:
        self._guard.body_received(len(body))
        cycle = self.cycle
        if self._upgrading or cycle is None or cycle.response_complete:
            return
        cycle.body += body
        if len(cycle.body) > _HIGH_WATER:
            self._pause_reading()
        cycle.wake()

    def on_message_complete(self) -> None:
        trailing = self._trailing
        if trailing:
            self._guard.trailers_received(trailing)
        cycle = self.cycle
        if not self._upgrading and cycle is not None and not cycle.response_complete:
            cycle.more_body = False
            cycle.wake()
        self._guard.message_completed()

    # Requests.

    def _run(self, cycle: _Cycle) -> None:
        tasks = self.shared.state.tasks
        task = self.loop.create_task(cycle.run(self.app))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    def response_done(self, cycle: _Cycle) -> None:
        """``cycle``'s response is complete: start the next pipelined request, or the keep-alive clock."""
        self.shared.state.total_requests += 1
        if not self.transport.is_closing():
            if self._pipeline:
                self._run(self._pipeline.popleft())
            if not self._pipeline and self._held:  # what was read behind it: the running request's body, or more
                held = b"".join(self._held)
                self._held.clear()
                self._feed(held)
            if not (self._pipeline or self._held):
                self._resume_reading()
                if self.cycle is cycle:  # nothing after it: the keep-alive clock runs
                    self._idle_since = now = self.loop.time()
                    if self._keep_alive_timer is None:
                        self._keep_alive_timer = self.loop.call_at(now + self.shared.timeout_keep_alive,
                                                                   self._idle_too_long)
        if cycle.after:  # the guard's refusal of a request pipelined behind this one
            after, cycle.after = cycle.after, []
            for callback in after:
                callback()

    def _idle_too_long(self) -> None:
        self._keep_alive_timer = None
        since = self._idle_since
        if since is None:  # a request came meanwhile: its response's end sets the clock again
            return
        due = since + self.shared.timeout_keep_alive
        if self.loop.time() >= due:
            self.transport.close()
        else:
            self._keep_alive_timer = self.loop.call_at(due, self._idle_too_long)

    def _cancel_keep_alive(self) -> None:
        timer = self._keep_alive_timer
        if timer is not None:
            self._keep_alive_timer = None
            timer.cancel()

    def _pause_reading(self) -> None:
        if not self._reading_paused:
            self._reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        """Read again, unless a request waits its turn: reading stays paused until every request parsed so far
        has run (response_done)."""
        if self._reading_paused and not (self._pipeline or self._held):
            self._reading_paused = False
            self.transport.resume_reading()

    def _to_h2(self, data: bytes) -> None:
        """Give the connection to the HTTP/2 protocol, with the bytes read for it so far."""
        make = self.shared.h2
        assert make is not None
        self.shared.state.connections.discard(self)
        guard = self._guard
        if guard is not None:  # its head clock and --limit-concurrency are HTTP/1.1's; HTTP/2 has its own limits
            guard.connection_lost()
        protocol = self._successor = make()
        transport = self.transport
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if data:
            protocol.data_received(data)
        self._forget()

    def _to_h2c(self, rest: bytes) -> None:
        """Answer the ``Upgrade: h2c`` request 101, then in HTTP/2 on stream 1 (RFC 7540 3.2)."""
        make = self.shared.h2
        assert make is not None
        self.shared.state.connections.discard(self)
        guard = self._guard
        if guard is not None:
            guard.connection_lost()
        headers = self._headers
        settings = next(value for name, value in headers if name == b"http2-settings")
        kept = [(name, value) for name, value in headers if name not in (b"connection", b"upgrade", b"http2-settings")]
        method = self.stand_in_for or self.parser.get_method()
        protocol: Any = make()
        self._successor = protocol
        transport = self.transport
        transport.set_protocol(protocol)
        protocol.upgraded(transport, settings, method, self._url, kept)
        if rest:
            protocol.data_received(rest)
        self._forget()

    def _hand_over(self) -> None:
        """Give the connection to a WebSocket protocol: it reads the request head again, rebuilt from the parse."""
        upgrade = self.shared.upgrade
        assert upgrade is not None
        self.shared.state.connections.discard(self)
        head = [self.stand_in_for or self.parser.get_method(), b" ", self._url, b" HTTP/1.1\r\n"]
        for name, value in self._headers:
            head += [name, b": ", value, b"\r\n"]
        head.append(b"\r\n")
        protocol = upgrade(self._guard)
        transport = self.transport
        protocol.connection_made(transport)
        protocol.data_received(b"".join(head))
        transport.set_protocol(protocol)
        self._forget()


_PREFACE_HEAD = b"PRI * HTTP/2.0\r\n\r\n"  # what httptools parses as a request before it stops


def _after_preface_head(data: bytes) -> bytes:
    """The HTTP/2 preface and what follows it, from the read on which httptools stopped at the preface's head (the
    head may have begun in an earlier read: rebuilt from the part of it this read holds)."""
    found = data.find(_PREFACE_HEAD)
    if found >= 0:
        return data[found:]
    for start in range(1, len(_PREFACE_HEAD)):
        if data.startswith(_PREFACE_HEAD[start:]):
            return _PREFACE_HEAD + data[len(_PREFACE_HEAD) - start:]
    return _PREFACE_HEAD + data


def _address(info: Any) -> Any:
    """A (host, port) from a transport's peername or sockname; None for a Unix socket's."""
    if isinstance(info, (list, tuple)) and len(info) >= 2:
        return (str(info[0]), int(info[1]))
    return None


def _h2c_ready(headers: Headers) -> bool:
    """An ``Upgrade: h2c`` request that can be taken: HTTP2-Settings given, and no body (a body would have to be read
    in HTTP/1.1 first; such a request is answered in HTTP/1.1, which RFC 7540 3.2 allows)."""
    settings = length = False
    for name, value in headers:
        if name == b"http2-settings":
            settings = True
        elif name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
            length = True
    return settings and not length


def _upgrade(headers: Headers) -> bytes | None:
    """The protocol a request asks to upgrade to (its Upgrade field, if Connection names upgrade)."""
    connection: list[bytes] = []
    upgrade = None
    for name, value in headers:
        if name == b"connection":
            connection = [token.strip().lower() for token in value.split(b",")]
        elif name == b"upgrade":
            upgrade = value.lower()
    return upgrade if b"upgrade" in connection else None


class _Cycle:
    """One request and its response: the ASGI ``receive`` and ``send`` of the app's call."""

    __slots__ = (
        "after",
        "body",
        "chunked",
        "conn",
        "disconnected",
        "expect_100",
        "head_only",
        "held",
        "keep_alive",
        "lines",
        "more_body",
        "pending",
        "remaining",
        "response_complete",
        "response_started",
        "scope",
        "waiter",
    )

    def __init__(self, conn: H1Protocol, scope: dict[str, Any], keep_alive: bool, version: str,
                 expect_100: bool) -> None:
        self.conn = conn
        self.scope = scope
        self.keep_alive = keep_alive
        self.lines = _STATUS.get(version) or _STATUS["1.1"]  # status lines in the request's version
        self.expect_100 = expect_100
        self.body = bytearray()
        self.more_body = True
        self.pending = False  # body bytes or the body's end arrived since the last receive()
        self.waiter: asyncio.Future[None] | None = None
        self.disconnected = False
        self.response_started = False
        self.response_complete = False
        self.chunked = False
        self.head_only = scope["method"] == "HEAD"
        self.remaining = 0  # Content-Length bytes still owed
        self.held: bytes | None = None  # the response head, until the first body write joins it
        self.after: list[Callable[[], None]] = []

    def wake(self) -> None:
        self.pending = True
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def run(self, app: Any) -> None:
        try:
            result = await app(self.scope, self.receive, self.send)
        except BaseException as exc:
            logger.error("Exception in ASGI application", exc_info=exc)
            if not self.response_started:
                await self._internal_error()
            else:
                self._abort()
        else:
            if result is not None:
                logger.error("the ASGI app returned %r instead of None", result)
                self._abort()
            elif not self.response_started and not self.disconnected:
                logger.error("the ASGI app returned without starting a response")
                await self._internal_error()
            elif not self.response_complete and not self.disconnected:
                logger.error("the ASGI app returned without completing its response")
                self._abort()

    async def _internal_error(self) -> None:
        self.keep_alive = False
        await self.send(_INTERNAL_ERROR)
        await self.send(_INTERNAL_ERROR_BODY)

    def _abort(self) -> None:
        self.flush()
        self.conn.transport.close()

    async def receive(self) -> dict[str, Any]:
        conn = self.conn
        if self.expect_100:
            self.expect_100 = False
            if not conn.transport.is_closing():
                conn.transport.write(self.lines[100] + b"\r\n")
        if not (self.pending or self.disconnected or self.response_complete):
            conn._resume_reading()
            self.waiter = waiter = conn.loop.create_future()
            timeout = conn.shared.body_timeout
            if timeout and self.more_body:  # waiting for the body's bytes, not for a disconnect after it
                timer = conn.loop.call_later(timeout, conn.body_stalled, self, timeout)
                try:
                    await waiter
                finally:
                    timer.cancel()
            else:
                await waiter
        if self.disconnected or self.response_complete:
            return _DISCONNECT
        self.pending = False
        body = bytes(self.body)
        self.body.clear()
        return {"type": "http.request", "body": body, "more_body": self.more_body}

    async def send(self, message: dict[str, Any]) -> None:
        conn = self.conn
        if conn._write_paused and not self.disconnected:
            await conn.drain()
        if self.disconnected:
            return
        kind = message["type"]
        if not self.response_started:
            if kind != "http.response.start":
                raise RuntimeError(f"expected ASGI message 'http.response.start', got {kind!r}")
            self._start(message["status"], message.get("headers", ()))
        elif not self.response_complete:
            if kind == "http.response.zerocopysend" and "extensions" in self.scope:
                await self._send_file(message)
                return
            if kind != "http.response.body":
                raise RuntimeError(f"expected ASGI message 'http.response.body', got {kind!r}")
            self._body(message.get("body", b""), message.get("more_body", False))
        else:
            raise RuntimeError(f"ASGI message {kind!r} sent after the response was complete")

    def _start(self, status: int, headers: Any) -> None:
        self.response_started = True
        self.expect_100 = False
        head = [self.lines[status]]
        for name, value in self.conn.default_headers:
            head += [name, b": ", value, b"\r\n"]
        length: int | None = None
        closing = False
        for name, value in headers:
            if _BAD_NAME.search(name):
                raise RuntimeError(f"invalid HTTP header name {name!r}")
            if _BAD_VALUE.search(value):
                raise RuntimeError(f"invalid HTTP header value for {name!r}")
            name = name.lower()
            if name == b"content-length":
                if length is None:
                    length = int(value)
            elif name == b"transfer-encoding":
                if value.lower() == b"chunked" and length is None:
                    self.chunked = True
            elif name == b"connection" and b"close" in [t.strip().lower() for t in value.split(b",")]:
                self.keep_alive = False
                closing = True
            head += [name, b": ", value, b"\r\n"]
        if not self.keep_alive and not closing:
            head.append(b"connection: close\r\n")
        if length is not None and not self.chunked:
            self.remaining = length
        elif not (self.chunked or self.head_only or status in (204, 304)):
            self.chunked = True  # neither length nor chunked said: chunked, so that keep-alive stays framed
            head.append(b"transfer-encoding: chunked\r\n")
        head.append(b"\r\n")
        self.held = b"".join(head)
        self.conn.loop.call_soon(self.flush)  # a streamed answer's head goes out at the end of this loop turn

    def flush(self) -> None:
        held = self.held
        if held is not None:
            self.held = None
            transport = self.conn.transport
            if not transport.is_closing():
                transport.write(held)

    async def _send_file(self, message: dict[str, Any]) -> None:
        """http.response.zerocopysend: ``count`` bytes of ``file`` from ``offset`` with loop.sendfile (the kernel
        copies them), framed as the response's body; then the body's end as for http.response.body."""
        file = message["file"]
        offset = message.get("offset")
        offset = file.tell() if offset is None else offset
        count = message.get("count")
        if count is None:
            count = os.fstat(file.fileno()).st_size - offset
        if count and not self.head_only:
            if not self.chunked and count > self.remaining:
                raise RuntimeError("the response body is longer than its Content-Length")
            self.flush()
            transport = self.conn.transport
            if self.chunked:
                transport.write(b"%x\r\n" % count)
            try:
                await self.conn.loop.sendfile(transport, file, offset, count)
            except (OSError, RuntimeError):  # the client left (RuntimeError: asyncio's "transport is closing")
                if not transport.is_closing():
                    raise
                return
            if self.chunked:
                transport.write(b"\r\n")
            else:
                self.remaining -= count
        self._body(b"", message.get("more_body", False))

    def _body(self, body: bytes, more_body: bool) -> None:
        out: list[bytes] = []
        held = self.held
        if held is not None:
            self.held = None
            out.append(held)
        if self.head_only:
            pass
        elif self.chunked:
            if body:
                out += [b"%x\r\n" % len(body), body, b"\r\n"]
            if not more_body:
                out.append(b"0\r\n\r\n")
        elif body:
            if len(body) > self.remaining:
                raise RuntimeError("the response body is longer than its Content-Length")
            self.remaining -= len(body)
            out.append(body)
        transport = self.conn.transport
        if out:
            if len(out) == 1:
                transport.write(out[0])
            else:
                transport.writelines(out)  # one writev: a large body is not copied to be joined
        if not more_body:
            if self.remaining and not self.head_only:
                raise RuntimeError("the response body is shorter than its Content-Length")
            self.response_complete = True
            self.wake()
            if not self.keep_alive:
                transport.close()
            self.conn.response_done(self)
