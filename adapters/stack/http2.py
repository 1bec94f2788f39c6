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
  response completed within ``_RESET_WINDOW`` seconds gets GOAWAY ENHANCE_YOUR_CALM and the connection closes;
* every close the server decides is a lingering one (``_end``): the last GOAWAY, the sending side shut, and the
  client's frames still arriving read and discarded (bounded) until it closes, so that no reset destroys the
  GOAWAY.

Imports asyncio, h2 (an optional dependency: clusterrun[http2]) and adapters.stack.http1 (the Shared state).
"""

from __future__ import annotations

import asyncio
import http
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, cast

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.frame_buffer
import h2.settings
import hpack
from clusterrun.adapters.admission import Admission
from clusterrun.adapters.limits import Exceeded
from clusterrun.adapters.stack.flow import WriteFlow
from clusterrun.adapters.stack.http1 import Shared, set_target
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame

__all__ = ["PREFACE", "H2Limits", "H2Protocol"]

logger = logging.getLogger("clusterrun")

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# The rapid-reset guard: more client resets of unanswered streams than this within the window closes the
# connection. Far above what a browser cancelling navigations does, far below an attack's thousands a second.
_RESETS = 200
_RESET_WINDOW = 10.0
# A connection the server ends (an error of the client's, the rapid-reset guard, the keep-alive timeout, the end
# of a drain) closes lingering, as http1's guard and the inline engine do: its GOAWAY goes out, the sending side
# is shut, and what the client still sends is read and discarded for this long or this many bytes, until the
# client closes. Closing at once with the client's frames still arriving makes the kernel answer them with a
# reset, which can destroy the GOAWAY before the client reads it (and the client's sends fail meanwhile).
_LINGER_SECONDS = 2.0
_LINGER_BYTES = 1024 * 1024
_STREAM_WINDOW = 65535  # SETTINGS_INITIAL_WINDOW_SIZE left at the default: a stream's receive window
# Frames are written once per turn of the loop (see H2Protocol._flush), unless this many bytes of DATA wait: then
# at once, so that the transport's buffer, not h2's, holds a large answer, and its pause_writing still holds the
# sender back.
_FLUSH_NOW_AT = 64 * 1024
_DISCONNECT = {"type": "http.disconnect"}
_INTERNAL_ERROR_HEADERS = [(b":status", b"500"), (b"content-type", b"text/plain; charset=utf-8"),
                           (b"content-length", b"21")]


@dataclass(frozen=True)
class H2Limits:
    """--h2-max-concurrent-streams, the header-list size from --limit-request-head (0: h2's default),
    --limit-request-fields, --limit-request-field-size and --timeout-request-head."""

    max_concurrent_streams: int = 100
    max_header_list_size: int = 0
    max_fields: int = 0  # --limit-request-fields: a request with more header fields is answered 431 (0: no limit)
    # --limit-request-field-size: a field longer than this, counted as HTTP/1.1 counts its line (name, ": ",
    # value, CRLF), is answered 431 (0: no limit).
    max_field_size: int = 0
    max_body: int = 0  # --limit-request-body: a request body past it is answered 413 on its stream (0: no limit)
    # --timeout-request-head: the seconds a connection may take to send its first complete header block, and a
    # header block begun (HEADERS without END_HEADERS) to end (0: no limit).
    head_timeout: float = 0.0


class _CompressionError(h2.exceptions.ProtocolError):
    """A header block HPACK cannot decode: RFC 9113 4.3 makes it a connection error of type COMPRESSION_ERROR, where
    h2 says PROTOCOL_ERROR. A ProtocolError still: h2 ends the connection with this code."""

    error_code = ErrorCodes.COMPRESSION_ERROR


class _Decoder(hpack.Decoder):
    """h2's HPACK decoder, its decoding errors raised as _CompressionError (h2 turns an HPACKError into a
    PROTOCOL_ERROR; this one passes through it). A header list past the limit stays h2's own (an HPACK bomb:
    ENHANCE_YOUR_CALM)."""

    def decode(self, data: bytes, raw: bool = False) -> Any:
        try:
            return super().decode(data, raw)
        except hpack.OversizedHeaderListError:
            raise
        except hpack.HPACKError as exc:
            raise _CompressionError(f"Error decoding header block: {exc}") from exc


class _Frames(h2.frame_buffer.FrameBuffer):
    """h2's frame buffer, but a SETTINGS frame with ACK and a payload is a FRAME_SIZE_ERROR (RFC 9113 6.5), where
    hyperframe's parse makes it a PROTOCOL_ERROR. Checked where h2 checks a frame's length: its header is there."""

    def _validate_frame_length(self, length: int) -> None:
        super()._validate_frame_length(length)
        if length:
            header = cast(bytes, getattr(self, "_data", None) or getattr(self, "data", b""))  # "data" before h2 4.2
            if len(header) >= 9 and header[3] == 0x4 and header[4] & 0x1:  # SETTINGS, ACK
                raise h2.exceptions.FrameTooLargeError("a SETTINGS acknowledgement with a payload")


class _Connection(h2.connection.H2Connection):
    """h2's connection, but a HEADERS frame past SETTINGS_MAX_CONCURRENT_STREAMS is taken (its header block decoded:
    HPACK's table stays in step) so that H2Protocol refuses that stream alone with REFUSED_STREAM, as RFC 9113
    5.1.2 asks: h2 would make it a connection error, ending the streams in flight with it; undecodable header
    blocks are COMPRESSION_ERROR (_Decoder), and an acknowledgement of SETTINGS with a payload FRAME_SIZE_ERROR
    (_Frames)."""

    def __init__(self, config: h2.config.H2Configuration) -> None:
        super().__init__(config=config)
        decoder = _Decoder()
        decoder.max_header_list_size = self.decoder.max_header_list_size
        decoder.max_allowed_table_size = self.decoder.max_allowed_table_size
        self.decoder = decoder
        frames = _Frames(server=True)
        frames.max_frame_size = self.incoming_buffer.max_frame_size
        self.incoming_buffer = frames

    @property
    def open_inbound_streams(self) -> int:
        h2.connection.H2Connection.open_inbound_streams.fget(self)  # type: ignore[attr-defined]  # it culls closed streams
        return 0


class H2Protocol(WriteFlow, asyncio.Protocol):
    """One HTTP/2 connection serving an ASGI app, taken over from the HTTP/1.1 protocol (see the module)."""

    def __init__(self, shared: Shared, limits: H2Limits, admission: Admission | None = None) -> None:
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
        self._preface_read = False  # the client's preface (its SETTINGS frame first) was read
        self._closed = False  # the connection is ended (lingering or gone): no stream is served any more
        self._lingering = -1  # bytes read and discarded since the GOAWAY that ended the connection (-1: not ended)
        self._flush_due = False  # a _flush_now is scheduled for the end of this turn of the loop
        self._unflushed = 0  # bytes of DATA given to h2 since the last write
        self._linger_timer: asyncio.TimerHandle | None = None
        # The keep-alive clock, as HTTP/1.1's: a connection with no stream for --timeout-keep-alive seconds gets
        # GOAWAY and closes. One timer per connection, set again for what is left when a stream came meanwhile.
        self._idle_since: float | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        # --limit-concurrency: the connection takes a place with its first stream, as an HTTP/1.1 one with its
        # first request, and holds it until it closes.
        self._admission = admission
        self._admitted = False
        # The head clock (--timeout-request-head): since when the connection owes a complete header block (its
        # first, or one it began), None when it owes none.
        self._head_since: float | None = None
        self._head_timer: asyncio.TimerHandle | None = None

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
        timeout = self.limits.head_timeout
        if timeout:
            self._head_since = now
            self._head_timer = self.loop.call_at(now + timeout, self._head_too_long)

    def upgraded(self, transport: asyncio.BaseTransport, settings: bytes, method: bytes, target: bytes,
                 headers: list[tuple[bytes, bytes]]) -> None:
        """In place of connection_made: an ``Upgrade: h2c`` request (no body), answered 101 and then on stream 1."""
        self.conn.initiate_upgrade_connection(settings)  # the server's SETTINGS, and stream 1 half-closed (remote)
        cast(asyncio.Transport, transport).write(b"HTTP/1.1 101 Switching Protocols\r\nconnection: Upgrade\r\n"
                                                 b"upgrade: h2c\r\n\r\n")
        self.connection_made(transport)
        if not self._admit(1, True):  # its head was checked in HTTP/1.1; its place is taken here
            return
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

    def _head_too_long(self) -> None:
        """The head clock's timer: a connection that sent no complete header block within --timeout-request-head of
        opening, or left one unfinished (HEADERS without END_HEADERS, which stops every other frame) that long,
        gets GOAWAY and closes."""
        self._head_timer = None
        since = self._head_since
        if self._closed or since is None:
            return
        pending = self._block_pending()
        if not pending and self.conn.highest_inbound_stream_id:
            self._head_since = None
            return
        timeout = self.limits.head_timeout
        due = since + timeout
        if self.loop.time() < due:
            self._head_timer = self.loop.call_at(due, self._head_too_long)
            return
        client = self._template.get("client")
        if pending:
            logger.warning("HTTP/2 connection from %s closed: a header block not complete after %g s "
                           "(--timeout-request-head)", client, timeout)
            self.conn.close_connection(ErrorCodes.PROTOCOL_ERROR)
        else:
            logger.info("HTTP/2 connection from %s closed: no request within %g s (--timeout-request-head)",
                        client, timeout)
            self.conn.close_connection()
        self._end()

    def _block_pending(self) -> bool:
        """A header block was begun and has not ended: h2 holds its frames until the END_HEADERS flag."""
        return bool(getattr(self.conn.incoming_buffer, "_headers_buffer", None))

    # asyncio's protocol.

    def data_received(self, data: bytes) -> None:
        if self._lingering >= 0:  # ended: read and discarded until the client closes
            self._lingering += len(data)
            if self._lingering > _LINGER_BYTES:
                self.transport.abort()
            return
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            logger.info("HTTP/2 connection from %s closed: %s", self._template.get("client"), exc)
            self._end()  # h2 has queued its GOAWAY with the error's code
            return
        if not self._preface_read and events:
            self._preface_read = True
            if not isinstance(events[0], h2.events.RemoteSettingsChanged):  # h2 does not check it
                logger.info("HTTP/2 connection from %s closed: its preface is not followed by SETTINGS",
                            self._template.get("client"))
                self.conn.close_connection(ErrorCodes.PROTOCOL_ERROR)  # RFC 9113 3.4
                self._end()
                return
        for event in events:
            if self._closed:  # ended by one of them (the rapid-reset guard): the rest are the client's no more
                break
            self._event(event)
        self._flush()
        if self.limits.head_timeout and self._head_since is None and self._block_pending():
            # A header block begun in this read and not ended: the head clock runs for it.
            self._head_since = now = self.loop.time()
            if self._head_timer is None:
                self._head_timer = self.loop.call_at(now + self.limits.head_timeout, self._head_too_long)

    def eof_received(self) -> None:
        """The client shut its side (after reading the GOAWAY of a lingering close, usually): the transport closes.
        A half-closed client can read no answer to a stream it has not ended, and HTTP/2 has no half-close."""

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self.shared.state.connections.discard(self)
        for timer in (self._idle_timer, self._linger_timer, self._head_timer):
            if timer is not None:
                timer.cancel()
        self._idle_timer = self._linger_timer = self._head_timer = None
        if self._admitted:
            self._admitted = False
            assert self._admission is not None
            self._admission.release()
        for stream in self.streams.values():
            stream.gone()
        self.streams.clear()
        self._release_writers()
        for on_close in self.shared.on_close:
            on_close()

    def pause_writing(self) -> None:
        """The transport's buffer is full: the client takes nothing. Nor is it read from until it takes some, as
        every PING and SETTINGS it sends is answered: a client flooding them without reading would otherwise grow
        the buffer without bound (PING and SETTINGS floods, CVE-2019-9512 and -9515)."""
        super().pause_writing()
        if not self.transport.is_closing():
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        if not self.transport.is_closing():
            self.transport.resume_reading()

    async def writable(self) -> None:
        """Wait while the transport's buffer is full, or until a window may have opened (WINDOW_UPDATE, SETTINGS)."""
        await self._writer()

    def _flush(self, data_bytes: int = 0) -> None:
        """Write what h2 has queued, at the end of this turn of the loop: the head and body of one response, and
        the responses of every stream one read started, then share one write (two writes per stream, each a
        system call and a TCP segment, cost about 12 us of the server's CPU per request under h2load -m16)."""
        self._unflushed += data_bytes
        if self._unflushed >= _FLUSH_NOW_AT:
            self._flush_now()
        elif not self._flush_due:
            self._flush_due = True
            self.loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_due = False
        self._unflushed = 0
        data = self.conn.data_to_send()
        if data and not self.transport.is_closing():
            self.transport.write(data)

    def _end(self) -> None:
        """End the connection once its last GOAWAY is queued in h2: send it, then close lingering (see
        _LINGER_SECONDS). Streams still running see a disconnect; the connection stays counted until the close."""
        if self._lingering >= 0:
            return
        self._closed = True
        self._lingering = 0
        self._flush_now()  # the GOAWAY before the write side's end
        for stream in list(self.streams.values()):
            stream.gone()
        transport = self.transport
        if transport.is_closing():
            return
        if transport.can_write_eof():  # TLS cannot: its GOAWAY is followed by the close_notify at the close
            try:
                transport.write_eof()  # after what is buffered: the client reads the GOAWAY, then the end
            except OSError:
                transport.abort()
                return
        self._linger_timer = self.loop.call_later(_LINGER_SECONDS, self._linger_over,
                                                  transport.get_write_buffer_size())

    def _linger_over(self, size_then: int) -> None:
        """The linger's end: close. While what is still buffered for the client (the end of a drained stream's
        response) goes on shrinking, it gets another linger; a client that takes nothing of it is aborted, as
        close() would wait for the buffer to be sent."""
        self._linger_timer = None
        transport = self.transport
        size = transport.get_write_buffer_size()
        if size and size < size_then:
            self._linger_timer = self.loop.call_later(_LINGER_SECONDS, self._linger_over, size)
            return
        transport.abort()

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
                limit = self.limits.max_body
                if limit:
                    stream.received += len(event.data)
                    if stream.received > limit:
                        stream.refuse_body(Exceeded(413, f"a body of more than {limit} bytes"))
                        return
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
        self._head_since = None  # a complete header block: the head clock stops (a begun one sets it again)
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
        ended = event.stream_ended is not None
        hit = self._check_fields(headers)
        if hit is not None:
            self._refuse(stream_id, hit, ended)
            return
        if not self._admit(stream_id, ended):
            return
        if authority and not any(name == b"host" for name, _ in headers):
            headers.insert(0, (b"host", authority))
        stream = self._open(stream_id, method, path, headers, scheme)
        if ended:
            stream.more_body = False

    def _check_fields(self, headers: list[tuple[bytes, bytes]]) -> Exceeded | None:
        """431 for more fields than --limit-request-fields, or one longer than --limit-request-field-size; 413 for a
        Content-Length past --limit-request-body."""
        limits = self.limits
        if limits.max_fields and len(headers) > limits.max_fields:
            return Exceeded(431, f"more than {limits.max_fields} header fields ({len(headers)})")
        if limits.max_body:
            for name, value in headers:
                if name == b"content-length" and value.strip().isdigit() and int(value) > limits.max_body:
                    return Exceeded(413, f"a body of {int(value)} bytes (the limit is {limits.max_body})")
        if limits.max_field_size:
            longest = limits.max_field_size - 4  # as HTTP/1.1 counts a field's line: ": " and CRLF besides
            for name, value in headers:
                if len(name) + len(value) > longest:
                    return Exceeded(431, f"a header field of {len(name) + len(value) + 4} bytes (the limit is "
                                         f"{limits.max_field_size})")
        return None

    def _admit(self, stream_id: int, ended: bool) -> bool:
        """--limit-concurrency: the connection's first stream takes a place for the connection; with none left,
        that stream is answered 503 and the connection ends after it (GOAWAY naming it), as HTTP/1.1's 503 comes
        with Connection: close."""
        admission = self._admission
        if admission is None or self._admitted:
            return True
        if admission.admit(len(self.shared.state.tasks)):
            self._admitted = True
            return True
        self._refuse(stream_id, admission.refusal(self._template.get("client")), ended)
        self.conn.close_connection(last_stream_id=stream_id)
        self._end()
        return False

    def _refuse(self, stream_id: int, hit: Exceeded, ended: bool) -> None:
        """Answer ``hit`` on its stream alone, as HTTP/1.1 answers it: the status and a line saying why. A stream
        whose request body is still coming is then reset with NO_ERROR (RFC 9113 8.1): the client stops sending
        it, and the connection serves on."""
        phrase = http.HTTPStatus(hit.status).phrase
        if not hit.logged:
            logger.warning("refused a request from %s: %s (%d %s)", self._template.get("client"), hit.why,
                           hit.status, phrase)
        body = f"{phrase}: {hit.why}\n".encode()
        conn = self.conn
        if len(body) > min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size):
            body = b""  # the client's window has no room for the reason: the status alone says it
        headers = [(b":status", str(hit.status).encode("ascii")), *self.shared.state.default_headers,
                   (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
        conn.send_headers(stream_id, headers, end_stream=not body)
        if body:
            conn.send_data(stream_id, body, end_stream=True)
        if not ended:
            conn.reset_stream(stream_id, ErrorCodes.NO_ERROR)

    def _open(self, stream_id: int, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]],
              scheme: bytes) -> _Stream:
        raw_path, _, query = target.partition(b"?")
        scope = self._template.copy()
        set_target(scope, raw_path, query)
        if scheme in (b"http", b"https"):
            scope["scheme"] = scheme.decode("ascii")
        scope["method"] = method.decode("ascii", "replace")
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
            self._end()

    # A stream's end, the drain.

    def stream_done(self, stream: _Stream) -> None:
        self.shared.state.total_requests += 1
        if self.streams.get(stream.stream_id) is stream:
            del self.streams[stream.stream_id]
        if not self._closed:
            if stream.more_body and not stream.disconnected:
                # Answered before its body ended: the client stops sending it (RFC 9113 8.1).
                stream._reset(ErrorCodes.NO_ERROR)
            if stream.unacknowledged:  # body the app never read: the connection's window gets it back
                self._acknowledge(stream.unacknowledged, stream.stream_id)
                stream.unacknowledged = 0
                self._flush()
        if not self.streams:
            self._idle_since = self.loop.time()
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self._draining and not self.streams and not self._closed:
            if not self.transport.is_closing():
                self.conn.close_connection(last_stream_id=self._last_stream)
            self._end()

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
        "received",
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
        self.received = 0  # body bytes received, counted with --limit-request-body only
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

    def _body_stalled(self, timeout: float | None) -> None:
        """The request body sent no byte for --body-timeout while the app waited for it."""
        if self.more_body:
            self.refuse_body(Exceeded(408, f"no byte of the request body for {timeout:g} s (--body-timeout)"))

    def refuse_body(self, hit: Exceeded) -> None:
        """The request body broke a limit (--body-timeout, --limit-request-body): ``hit`` answered on the stream
        (the stream reset, once its response began); the app sees a disconnect. The connection serves on."""
        conn = self.conn
        if self.disconnected or self.response_complete or conn._closed:
            return
        if self.response_started:
            logger.warning("reset a stream from %s: %s", conn._template.get("client"), hit.why)
            self._reset(ErrorCodes.CANCEL)
        else:
            conn._refuse(self.stream_id, hit, ended=not self.more_body)
            conn._flush()
        self.response_complete = True
        self.gone()
        if self.unacknowledged:  # what it sent and the app did not take: the connection's window gets it back
            conn._acknowledge(self.unacknowledged, self.stream_id)
            self.unacknowledged = 0
            conn._flush()

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
        conn = self.conn
        timeout = conn.shared.body_timeout  # None for the --threads bridge: its input keeps its own clock
        due = conn.loop.time() + timeout if timeout else 0.0
        # As uvicorn's: once the body is all taken, receive() waits for the client to leave or the response to
        # complete, then says http.disconnect (the WSGI bridge's watcher of a streamed response relies on it).
        while not (self.body or (not self.more_body and not self.end_taken) or self.disconnected
                   or self.response_complete):
            self.waiter = waiter = conn.loop.create_future()
            if not (due and self.more_body):  # the clock is on the body's bytes, not on a wait after its end
                await waiter
                continue
            # Bytes, not frames, reset the clock: empty DATA frames wake this wait and do not extend it.
            timer = conn.loop.call_at(due, self._body_stalled, timeout)
            try:
                await waiter
            finally:
                timer.cancel()
        if self.disconnected or self.response_complete:
            return _DISCONNECT
        body = bytes(self.body)
        self.body.clear()
        # What the app took opens the window again: the client sends no more than a window ahead of the app.
        taken, self.unacknowledged = self.unacknowledged, 0
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

    async def _room(self, since: float) -> bool:
        """Wait until a window may have opened or the transport drained; False once the client has taken nothing
        since ``since`` for --body-timeout."""
        conn = self.conn
        waiter = conn._writer()
        timeout = conn.shared.send_timeout
        if not timeout:
            await waiter
            return True
        due = since + timeout
        if conn.loop.time() >= due:
            return False
        timer = conn.loop.call_at(due, _settle, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
        return True

    def _send_stalled(self, paused: bool) -> None:
        """The client took nothing of the response for --body-timeout while the app waited to send more: a stream
        whose window stayed shut is reset (the others go on); a connection whose transport stayed full (the
        client reads nothing at all) is aborted, as HTTP/1.1's is. The app's later sends are dropped."""
        conn = self.conn
        timeout = conn.shared.send_timeout
        client = conn._template.get("client")
        if paused:
            logger.warning("closed the HTTP/2 connection from %s: the client took nothing for %g s (--body-timeout)",
                           client, timeout)
            conn.transport.abort()
        else:
            logger.warning("reset a stream from %s: its window stayed shut for %g s, the response waiting "
                           "(--body-timeout)", client, timeout)
            self._reset(ErrorCodes.CANCEL)
        self.gone()

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
        stalled: float | None = None  # since when the client has taken nothing: no window, or a full transport
        while view:
            if self.disconnected:
                return
            paused = conn._write_paused
            window = 0 if paused else min(h2conn.local_flow_control_window(self.stream_id),
                                          h2conn.max_outbound_frame_size)
            if window <= 0:  # wait for the transport, or the client's WINDOW_UPDATE (or SETTINGS opening it)
                if stalled is None:
                    stalled = conn.loop.time()
                if not await self._room(stalled):
                    self._send_stalled(paused)
                    return
                continue
            stalled = None
            chunk, view = view[:window], view[window:]
            h2conn.send_data(self.stream_id, bytes(chunk), end_stream=not view and not more_body)
            conn._flush(len(chunk))
        if not more_body:
            if not body:
                h2conn.end_stream(self.stream_id)
                conn._flush()
            self.response_complete = True
            self.wake()


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _address(info: Any) -> Any:
    if isinstance(info, tuple) and len(info) >= 2:
        return (str(info[0]), int(info[1]))
    return None
