"""One HTTP/1.x connection of the inline WSGI engine: parse with httptools, answer on the loop, write without
blocking. One whose first bytes are the HTTP/2 preface, or whose first request asks for ``Upgrade: h2c``, leaves the
loop for the engine's HTTP/2 side (``to_http2``).

Requests are parsed with httptools' callback parser into ``Request`` objects, queued in order (pipelining),
and answered one at a time: a request whose body is all here is answered right away on the loop's thread
(``wsgi.input`` a BytesIO); one whose body is still coming (more than 64 KiB of it, or ``Expect:
100-continue``) is handed to an upload thread (adapters.engine.upload) that owns the connection until its
response is written, so that a slow upload never holds up the loop.

Writes never block the loop: what the socket does not take is kept, the loop waits for writability, and
neither the app's iterable nor the next pipelined request is touched until it is out. Reading pauses while
a response is held up, so that a client that does not read cannot make the worker buffer without end.

Input limits (adapters.limits) apply as bytes arrive: a request head's size before the parser sees it (414,
431), its line, field count and field size once parsed (414, 431), Content-Length and body bytes (413), and
the head clock (408), checked by the engine's once-a-second sweep; a connection's first request takes a place of
--limit-concurrency or is answered 503 (adapters.admission). A refused request is answered, the
sending side shut, and what the client still sends is read and dropped for a moment ("lingering close").
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from typing import IO, Any, Protocol

import httptools
from clusterrun.adapters.admission import Admission
from clusterrun.adapters.deadline import TimedGate
from clusterrun.adapters.engine.reactor import SelectorLoop
from clusterrun.adapters.engine.respond import Framing, Response, SendFile, call, error_head
from clusterrun.adapters.limits import Exceeded, Limits, check_head, check_trailers, measure_head
from clusterrun.adapters.methods import stand_in
from clusterrun.adapters.wsgi_app import Environ, WSGIApp

__all__ = ["Connection", "Engine", "Refused", "Request"]

# As much as asyncio and uvloop read at once: a head past its limit is then seen whole in one read. Read into
# one buffer the engine keeps (a fresh 256 KiB bytes object per recv() costs an mmap and munmap).
_READ = 256 * 1024
_PREREAD_LIMIT = 64 * 1024  # a body up to this is read on the loop before the app is called (uvicorn's window)
_STEPS_PER_TURN = 16  # chunks of one streamed response written before other connections get a turn
_LINGER_SECONDS = 2.0
# HTTP/2: a connection whose first bytes are the HTTP/2 preface (h2c with prior knowledge; httptools stops on
# its head, "PRI * HTTP/2.0") is handed over with them to the engine's HTTP/2 side (adapters.stack.inline_h2).
# Where h2 is not installed (the engine's ``http2`` is None), such a client is answered the way RFC 9113 3.3 and
# 9.2.3 allow, in HTTP/2: an empty SETTINGS frame (the server's preface), then GOAWAY with last-stream-id 0 and
# HTTP_1_1_REQUIRED (0xd), then the close. Two fixed frames, so spelt out here.
_H2_PREFACE_HEAD = b"PRI * HTTP/2.0\r\n\r\n"
_H2_REFUSAL = (b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # SETTINGS, length 0, stream 0
               b"\x00\x00\x08\x07\x00\x00\x00\x00\x00"  # GOAWAY, length 8, stream 0
               b"\x00\x00\x00\x00\x00\x00\x00\x0d")  # last-stream-id 0, HTTP_1_1_REQUIRED
_H2_REFUSED = Exceeded(505, "an HTTP/2 client (h2c prior knowledge), and h2 is not installed: "
                            "pip install 'clusterrun[http2]'")
_LINGER_BYTES = 1024 * 1024
# Pipelining: a read larger than this is parsed a slice at a time while fewer than _QUEUE_LIMIT requests wait,
# the rest kept unparsed, reading paused; requests are answered _ANSWERS_PER_TURN at a time between turns of
# the loop. A small request in one read (the common case) is parsed whole, as it came.
_FEED_SLICE = 16 * 1024
_QUEUE_LIMIT = 64
_ANSWERS_PER_TURN = 64
# A chunk's size line (with its extensions) or a trailer field may be this long: gunicorn's limit on a header
# field. The parser bounds neither (4.8 GB of one chunk extension were taken in 15 s).
_FRAMING_LINE = 8190


def _after_preface_head(data: bytes) -> bytes:
    """The HTTP/2 preface and what follows it, from the read on which the parser stopped at the preface's head
    (which may have begun in an earlier read: rebuilt from the part of it this read holds)."""
    found = data.find(_H2_PREFACE_HEAD)
    if found >= 0:
        return data[found:]
    for start in range(1, len(_H2_PREFACE_HEAD)):
        if data.startswith(_H2_PREFACE_HEAD[start:]):
            return _H2_PREFACE_HEAD + data[len(_H2_PREFACE_HEAD) - start:]
    return _H2_PREFACE_HEAD + data


class Engine(Protocol):
    """What a connection needs of its engine (adapters.engine.server.WSGIEngine), and all it may use of it.

    Declared here, beside its consumers (this module, adapters.engine.tls and adapters.engine.upload), so that
    none of them imports the engine: the server imports its connections, never the other way round.
    """

    loop: SelectorLoop
    app: WSGIApp
    limits: Limits
    admission: Admission  # --limit-concurrency's places, taken at a connection's first request
    gate: threading.Lock | TimedGate  # held while app code runs (stamped with --request-timeout)
    read_buffer: bytearray  # every recv() on the loop's thread lands here first
    server_head: bytes  # the Server, Date and --header lines of every response, refreshed each second
    closing_all: bool  # draining: every response says Connection: close
    on_response: Callable[..., object] | None  # the access log and --metrics, told of each response
    http2: Callable[[Any], Any] | None  # HTTP/2 is served (to_http2), or None
    total_requests: int  # counted up by the connection (on the loop) or its upload thread
    uploading: int  # requests being answered by upload threads

    def environ(self, conn: Connection, request: Request, stream: IO[bytes] | Any, size: int) -> Environ:
        """The request's WSGI environ."""
        ...

    def hand_over(self, conn: Connection, request: Request) -> None:
        """Give a request whose body is still coming to an upload thread (or refuse it 503)."""

    def served(self, conn: Connection, request: Request, framing: Framing, began: float) -> None:
        """Tell ``on_response`` of one response."""

    def log_refusal(self, peer: Any, hit: Exceeded) -> None:
        """Log a refused request (once per refusal)."""

    def began(self) -> None:
        """A request is being answered."""

    def ended(self) -> None:
        """A request's answer ended."""

    def closed(self, conn: Connection) -> None:
        """``conn`` closed: the engine forgets it."""

    def to_http2(self, conn: Connection, data: bytes, upgrade: Upgrade | None = None) -> None:
        """``conn`` left the loop for HTTP/2: served there from now on, ``data`` (read so far) first; ``upgrade``:
        the ``Upgrade: h2c`` request to answer 101, then on stream 1."""


class Refused(Exception):
    """A request the connection must refuse: ``hit`` names the limit it broke (None: the parser rejected it)."""

    def __init__(self, hit: Exceeded | None, preface: bool = False, upgrade: Upgrade | None = None,
                 rest: bytes = b"") -> None:
        super().__init__(hit.why if hit is not None else "malformed request")
        self.hit = hit
        # HTTP/2 is served and asked for: the connection began with its preface, or its first request is an
        # ``Upgrade: h2c`` (``rest``: what followed that request in the read). Not refused: handed over.
        self.preface = preface
        self.upgrade = upgrade
        self.rest = rest


# An ``Upgrade: h2c`` request as the HTTP/2 side takes it: HTTP2-Settings, the method, the target, the other fields.
Upgrade = tuple[bytes, bytes, bytes, list[tuple[bytes, bytes]]]


class Request:
    """One parsed request head and its body as it arrives."""

    __slots__ = ("body", "body_size", "client", "complete", "continue_", "headers", "keep_alive", "method", "url",
                 "version")

    def __init__(self, method: bytes, url: bytes, version: str, headers: list[tuple[bytes, bytes]],
                 keep_alive: bool) -> None:
        self.method, self.url, self.version, self.headers = method, url, version, headers
        self.keep_alive = keep_alive
        self.body: list[bytes] = []
        self.body_size = 0
        self.complete = False
        self.continue_ = False  # Expect: 100-continue, not answered yet
        self.client: tuple[str, int] | None = None  # the client a trusted proxy named (adapters.proxy)


class Connection:
    """One client connection; the engine owns the set of them."""

    # The flags of the loop's reads and writes: the socket stays in blocking mode (setting it non-blocking is
    # one more system call per connection), and each call on the loop's thread says not to wait. A socket that
    # takes no flags (TLS) is made non-blocking instead and sets this to 0.
    dontwait: int = socket.MSG_DONTWAIT
    # close() deletes the parser; a class compiled by mypyc allows ``del`` only of the attributes listed here.
    __deletable__ = ("parser",)

    # The state every new connection starts in, as class attributes: a connection sets only what it changes,
    # and one that lives for a single request (a new connection per request) changes little of it. Each is
    # replaced on the instance, never changed in place, so none is shared between connections.
    url = b""
    parsing: Request | None = None  # the request whose body is being parsed
    out: bytes | bytearray = b""  # written, not yet taken by the socket (a bytearray once something waits)
    response: Response | None = None  # a response being written
    framing: Framing | None = None
    request: Request | None = None  # the request being answered on the loop
    began = 0.0  # when its answer began (only measured for on_response)
    file: SendFile | None = None  # a file being sent with sendfile
    reading = False  # registered for reading
    sent_before = False  # a write happened
    nodelay = False  # TCP_NODELAY is set (one name per line: mypyc refuses a chained one)
    handed = False  # an upload thread owns the connection
    closing = False  # close once the response in flight is out
    closed = False
    rejected = False  # refused: reading and dropping what still comes, then closing
    admitted = False  # holds a place of --limit-concurrency (from its first request until it closes)
    discarded = 0
    framing_run = 0  # bytes of a body received since its last body data, chunk or trailer field
    extension: bytes | None = None  # the method of the request being parsed, when the parser was shown GET
    unparsed = b""  # received, not parsed yet: the queue was long (pipelining)
    refusal: Refused | None = None  # what follows the queued requests was refused: said after them
    head_size = 0  # bytes of the open request head so far
    head_tail = b""
    line_seen = False
    idle_since: float | None = None  # kept alive with nothing going on since then
    environ_keys: dict[str, str] | None = None  # its addresses as environ keys (adapters.engine.server)
    proxied = False  # its peer is a trusted proxy (adapters.proxy), with environ_keys

    def __init__(self, engine: Engine, sock: socket.SocketType, peer: Any, local: Any) -> None:
        self.engine = engine
        self.sock = sock
        self.fd = sock.fileno()
        self.peer, self.local = peer, local  # addresses; None until asked (adopted connections)
        self.parser = httptools.HttpRequestParser(self)
        self.queue: deque[Request] = deque()
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_since: float | None = engine.loop.time()  # the head clock: a fresh connection owes a head

    # httptools' callbacks (called inside parser.feed_data).

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.parsing is None:
            # The parser keeps a field value's trailing whitespace (RFC 9110 5.5: not part of the value).
            self.headers.append((name.lower(), value.rstrip(b" \t")))
            return
        # A trailer field (after a chunked body): never a header of the request, nor a proxy's word; the fields
        # that would change its routing, framing or credentials are refused, as gunicorn does (RFC 9110 6.5.1).
        self.framing_run = 0
        hit = check_trailers([(name.lower(), value)])
        if hit is not None:
            raise hit

    def on_headers_complete(self) -> None:
        parser, headers, url = self.parser, self.headers, self.url
        method = parser.get_method()
        if self.extension is not None:  # an extension method the parser was shown as GET (extension_method)
            method, self.extension = self.extension, None
        version = parser.get_http_version()
        hit = check_head(self.engine.limits, method, url, headers, version)
        if hit is not None:
            raise hit
        if not self.admitted:  # the first request: a place of --limit-concurrency, or 503
            if not self.engine.admission.admit():
                raise self.engine.admission.refusal(self.peer_address())
            self.admitted = True
        request = Request(method, url, version, headers, parser.should_keep_alive())
        if method not in (b"GET", b"HEAD"):  # they carry no body in practice: spare them the scan
            for name, value in headers:
                if name == b"expect" and value.lower() == b"100-continue":
                    request.continue_ = True
        self.parsing = request
        self.queue.append(request)
        self.framing_run = 0
        self.head_since = None
        self.head_size = 0
        self.head_tail = b""
        self.line_seen = False

    def on_chunk_header(self) -> None:
        """A chunk's size line is parsed (only chunked bodies call this)."""
        self.framing_run = 0

    def on_body(self, body: bytes) -> None:
        self.framing_run = 0
        request = self.parsing
        assert request is not None
        request.body_size += len(body)
        limit = self.engine.limits.body
        if limit and request.body_size > limit:
            raise Exceeded(413, f"a body of more than {limit} bytes")
        request.body.append(body)

    def on_message_complete(self) -> None:
        request = self.parsing
        if request is not None:
            request.complete = True
            self.parsing = None

    # Reading.

    def start(self) -> None:
        """A new connection: serve what already came (the common case: the request came with the accept)."""
        try:
            data = self.recv()
        except BlockingIOError:
            self.resume_reading()
            return
        except OSError:
            self.close()
            return
        self.received(data)  # reading is resumed where there is something to read (serve)

    def recv(self) -> bytes:
        buffer = self.engine.read_buffer
        # The count in a local first: mypyc 2.4.1 evaluates a slice bound twice when it falls off its fast
        # path, and a second recv_into() would take the next bytes and lose the first.
        count = self.sock.recv_into(buffer, _READ, self.dontwait)
        return bytes(buffer[:count])

    def resume_reading(self) -> None:
        if not self.reading and not self.closed:
            self.reading = True
            self.engine.loop.add_reader(self.fd, self.on_readable)

    def pause_reading(self) -> None:
        if self.reading:
            self.reading = False
            self.engine.loop.remove_reader(self.fd)

    def on_readable(self) -> None:
        try:
            data = self.recv()
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        self.received(data)

    def received(self, data: bytes) -> None:
        if not data:  # the client closed its side: nothing more comes, answer nothing more
            self.close()
            return
        if self.rejected:
            self.discarded += len(data)
            if self.discarded > _LINGER_BYTES:
                self.close()
            return
        if len(data) > _FEED_SLICE:  # maybe many pipelined requests: parse no more than the queue may hold
            self.unparsed = data
            self.feed_unparsed()
        else:
            try:
                self.feed(data)
            except Refused as refused:
                if self.handed_to_http2(refused, data, b""):
                    return
                self.refuse(refused)
        self.serve()

    def feed_unparsed(self) -> None:
        """Parse what is kept unparsed, a slice at a time, until the queue is long: the rest waits for the queue
        to be answered (reading stays paused meanwhile), so that one connection never queues without bound."""
        data, queue = self.unparsed, self.queue
        start = 0
        try:
            while start < len(data) and len(queue) < _QUEUE_LIMIT:
                self.feed(data[start:start + _FEED_SLICE])
                start += _FEED_SLICE
        except Refused as refused:
            if self.handed_to_http2(refused, data[start:start + _FEED_SLICE], data[start + _FEED_SLICE:]):
                return
            self.refuse(refused)
            start = len(data)
        self.unparsed = data[start:]
        if self.unparsed:
            self.pause_reading()

    def refuse(self, refused: Refused) -> None:
        """The parser refused what follows the complete requests queued: those are answered first, then the
        refusal (or the connection closes, if one of them closes it)."""
        self.refusal = refused
        self.unparsed = b""
        self.pause_reading()
        if self.parsing is not None:  # the refused request itself, never answered
            self.queue.pop()
            self.parsing = None

    def feed(self, data: bytes) -> None:
        """Account for ``data`` and parse it; raises Refused for a request to refuse (thread-safe: no loop calls)."""
        if self.parsing is None:  # a head is open: its bytes are counted before the parser holds them
            self.idle_since = None
            if self.head_since is None:
                self.head_since = self.engine.loop.time()
            size = self.head_size + len(data)
            if size > self.engine.limits.request_line:  # below it, a head can have broken no limit
                hit = measure_head(self.engine.limits, self.head_tail, data, self.head_size, self.line_seen)
                if hit is not None:
                    raise Refused(hit)
            self.head_size = size
            self.head_tail = data[-2:]
            self.line_seen = self.line_seen or b"\n" in data
            fresh = size == len(data)  # data begins a request head (a method, when it is one)
        else:
            # A body: reads that bring no body data, chunk or trailer field are a chunk's size line or a trailer
            # field growing (the callbacks set the count back to 0); the parser bounds neither, and a chunk
            # extension can be endless. Counted per read: a line may outgrow the bound by one read.
            self.framing_run += len(data)
            fresh = False
        while True:
            try:
                self.parser.feed_data(data)
                break
            except httptools.HttpParserUpgrade as exc:
                upgrade = self.h2c_upgrade()
                if upgrade is not None:
                    raise Refused(None, upgrade=upgrade, rest=data[exc.args[0]:] if exc.args else b"") from exc
                self.closing = True  # no WebSocket in WSGI: answered as HTTP, then the connection closed
                break
            except httptools.HttpParserCallbackError as exc:
                cause = exc.__context__
                raise Refused(cause if isinstance(cause, Exceeded) else None) from exc
            except httptools.HttpParserInvalidMethodError as exc:
                rest = self.extension_method(data, fresh)
                if rest is None:
                    raise Refused(None) from exc
                data, fresh = rest, True
            except httptools.HttpParserError as exc:
                if not self.admitted and self.parser.get_method() == b"PRI":  # the connection began as HTTP/2
                    if self.engine.http2 is not None:
                        raise Refused(None, preface=True) from exc
                    raise Refused(_H2_REFUSED) from exc
                raise Refused(None) from exc
        if self.framing_run > _FRAMING_LINE and self.parsing is not None:
            raise Refused(Exceeded(400, f"a chunk size line or trailer field longer than {_FRAMING_LINE} bytes"))

    def extension_method(self, data: bytes, fresh: bool) -> bytes | None:
        """The parser refused a method it does not know (it knows only registered ones): when the method is one
        gunicorn takes too (adapters.methods), what is left of ``data`` from that request on, with a stand-in
        in its place, to feed a new parser (the method itself is restored for the request by
        on_headers_complete); None when it must be refused. Only when ``data`` begins a head (``fresh``):
        requests before that one in it ended there.
        """
        found = stand_in(data) if fresh else None
        if found is None:
            return None
        _begin, rest, self.extension = found
        self.parser = httptools.HttpRequestParser(self)
        return rest

    # Answering, one request at a time, in order.

    def serve(self) -> None:
        """Answer queued requests until one is held up (streamed, blocked, uploading) or none is ready.

        A loop, never a recursion: each request answered in full returns here (10,000 pipelined requests in one
        write are 10,000 turns of it). After _ANSWERS_PER_TURN of them the loop lets other connections have a
        turn, with reading paused, so that a connection's queue only shrinks meanwhile.
        """
        queue = self.queue
        answered = 0
        while self.response is None and not self.out and not self.handed and not self.closed:
            if not queue:
                if not self.unparsed or self.closing:
                    break
                self.feed_unparsed()
                continue
            request = queue[0]
            if not request.complete:
                if self.unparsed:  # its body may be there already
                    self.feed_unparsed()
                    continue
                if request.continue_ or request.body_size > _PREREAD_LIMIT:
                    queue.popleft()
                    self.engine.hand_over(self, request)
                else:
                    self.resume_reading()  # the rest of its body comes on the loop
                return
            if answered == _ANSWERS_PER_TURN:
                self.pause_reading()
                self.engine.loop.call_soon(self.serve)
                return
            queue.popleft()
            answered += 1
            if not self.answer(request):
                return
        if not queue and self.response is None and not self.out and not self.handed:
            self.done()

    def answer(self, request: Request) -> bool:
        """Call the app for ``request`` and write its response; True once it is all produced and written (the
        caller takes the next request), False while it is held up or the connection closed."""
        engine = self.engine
        body = request.body
        stream = io.BytesIO(body[0] if len(body) == 1 else b"".join(body))
        environ = engine.environ(self, request, stream, request.body_size)
        self.framing = framing = Framing(engine.server_head, request.method == b"HEAD", request.version == "1.1",
                                         request.keep_alive and not self.closing and not engine.closing_all)
        engine.total_requests += 1
        self.request = request
        engine.began()
        if engine.on_response is not None:
            self.began = time.perf_counter()
        with engine.gate:  # app code: one place at a time, also with an upload thread running app code
            produced = call(engine.app, environ, framing)
        if type(produced) is bytes:  # the whole response at once (respond.call says when): one write, no generator
            if produced and not self.write(produced):
                return False
            return self.finish()
        self.response = produced  # type: ignore[assignment]
        return self.pump()

    def pump(self) -> bool:
        """Write the response in flight, a few chunks per turn; pause where the socket is full.

        True once the response is all produced and written (the caller takes the next request); False while it
        is held up (the writable socket resumes it) or the connection closed.
        """
        response, gate = self.response, self.engine.gate
        assert response is not None
        for _ in range(_STEPS_PER_TURN):
            if self.closed:  # the client left
                return False
            if self.out or self.file is not None:
                self.wait_writable()
                return False
            with gate:  # app code: one place at a time, also with an upload thread running app code
                try:
                    piece = next(response, None)
                except Exception:
                    piece = None
                    self.closing = True
            if piece is None:
                return self.finish()
            if type(piece) is SendFile:
                self.file = piece
                self.sock.setblocking(False)  # sendfile takes no flags: the descriptor itself must not wait
                self.send_file()
            elif not self.write(piece):  # type: ignore[arg-type]
                return False
        self.wait_writable()
        return False

    def write(self, data: bytes) -> bool:
        """Send ``data``, keeping what the socket does not take; False if the connection broke."""
        if self.out:
            self.out += data  # a bytearray: grown in place
            return True
        if self.sent_before and not self.nodelay:
            self.no_delay()
        self.sent_before = True
        try:
            sent = self.sock.send(data, self.dontwait)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.close()
            return False
        if sent < len(data):
            self.out = bytearray(data[sent:])
        return True

    def no_delay(self) -> None:
        """Turn Nagle's algorithm off before a connection's second write: its first cannot be held back (nothing
        is unacknowledged before it), so a connection with one request and one write never pays the call."""
        self.nodelay = True
        if self.sock.family != socket.AF_UNIX:
            with contextlib.suppress(OSError):
                self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send_file(self) -> None:
        part = self.file
        assert part is not None
        if not self.nodelay:
            self.no_delay()  # the file follows the head: a second write
        while part.count:
            try:
                sent = os.sendfile(self.fd, part.fd, part.offset, part.count)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.close()
                return
            if not sent:
                break  # the file shrank: the response falls short and the connection must close
            part.offset += sent
            part.count -= sent
        if part.count and self.framing is not None:
            self.framing.keep_alive = False
        self.file = None

    def wait_writable(self) -> None:
        self.pause_reading()
        self.engine.loop.add_writer(self.fd, self.on_writable)

    def on_writable(self) -> None:
        out = self.out
        if out:
            try:
                sent = self.sock.send(out, self.dontwait)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.close()
                return
            assert isinstance(out, bytearray)  # not empty: write() made it one
            del out[:sent]
            if out:
                return
        if self.file is not None:
            self.send_file()
            if self.file is not None or self.closed:
                return
        self.engine.loop.remove_writer(self.fd)
        if self.response is None or self.pump():
            self.serve()

    def finish(self) -> bool:
        """The response is all produced: whether it is all written too (else the socket's writability resumes)."""
        framing, request = self.framing, self.request
        self.response = self.framing = self.request = None
        self.engine.ended()
        if request is not None and framing is not None and self.engine.on_response is not None:
            self.engine.served(self, request, framing, self.began)
        if framing is None or not framing.keep_alive:
            # The response said the connection closes: requests pipelined after it are never answered.
            self.closing = True
            self.queue.clear()
            self.unparsed = b""
        if self.out:
            self.wait_writable()
            return False
        return True

    def done(self) -> None:
        """Nothing in flight and nothing written but unsent: close, refuse, or wait for the next request."""
        if self.closing or self.closed:
            self.close()
            return
        if self.refusal is not None:
            self.reject(self.refusal.hit)
            return
        if self.parsing is None and self.head_size == 0:
            self.idle_since = self.engine.loop.time()
        else:
            self.head_since = self.engine.loop.time()  # a head that waited for the response is on time so far
        self.resume_reading()

    def handed_back(self, hit: Exceeded | None, refuse: bool, keep_alive: bool) -> None:
        """An upload thread is done with the connection: answer a refusal, close, or serve what came next."""
        self.handed = False
        self.engine.ended()
        self.engine.uploading -= 1
        if self.closed:
            return
        if refuse:
            self.reject(hit)
        elif not keep_alive:
            self.close()
        else:
            self.serve()

    # Refusing and closing.

    def reject(self, hit: Exceeded | None) -> None:
        """Answer a refused request (400 for what the parser rejected), then close lingering."""
        self.queue.clear()
        self.rejected = True
        self.head_since = None
        status, why = (hit.status, hit.why) if hit is not None else (400, "")
        if hit is not None:
            self.engine.log_refusal(self.peer_address(), hit)
        if self.response is not None:  # the app was called for this request: its answer is cut short
            self.close()
            return
        if hit is _H2_REFUSED:
            self.write(_H2_REFUSAL)
            self.close()
            return
        text = f"{HTTPStatus(status).phrase}: {why}\n".encode() if why else b"Invalid HTTP request received.\n"
        self.write(error_head(self.engine.server_head, status, text))
        if self.closed:
            return
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self.close()
            return
        self.resume_reading()
        self.engine.loop.call_later(_LINGER_SECONDS, self.close)

    def h2c_upgrade(self) -> Upgrade | None:
        """The request just parsed as the HTTP/2 side takes it, where it asks for ``Upgrade: h2c`` (RFC 7540 3.2)
        and can have it: HTTP/2 is served, it is the connection's only request, with HTTP2-Settings and no body
        (one would have to be read in HTTP/1.1 first: such a request is answered in HTTP/1.1, as the RFC allows)."""
        queue = self.queue
        if self.engine.http2 is None or len(queue) != 1 or self.sent_before or self.response is not None:
            return None
        request = queue[0]
        settings = upgrade = None
        connection: list[bytes] = []
        for name, value in request.headers:
            if name == b"http2-settings":
                settings = value
            elif name == b"upgrade":
                upgrade = value.strip().lower()
            elif name == b"connection":
                connection += [token.strip().lower() for token in value.split(b",")]
            elif name == b"transfer-encoding" or (name == b"content-length" and value.strip() != b"0"):
                return None
        if settings is None or upgrade != b"h2c" or b"upgrade" not in connection or not request.complete:
            return None
        kept = [(name, value) for name, value in request.headers
                if name not in (b"connection", b"upgrade", b"http2-settings")]
        return settings, request.method, request.url, kept

    def handed_to_http2(self, refused: Refused, data: bytes, after: bytes) -> bool:
        """HTTP/2 asked for, by the preface at the connection's start or an ``Upgrade: h2c`` request: the
        connection leaves for it (``data``: the read the parser stopped in; ``after``: what followed it unparsed).
        Whether it did."""
        if refused.preface:
            self.to_http2(_after_preface_head(data) + after)
            return True
        if refused.upgrade is not None:
            self.to_http2(refused.rest + after, refused.upgrade)
            return True
        return False

    def to_http2(self, data: bytes, upgrade: Upgrade | None = None) -> None:
        """Leave this engine's loop for HTTP/2 (its first bytes, ALPN h2, or an ``Upgrade: h2c`` request): the
        socket stays open, served by the engine's HTTP/2 side; to this loop the connection is closed. Nothing is in
        flight: no request was answered here."""
        self.closed = True
        self.queue.clear()
        loop = self.engine.loop
        if self.reading:
            self.reading = False
            loop.remove_reader(self.fd)
        loop.remove_writer(self.fd)
        del self.parser
        if self.admitted:  # the upgrade request took a place of --limit-concurrency: HTTP/2 has its own limits
            self.admitted = False
            self.engine.admission.release()
        self.engine.to_http2(self, data, upgrade)

    def peer_address(self) -> Any:
        if self.peer is None:
            try:
                self.peer = self.sock.getpeername()
            except OSError:
                self.peer = ""
        return self.peer

    def local_address(self) -> Any:
        if self.local is None:
            try:
                self.local = self.sock.getsockname()
            except OSError:
                self.local = ""
        return self.local

    @property
    def idle(self) -> bool:
        """Nothing of a request here: closing now races nothing but a request not yet sent."""
        return (not self.queue and not self.unparsed and self.response is None and not self.out and self.file is None
                and not self.handed and self.parsing is None and self.head_size == 0)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        response, self.response = self.response, None
        if self.request is not None:  # a request being answered on the loop: its answer ends here
            self.request = None
            self.engine.ended()
        if response is not None:
            with self.engine.gate:
                response.close()  # closes the app's iterable: app code
        loop = self.engine.loop
        if self.reading:
            loop.remove_reader(self.fd)
        loop.remove_writer(self.fd)
        # The parser holds this connection's bound methods, a cycle that only the cyclic garbage collector would
        # free: without it, reference counting frees the connection now (about 3 us a connection, measured).
        # Nothing parses after close: the loop no longer reads it, and an upload thread has given it back.
        del self.parser
        self.sock.close()
        if self.admitted:
            self.engine.admission.release()
        self.engine.closed(self)
