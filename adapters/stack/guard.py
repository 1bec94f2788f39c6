"""The limits on uvicorn's HTTP connections: the request head's size and time, the request body's size.

uvicorn's HTTP protocols bound none of these. With httptools, an unterminated header value grows inside the
parser without end, 1,000 headers or a 4 MB header reach the app, and a connection that never completes its
head (or never sends a byte) stays open forever. This module is the only place that adds limits to them: a
``Guard`` on every HTTP connection

* counts the bytes of a request head as they arrive, before the parser sees them, so that neither parser
  ever holds more than ``head`` bytes of one (414 for a request line, 431 for headers);
* checks the request line, the number of header fields and each field's size once the head is parsed
  (414 / 431), and ``Content-Length`` against the body limit (413), before the app is called;
* counts body bytes against the body limit as they arrive (413, also for chunked bodies);
* takes a place of --limit-concurrency with a connection's first request head, or answers it 503
  (adapters.admission), and gives the place back when the connection closes (a WebSocket's too);
* closes a connection whose request head is not complete within ``head_timeout`` seconds (408 when part
  of a head arrived; a connection that sent nothing is closed silently, as an idle keep-alive one).

A rejected connection is answered, its sending side shut, and whatever the client still sends is read and
discarded for a moment before closing ("lingering close", as nginx does): closing at once with unread data
makes the kernel send a reset that can destroy the answer before the client reads it.

The limits reach uvicorn's protocols only through the seam (adapters.stack.seam): ``Guard`` is the seam's
``RequestGuard``, one per connection, and sees the connection as the seam's ``ConnectionView``. A limit found
inside the parser raises ``Exceeded`` (the seam's ``RequestRefused``); the parser then fails and the answer is
ours instead of a 400. The checks themselves are engine-neutral (adapters.limits): the inline engine makes the
same ones.
"""

from __future__ import annotations

import asyncio
import http
import logging

from clusterrun.adapters.admission import Admission
from clusterrun.adapters.limits import (
    Exceeded,
    Headers,
    Limits,
    check_head,
    check_trailers,
    header_lines,
    measure_head,
    plain_answer,
)
from clusterrun.adapters.methods import conventional, stand_in
from clusterrun.adapters.stack.seam import ConnectionView

__all__ = ["Guard", "HeadClock"]

logger = logging.getLogger("clusterrun")

# After a rejection: how long and how much of what the client still sends is read and discarded.
_LINGER_SECONDS = 2.0
_LINGER_BYTES = 1024 * 1024
# A body's framing (chunk-size lines with their extensions, trailers) may take this many bytes, plus this many
# per byte of body (a body sent in 1-byte chunks takes 5 per byte), before the request is refused: a client
# must not stream gigabytes of chunk extensions with no body (uvicorn's parsers bound neither).
_FRAMING_BYTES = 64 * 1024
_FRAMING_RATIO = 16
_SWEEP_EVERY = 1.0  # seconds between two checks of the head clocks: a head may outlive its timeout by this


def strip_values(headers: Headers) -> None:
    """Trim the whitespace that ends field values (RFC 9112 5: OWS is not part of the value), in place."""
    for index, (name, value) in enumerate(headers):
        trimmed = value.rstrip(b" \t")
        if len(trimmed) != len(value):
            headers[index] = (name, trimmed)


class HeadClock:
    """A worker's head clocks, checked by one sweep a second over its open connections' guards.

    As the inline engine does: a timer per connection (a ``call_at`` and its ``cancel``) cost each connection
    about 1.3 us on uvloop, joining and leaving this set about 0.1 us.
    """

    def __init__(self) -> None:
        self.guards: set[Guard] = set()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.call_later(_SWEEP_EVERY, self._sweep, loop)

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        for guard in list(self.guards):
            guard.check_head_clock(now)
        loop.call_later(_SWEEP_EVERY, self._sweep, loop)


class Guard:
    """The limits on one HTTP connection: head accounting, the head clock, rejection and lingering close.

    ``_head_open`` is true from the start of a connection and from the end of each request until the next
    request's head is parsed.
    """

    def __init__(self, conn: ConnectionView, limits: Limits, clock: HeadClock,
                 admission: Admission | None = None) -> None:
        self._conn = conn
        self._limits = limits
        self._clock = clock
        self._admission = admission
        self._admitted = False  # holds a place of --limit-concurrency (from its first request to its close)
        self._head_open = True
        self._head_size = 0  # bytes of the open head received so far
        self._head_tail = b""  # the open head's last bytes, in case its end straddles two reads
        self._line_seen = False  # the open head's request line has ended
        self._heads_done = 0  # counts parsed heads: tells data_received whether one ended during a read
        self._head_since: float | None = None  # when the open head's first byte came (loop time)
        self._body_size = 0
        self._body_wire = 0  # bytes read while in a body (chunk framing included): bounds the framing
        self._limit_hit: Exceeded | None = None
        self._rejected = False
        self._discarded = 0
        self._padded = False  # a head of this connection had a line ending in whitespace: trim the values
        self._reading: bytes | None = None  # the read being parsed, while it may begin a head (methods.stand_in)

    # The seam's RequestGuard: called by uvicorn's protocol (adapters.stack.seam).

    def connection_made(self) -> None:
        self._head_since = self._conn.loop.time()  # a fresh connection owes a head
        self._clock.guards.add(self)

    def connection_lost(self) -> None:
        if self._admitted:
            self._admitted = False
            assert self._admission is not None
            self._admission.release()
        self._clock.guards.discard(self)

    def data_received(self, data: bytes) -> None:
        if not (self._head_open or self._rejected):  # a body: the parser's (and the body limit's) business
            self._conn.parse(data)
            if not (self._head_open or self._rejected):  # still in this body: its framing is bounded
                self._body_wire += len(data)
                if self._body_wire - self._body_size > _FRAMING_BYTES + _FRAMING_RATIO * self._body_size:
                    self._limit_hit = Exceeded(400, "chunk extensions or trailers out of proportion to the body")
                    self._reject()
            return
        if self._guard_data(data):
            heads_before = self._heads_done
            self._reading = data
            self._conn.parse(data)
            self._reading = None
            if self._head_open and self._heads_done == heads_before:  # the same head goes on in the next read
                self._head_tail = data[-2:]
                self._line_seen = self._line_seen or b"\n" in data

    def refusing(self) -> bool:
        # Asked when uvicorn warns (rare): a request about to be re-parsed with a stand-in method is not refused.
        return self._limit_hit is not None or self._stand_in() is not None

    def bad_request(self) -> bool:
        if self._limit_hit is None:
            standing = self._stand_in()
            if standing is not None:
                self._reading = None  # one stand-in per read: if the request fails again, it is refused
                if self._conn.reparse(*standing):
                    return True
            # The parser's own complaint is answered here too: uvicorn would close at once, under the answers
            # still owed to requests pipelined before it, and with unread bytes the close resets the
            # connection, which can destroy the 400 before the client reads it. uvicorn logged it, unless its
            # warning was muted for a stand-in that this protocol could not take (h11).
            self._limit_hit = Exceeded(400, "Invalid HTTP request received.", logged=standing is None)
        self._reject()
        return True

    def _stand_in(self) -> tuple[bytes, bytes] | None:
        """The read that failed to parse with its method replaced, and the method, if the parser failed on an
        extension method (adapters.methods): only where the read begins a request and none is in flight."""
        data = self._reading
        if data is None or self._head_size != len(data) or self._conn.in_flight:
            return None
        space = data.find(b" ", 0, 21)
        if space <= 0 or not conventional(data[:space]):  # the request this read begins has no such method
            return None
        found = stand_in(data)
        if found is None or found[0]:  # a request after others in this read: those are in flight
            return None
        return found[1], found[2]

    # Accounting, called from inside the parser: raising Exceeded fails the parse.

    def head_parsed(self, method: bytes, target: bytes, version: str, headers: Headers) -> None:
        """The head was parsed and the app is about to be called: check what only a parsed head tells.

        Raises Exceeded with the head still open: the rejection then answers for this request.
        """
        if self._padded:
            strip_values(headers)
        hit = check_head(self._limits, method, target, headers, version)
        if hit is None and not self._admitted and self._admission is not None:
            if self._admission.admit(self._conn.running_requests):
                self._admitted = True
            else:
                hit = self._admission.refusal(self._conn.client)
        if hit is not None:
            self._limit_hit = hit
            raise hit
        self._head_open = False
        self._head_since = None
        self._heads_done += 1

    def body_received(self, size: int) -> None:
        self._body_size += size
        limit = self._limits.body
        if limit:
            if self._body_size > limit:
                raise self._exceeded(413, f"a body of more than {limit} bytes")

    def trailers_received(self, trailers: Headers) -> None:
        hit = check_trailers(trailers)
        if hit is not None:
            self._limit_hit = hit
            raise hit

    def message_completed(self) -> None:
        self._head_open = True
        self._head_size = self._body_size = self._body_wire = 0
        self._head_tail = b""
        self._line_seen = False

    def body_stalled(self, timeout: float) -> None:
        """The body being read sent nothing for ``timeout`` seconds while the app waited for it (--body-timeout,
        called by clusterrun's own protocol): 408, or a close once the response began."""
        if not (self._rejected or self._head_open):
            self._limit_hit = Exceeded(408, f"no byte of the request body for {timeout:g} s (--body-timeout)")
            self._reject()

    def _exceeded(self, status: int, why: str) -> Exceeded:
        self._limit_hit = hit = Exceeded(status, why)
        return hit

    # The transport side.

    def _guard_data(self, data: bytes) -> bool:
        """Account for ``data`` before the parser sees it; False if it must not be parsed."""
        if self._rejected:  # lingering: read and discard
            self._discarded += len(data)
            if self._discarded > _LINGER_BYTES:
                self._conn.transport.close()
            return False
        if self._head_since is None:  # the first bytes of a request head: its clock starts
            self._head_since = self._conn.loop.time()
        if not self._padded and (b" \r\n" in data or b"\t\r\n" in data):
            # A field value may end in whitespace, which httptools leaves in it (gunicorn and h11 trim it): this
            # connection's heads are trimmed from now on. Two scans of the read here cost less than one test
            # per header field of every request.
            self._padded = True
        size = self._head_size + len(data)
        # A head that fits in its request-line limit can have broken none: the common case stops here.
        if size > self._limits.request_line:
            hit = self._measure_head(data)
            if hit is not None:
                self._limit_hit = hit
                self._reject()
                return False
        self._head_size = size  # may count body bytes too; reset once the head is parsed
        return True

    def _measure_head(self, data: bytes) -> Exceeded | None:
        return measure_head(self._limits, self._head_tail, data, self._head_size, self._line_seen)

    def check_head_clock(self, now: float) -> None:
        """The sweep's visit: a head not complete within the head timeout is answered 408 (or the silent
        connection closed); a connection that closed without ``connection_lost`` (upgraded to WebSocket with
        no close hook) leaves the sweep."""
        conn = self._conn
        if conn.transport.is_closing():
            self._clock.guards.discard(self)
            return
        since = self._head_since
        if since is None or self._rejected:
            return
        timeout = self._limits.head_timeout
        if conn.in_flight:
            self._head_since = now  # a pipelined head waits for the request in flight: not the client's fault
        elif now - since >= timeout:
            if self._head_size:
                self._limit_hit = Exceeded(408, f"a request head not complete after {timeout:g} s")
                self._reject()
            else:  # nothing of a request arrived: an idle connection, closed as keep-alive ones are
                conn.transport.close()

    def _reject(self) -> None:
        """Answer the limit that was hit (unless this request's response already started), then close lingering."""
        conn = self._conn
        transport = conn.transport
        self._rejected = True
        self._head_since = None
        if transport.is_closing():
            return
        if self._head_open and conn.in_flight:
            # A request pipelined behind one still being answered is refused: every complete request before it
            # is answered first, then the refusal (what the client sends meanwhile is discarded: _rejected).
            conn.after_responses(self._answer_refusal)
            return
        self._answer_refusal()

    def _answer_refusal(self) -> None:
        hit = self._limit_hit
        conn = self._conn
        transport = conn.transport
        if transport.is_closing():
            return
        if hit is not None and not hit.logged:
            client = conn.client
            source = f" from {client[0]}:{client[1]}" if client else ""
            logger.warning("refused a request%s: %s (%d %s)", source, hit.why, hit.status,
                           http.HTTPStatus(hit.status).phrase)
        if not self._head_open and conn.has_request:
            # This request's app was called (its body grew past the limit): it now sees a disconnect and its
            # sends are dropped, so nothing it writes can follow the answer on the wire.
            if conn.in_flight:
                conn.disconnect_app()
            if conn.response_started:
                transport.close()
                return
        if hit is not None:
            text = f"{http.HTTPStatus(hit.status).phrase}: {hit.why}\n".encode()
            transport.write(plain_answer(hit.status, text, header_lines(conn.default_headers)))
        if not transport.can_write_eof():
            transport.close()
            return
        try:
            transport.write_eof()
        except OSError:
            transport.close()
            return
        conn.loop.call_later(_LINGER_SECONDS, transport.close)
