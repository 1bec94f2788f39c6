"""HTTP/2 for ASGI apps (and WSGI apps with --threads N, through the bridge) on asyncio, on the ``h2`` library.

``h2`` (python-hyper) does the framing, HPACK, the stream state machine, SETTINGS and PING; this module maps
streams to ASGI request cycles and owns the rest:

* how a connection gets here: clusterrun's HTTP/1.1 protocol (adapters.stack.http1) decides once per connection,
  never per request: a TLS connection whose ALPN chose ``h2`` is handed over in ``connection_made``; a cleartext
  connection whose first bytes are the HTTP/2 preface (h2c with prior knowledge: httptools stops on the ``PRI``
  request) is handed over with those bytes; an ``Upgrade: h2c`` request is answered on stream 1 of the new
  connection. HTTP/1.1 connections pay one attribute test on TLS connections and nothing else;
* the scope: ``http_version`` "2", ``:method``, ``:scheme``, ``:path`` (split into path and query), and
  ``:authority`` as a ``host`` header when the request has none; the pseudo-headers never reach ``headers``;
* request bodies: DATA is acknowledged (WINDOW_UPDATE) as the app's ``receive()`` takes it, not as it arrives, so
  a client sends no more than its window ahead of the app;
* responses: DATA goes out no faster than the stream's and the connection's windows allow (``send`` waits for a
  WINDOW_UPDATE) and waits while the transport's buffer is full;
* limits: SETTINGS_MAX_CONCURRENT_STREAMS (--h2-max-concurrent-streams), SETTINGS_MAX_HEADER_LIST_SIZE from
  --limit-request-head (h2's HPACK decoder enforces it: a larger header list is a connection error), and
  --limit-request-fields (a request with more fields is answered 431, its stream alone);
* drain (a rolling restart, seam.OpenConnection.shutdown): a GOAWAY naming the last stream taken goes out at
  once; streams up to it finish; streams the client opens after it are refused (REFUSED_STREAM, safe to retry
  elsewhere); once none is left, a final GOAWAY and the close;
* --timeout-keep-alive: a connection with no stream for that long gets GOAWAY and closes;
* the rapid-reset guard (CVE-2023-44487): a client that resets more than ``_RESETS`` streams before their
  response completed within ``_RESET_WINDOW`` seconds gets GOAWAY ENHANCE_YOUR_CALM and the connection closes.

Imports asyncio, h2 (an optional dependency: clusterrun[http2]) and adapters.stack.http1 (the Shared state).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from clusterrun.adapters.stack.flow import WriteFlow
from clusterrun.adapters.stack.http1 import Shared
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame

__all__ = ["PREFACE", "H2Limits", "H2Protocol"]

logger = logging.getLogger("clusterrun")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# The rapid-reset guard: more client resets of unanswered streams than this within the window closes the
# connection. Far above what a browser cancelling navigations does, far below an attack's thousands a second.
_RESETS = 200
_RESET_WINDOW = 10.0
_STREAM_WINDOW = 65535  # SETTINGS_INITIAL_WINDOW_SIZE left at the default: a stream's receive window
_DISCONNECT = {"type": "http.disconnect"}
_INTERNAL_ERROR_HEADERS = [(b":status", b"500"), (b"content-type", b"text/plain; charset=utf-8"),
                           (b"content-length", b"21")]


@dataclass(frozen=True)
class H2Limits:
    """--h2-max-concurrent-streams, the header-list size from --limit-request-head (0: h2's default), and
    --limit-request-fields."""

    max_concurrent_streams: int = 100
    max_header_list_size: int = 0
    max_fields: int = 0  # --limit-request-fields: a request with more header fields is answered 431 (0: no limit)


class _Connection(h2.connection.H2Connection):
    """h2's connection, but a HEADERS frame past SETTINGS_MAX_CONCURRENT_STREAMS is taken (its header block decoded:
    HPACK's table stays in step) so that H2Protocol refuses that stream alone with REFUSED_STREAM, as RFC 9113
    5.1.2 asks: h2 would make it a connection error, ending the streams in flight with it."""

    @property
    def open_inbound_streams(self) -> int:
        h2.connection.H2Connection.open_inbound_streams.fget(self)  # type: ignore[attr-defined]  # it culls closed streams
        return 0


class H2Protocol(WriteFlow, asyncio.Protocol):
    """One HTTP/2 connection serving an ASGI app, taken over from the HTTP/1.1 protocol (see the module)."""

    def __init__(self, shared: Shared, limits: H2Limits) -> None:
        self.shared = shared
        self.loop = shared.loop
        self.app = shared.app  # read for each stream: a drain wraps it (seam.OpenConnection.wrap_app)
        self.limits = limits
        config = h2.config.H2Configuration(client_side=False, header_encoding=None)
        self.conn = _Connection(config=config)
        settings: dict[Any, int] = {h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams}
        if limits.max_header_list_size:
            settings[h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE] = limits.max_header_list_size
            # h2 gives its HPACK decoder the limit only when a change of it is acknowledged; this one is the
            # first SETTINGS the client reads, so it applies from the start.
            self.conn.decoder.max_header_list_size = limits.max_header_list_size
        self.conn.local_settings = h2.settings.Settings(client=False, initial_values=settings)
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.streams: dict[int, _Stream] = {}
        self._template: dict[str, Any] = {}
        self._init_flow()
        self._draining = False
        self._last_stream = 0  # the last stream taken, once draining: newer ones are refused
        self._resets: deque[float] = deque()
        self._closed = False
        # The keep-alive clock, as HTTP/1.1's: a connection with no stream for --timeout-keep-alive seconds gets
        # GOAWAY and closes. One timer per connection, set again for what is left when a stream came meanwhile.
        self._idle_since: float | None = None
        self._idle_timer: asyncio.TimerHandle | None = None

    # Taking over.

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        self.shared.state.connections.add(self)
        scheme = "https" if transport.get_extra_info("sslcontext") is not None else "http"
        self._template = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "2",
                          "server": _address(transport.get_extra_info("sockname")),
                          "client": _address(transport.get_extra_info("peername")), "scheme": scheme,
                          "root_path": self.shared.root_path}
        if self.conn.state_machine.state == h2.connection.ConnectionState.IDLE:  # not already (upgraded)
            self.conn.initiate_connection()
        # The connection's window, room for every stream's: a stream whose app does not read its body holds at
        # most its own window (64 KiB) unacknowledged, never the whole connection's, which would stall the others.
        self.conn.increment_flow_control_window(self.limits.max_concurrent_streams * _STREAM_WINDOW)
        self._flush()
        self._idle_since = now = self.loop.time()
        self._idle_timer = self.loop.call_at(now + self.shared.timeout_keep_alive, self._idle_too_long)

    def upgraded(self, transport: asyncio.BaseTransport, settings: bytes, method: bytes, target: bytes,
                 headers: list[tuple[bytes, bytes]]) -> None:
        """In place of connection_made: an ``Upgrade: h2c`` request (no body), answered 101 and then on stream 1."""
        self.conn.initiate_upgrade_connection(settings)  # the server's SETTINGS, and stream 1 half-closed (remote)
        cast(asyncio.Transport, transport).write(b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\n"
                                                 b"upgrade: h2c\r\n\r\n")
        self.connection_made(transport)
        stream = self._open(1, method, target, headers, b"http")
        stream.more_body = False

    def _idle_too_long(self) -> None:
        self._idle_timer = None
        if self._closed:
            return
        since = self._idle_since
        due = (since if since is not None else self.loop.time()) + self.shared.timeout_keep_alive
        if since is not None and self.loop.time() >= due:
            self.shutdown()  # no stream: GOAWAY and the close at once
            return
        self._idle_timer = self.loop.call_at(due, self._idle_too_long)

    # asyncio's protocol.

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            logger.info("HTTP/2 connection from %s closed: %s", self._template.get("client"), exc)
            self._flush()
            self.transport.close()
            return
        for event in events:
            self._event(event)
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.shared.state.connections.discard(self)
        timer, self._idle_timer = self._idle_timer, None
        if timer is not None:
            timer.cancel()
        for stream in self.streams.values():
            stream.gone()
        self.streams.clear()
        self._release_writers()
        for on_close in self.shared.on_close:
            on_close()

    async def writable(self) -> None:
        """Wait while the transport's buffer is full, or until a window may have opened (WINDOW_UPDATE, SETTINGS)."""
        await self._writer()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.transport.is_closing():
            self.transport.write(data)

    # h2's events.

    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._request(event)
        elif isinstance(event, h2.events.DataReceived):
            stream = self.streams.get(event.stream_id)
            if stream is None:  # a stream already answered or refused: its bytes still count against the window
                self._acknowledge(event.flow_controlled_length, event.stream_id)
            else:
                stream.body += event.data
                stream.unacknowledged += event.flow_controlled_length
                if event.stream_ended is not None:
                    stream.more_body = False
                stream.wake()
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id)
            if stream is not None:
                stream.more_body = False
                stream.wake()
        elif isinstance(event, h2.events.StreamReset):
            stream = self.streams.pop(event.stream_id, None)
            if stream is not None:
                if not stream.response_complete and event.remote_reset:
                    self._count_reset()
                stream.gone()
                self._maybe_done()
        elif isinstance(event, (h2.events.WindowUpdated, h2.events.RemoteSettingsChanged)):
            self._release_writers()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._draining = True
            self._last_stream = min(self._last_stream or event.last_stream_id or 0, event.last_stream_id or 0)
            self._maybe_done()

    def _request(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        refused = self._draining and stream_id > self._last_stream
        if refused or len(self.streams) >= self.limits.max_concurrent_streams:
            self.conn.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)  # safe for the client to send again
            return
        method = path = authority = b""
        scheme = b""
        headers: list[tuple[bytes, bytes]] = []
        for name, value in event.headers or ():
            name, value = bytes(name), bytes(value)
            if name[:1] == b":":
                if name == b":method":
                    method = value
                elif name == b":path":
                    path = value
                elif name == b":authority":
                    authority = value
                elif name == b":scheme":
                    scheme = value
            else:
                headers.append((name, value))
        fields = self.limits.max_fields
        if fields and len(headers) > fields:
            logger.warning("refused a request from %s: more than %d header fields (431 Request Header Fields Too "
                           "Large)", self._template.get("client"), fields)
            self.conn.send_headers(stream_id, [(b":status", b"431"), (b"content-length", b"0")], end_stream=True)
            return
        if authority and not any(name == b"host" for name, _ in headers):
            headers.insert(0, (b"host", authority))
        stream = self._open(stream_id, method, path, headers, scheme)
        if event.stream_ended is not None:
            stream.more_body = False

    def _open(self, stream_id: int, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]],
              scheme: bytes) -> _Stream:
        raw_path, _, query = target.partition(b"?")
        path = raw_path.decode("ascii", "replace")
        if "%" in path:
            path = unquote(path)
        scope = self._template.copy()
        root_path = scope["root_path"]
        if root_path:
            path = root_path + path
            raw_path = root_path.encode("ascii") + raw_path
        if scheme in (b"http", b"https"):
            scope["scheme"] = scheme.decode("ascii")
        scope["method"] = method.decode("ascii", "replace")
        scope["path"] = path
        scope["raw_path"] = raw_path
        scope["query_string"] = query
        scope["headers"] = headers
        scope["state"] = self.shared.app_state.copy()
        stream = _Stream(self, stream_id, scope)
        self.streams[stream_id] = stream
        self._idle_since = None
        tasks = self.shared.state.tasks
        task = self.loop.create_task(stream.run(self.app))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return stream

    def _acknowledge(self, size: int, stream_id: int) -> None:
        if size and not self._closed:
            try:
                self.conn.acknowledge_received_data(size, stream_id)
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
                pass  # the stream is gone: h2 has already credited the connection's window where it should

    def _count_reset(self) -> None:
        """A client reset a stream before its answer: past _RESETS in _RESET_WINDOW, ENHANCE_YOUR_CALM and close."""
        now = time.monotonic()
        resets = self._resets
        resets.append(now)
        while resets and resets[0] < now - _RESET_WINDOW:
            resets.popleft()
        if len(resets) > _RESETS:
            logger.warning("HTTP/2 client %s reset %d streams within %gs: closed (rapid reset)",
                           self._template.get("client"), len(resets), _RESET_WINDOW)
            self.conn.close_connection(ErrorCodes.ENHANCE_YOUR_CALM)
            self._flush()
            for stream in list(self.streams.values()):
                stream.gone()
            self.transport.close()

    # A stream's end, the drain.

    def stream_done(self, stream: _Stream) -> None:
        self.shared.state.total_requests += 1
        if self.streams.get(stream.stream_id) is stream:
            del self.streams[stream.stream_id]
        if not self.streams:
            self._idle_since = self.loop.time()
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self._draining and not self.streams and not self._closed:
            self._closed = True
            if not self.transport.is_closing():
                self.conn.close_connection(last_stream_id=self._last_stream)
                self._flush()
                self.transport.close()

    @property
    def cycle(self) -> _Stream | None:
        """For the drain (seam.OpenConnection): a stream still being answered, or None when idle."""
        for stream in self.streams.values():
            if not stream.response_complete:
                return stream
        return None

    def shutdown(self) -> None:
        """Drain: GOAWAY now (streams up to the newest one taken finish, newer ones are refused), close when done."""
        if self._draining or self._closed:
            return
        self._draining = True
        self._last_stream = self.conn.highest_inbound_stream_id
        if self.streams and not self.transport.is_closing():
            # The first GOAWAY tells the client where to stop; h2's own close_connection would end the streams
            # still running too, so this one is a bare frame, and h2's comes once they are done (_maybe_done).
            frame = GoAwayFrame(stream_id=0, last_stream_id=self._last_stream, error_code=ErrorCodes.NO_ERROR)
            self._flush()
            self.transport.write(frame.serialize())
        self._maybe_done()

    # What the WebSocket and HTTP/1.1 views of a connection also have (seam.OpenConnection, guard).

    @property
    def response_started(self) -> bool:
        return any(stream.response_started for stream in self.streams.values())


class _Stream:
    """One request stream and its response: the ASGI ``receive`` and ``send`` of the app's call."""

    __slots__ = (
        "after",
        "body",
        "conn",
        "disconnected",
        "end_taken",
        "head_only",
        "headers_out",
        "more_body",
        "response_complete",
        "response_started",
        "scope",
        "stream_id",
        "unacknowledged",
        "waiter",
    )

    def __init__(self, conn: H2Protocol, stream_id: int, scope: dict[str, Any]) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.scope = scope
        self.body = bytearray()
        self.more_body = True
        self.end_taken = False  # the app took the body's last message: receive() now waits for the stream's end
        self.unacknowledged = 0  # body bytes received and not yet taken by the app: their window is still shut
        self.waiter: asyncio.Future[None] | None = None
        self.disconnected = False
        self.response_started = False
        self.response_complete = False
        self.headers_out: list[tuple[bytes, bytes]] | None = None
        self.head_only = scope["method"] == "HEAD"

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    def gone(self) -> None:
        self.disconnected = True
        self.wake()
        self.conn._release_writers()  # a send waiting for a window or the transport stops waiting

    async def run(self, app: Any) -> None:
        try:
            await app(self.scope, self.receive, self.send)
        except BaseException as exc:
            logger.error("Exception in ASGI application", exc_info=exc)
            if not self.response_started and not self.disconnected:
                self._answer_500()
            else:
                self._reset(ErrorCodes.INTERNAL_ERROR)
        else:
            if not self.response_complete and not self.disconnected:
                logger.error("the ASGI app returned without completing its response")
                if not self.response_started:
                    self._answer_500()
                else:
                    self._reset(ErrorCodes.INTERNAL_ERROR)
        finally:
            self.response_complete = True
            self.conn.stream_done(self)

    def _answer_500(self) -> None:
        conn = self.conn
        if conn._closed:
            return
        try:
            conn.conn.send_headers(self.stream_id, _INTERNAL_ERROR_HEADERS)
            conn.conn.send_data(self.stream_id, b"Internal Server Error", end_stream=True)
        except h2.exceptions.ProtocolError:
            return
        self.response_complete = True
        conn._flush()

    def _reset(self, code: ErrorCodes) -> None:
        conn = self.conn
        if conn._closed:
            return
        try:
            conn.conn.reset_stream(self.stream_id, code)
        except h2.exceptions.ProtocolError:
            return
        conn._flush()

    async def receive(self) -> dict[str, Any]:
        # As uvicorn's: once the body is all taken, receive() waits for the client to leave or the response to
        # complete, then says http.disconnect (the WSGI bridge's watcher of a streamed response relies on it).
        while not (self.body or (not self.more_body and not self.end_taken) or self.disconnected
                   or self.response_complete):
            self.waiter = self.conn.loop.create_future()
            await self.waiter
        if self.disconnected or self.response_complete:
            return _DISCONNECT
        body = bytes(self.body)
        self.body.clear()
        # What the app took opens the window again: the client sends no more than a window ahead of the app.
        taken, self.unacknowledged = self.unacknowledged, 0
        conn = self.conn
        conn._acknowledge(taken, self.stream_id)
        conn._flush()
        self.end_taken = not self.more_body
        return {"type": "http.request", "body": body, "more_body": self.more_body}

    async def send(self, message: dict[str, Any]) -> None:
        if self.disconnected:
            return
        kind = message["type"]
        if not self.response_started:
            if kind != "http.response.start":
                raise RuntimeError(f"expected ASGI message 'http.response.start', got {kind!r}")
            self.response_started = True
            headers = [(b":status", str(message["status"]).encode("ascii"))]
            headers += self.conn.shared.state.default_headers
            for name, value in message.get("headers", ()):
                name = bytes(name).lower()
                # Connection-specific fields are not allowed in HTTP/2 (RFC 9113 8.2.2): dropped, not refused.
                if name not in (b"connection", b"keep-alive", b"transfer-encoding", b"upgrade",
                                b"proxy-connection"):
                    headers.append((name, bytes(value)))
            self.headers_out = headers
        elif not self.response_complete:
            if kind != "http.response.body":
                raise RuntimeError(f"expected ASGI message 'http.response.body', got {kind!r}")
            try:
                await self._body(message.get("body", b""), message.get("more_body", False))
            except h2.exceptions.StreamClosedError:  # the client reset the stream meanwhile: sends are dropped
                self.gone()
        else:
            raise RuntimeError(f"ASGI message {kind!r} sent after the response was complete")

    async def _body(self, body: bytes, more_body: bool) -> None:
        conn = self.conn
        h2conn = conn.conn
        if self.head_only:
            body = b""
        headers, self.headers_out = self.headers_out, None
        if headers is not None:
            h2conn.send_headers(self.stream_id, headers, end_stream=not body and not more_body)
            conn._flush()
            if not body and not more_body:
                self.response_complete = True
                self.wake()
                return
        view = memoryview(body)
        while view:
            while conn._write_paused and not self.disconnected:
                await conn.writable()
            if self.disconnected:
                return
            window = min(h2conn.local_flow_control_window(self.stream_id), h2conn.max_outbound_frame_size)
            if window <= 0:  # wait for the client's WINDOW_UPDATE (or a SETTINGS that opens the window)
                await conn.writable()
                continue
            chunk, view = view[:window], view[window:]
            h2conn.send_data(self.stream_id, bytes(chunk), end_stream=not view and not more_body)
            conn._flush()
        if not more_body:
            if not body:
                h2conn.end_stream(self.stream_id)
                conn._flush()
            self.response_complete = True
            self.wake()


def _address(info: Any) -> Any:
    if isinstance(info, tuple) and len(info) >= 2:
        return (str(info[0]), int(info[1]))
    return None
