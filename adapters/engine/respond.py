"""One WSGI response as the bytes to write, framed for HTTP/1.x: ``call`` calls the app and gives them.

Most apps give their body as a list, and frameworks an iterable whose first chunk holds its declared length:
``call`` then returns the whole response, head and body, as one bytes object to write in one send. Any other
iterable gets a generator: whoever drives it (the inline engine's loop) runs each ``next()`` as app code (each
step of the iterable, ``close()``) and writes what it yields: the head joined with the first body chunk, then
each further chunk, framed as chunked transfer coding when the app gave no Content-Length on an HTTP/1.1
connection. Closing the generator (the client left, the drain cut the connection) closes the app's iterable.
``respond`` is the same as one generator, for an upload's thread.

``Framing`` carries what the connection knows (HEAD, HTTP/1.0, keep-alive) in, and out what it must do after
(keep the connection, or close it because the response had no length, said ``Connection: close``, or broke
off: a response cut short is never passed off as whole).
"""

from __future__ import annotations

import http
import os
import stat
from collections.abc import Callable, Generator, Iterable, Sequence
from itertools import chain
from typing import Any

from clusterrun.adapters.limits import plain_answer
from clusterrun.adapters.wsgi_app import Environ, Exchange, FileWrapper, WSGIApp, body_chunks, log_app_error
from clusterrun.adapters.wsgi_input import ClientDisconnected

__all__ = ["Framing", "Response", "SendFile", "call", "error_head", "respond"]

Response = Generator["bytes | SendFile", None, None]

_NO_BODY = frozenset((204, 304))
_PHRASES = {status.value: status.phrase.encode() for status in http.HTTPStatus}


class Framing:
    """How one response is framed on its connection, and whether the connection stays open after it."""

    __slots__ = (
        "bodiless", "body_unread", "chunked", "head_only", "headers", "http11", "keep_alive", "server_head", "size",
        "status",
    )

    def __init__(self, server_head: bytes, head_only: bool, http11: bool, keep_alive: bool) -> None:
        self.server_head = server_head  # the Server and Date lines every response carries
        self.head_only = head_only  # HEAD: no body goes out
        self.bodiless = head_only  # no body goes out: HEAD, or a status that has none (1xx, 204, 304)
        self.http11 = http11
        self.keep_alive = keep_alive  # in: the client's and the drain's wish; out: the connection stays open
        self.chunked = False
        self.status = 0  # the status sent, once the head went out
        self.size = 0  # body bytes sent (before chunked framing)
        self.headers: Sequence[tuple[bytes, bytes]] = ()  # the app's headers, once the head went out (access log)
        # Asked when the head goes out: true while the request's body is not all read (the connection then
        # cannot carry another request, and the head says so).
        self.body_unread: Callable[[], bool] | None = None

    def head(self, exchange: Exchange, length: int | None) -> bytes:
        """The status line and headers; decides the body's framing and the connection's fate."""
        status, headers = exchange.status, exchange.headers
        assert headers is not None
        self.status, self.headers = status, headers
        self.bodiless = self.head_only or status < 200 or status in _NO_BODY
        keep = self.keep_alive and not (self.body_unread is not None and self.body_unread())
        for name, value in headers:
            if len(name) == 10 and name.lower() == b"connection" and b"close" in value.lower():
                keep = False
        # The request's own version, as gunicorn answers (an HTTP/1.0 client is told HTTP/1.0).
        lines = [(b"HTTP/1.1 %d %s\r\n" if self.http11 else b"HTTP/1.0 %d %s\r\n")
                 % (status, exchange.reason.encode("latin-1") or _PHRASES.get(status, b"")),
                 self.server_head]
        lines += [name + b": " + value + b"\r\n" for name, value in headers]
        if exchange.length is None:
            if length is not None and status >= 200 and status not in _NO_BODY:
                lines.append(b"content-length: %d\r\n" % length)
            elif self.bodiless:
                pass  # no body follows, so no framing is needed
            elif self.http11:
                self.chunked = True
                lines.append(b"transfer-encoding: chunked\r\n")
            else:
                keep = False  # HTTP/1.0 with no length: the body ends where the connection does
        if not keep:
            lines.append(b"connection: close\r\n")
        elif not self.http11:
            lines.append(b"connection: keep-alive\r\n")
        self.keep_alive = keep
        lines.append(b"\r\n")
        return b"".join(lines)

    def body(self, chunk: bytes) -> bytes:
        if self.bodiless:
            return b""
        self.size += len(chunk)
        return b"%x\r\n%s\r\n" % (len(chunk), chunk) if self.chunked else chunk


def status_has_body(status: int) -> bool:
    return status >= 200 and status not in _NO_BODY


def error_head(server_head: bytes, status: int, text: bytes, framing: Framing | None = None) -> bytes:
    """A whole plain-text answer that closes the connection (500 from a failed app, a refused request)."""
    if framing is not None:
        framing.status, framing.size = status, len(text)
    return plain_answer(status, text, server_head)


def call(app: WSGIApp, environ: Environ, framing: Framing) -> bytes | Response:
    """Call ``app``: its whole response as bytes when nothing of it is left to make, else a generator of the bytes
    to come. Whole: a body given as a list or tuple (what most plain WSGI apps do), or an iterable whose
    Content-Length was declared and whose first chunk holds all of it (what Flask and most frameworks give).
    ``framing.keep_alive`` says after what comes next. App code: the caller holds the gate."""
    exchange = Exchange()
    try:
        result = app(environ, exchange.start_response)
        if type(result) in (list, tuple) and not framing.head_only:
            return _whole(exchange, result, framing)  # type: ignore[arg-type]
    except ClientDisconnected:
        framing.keep_alive = False  # the client left while the app read its body: nobody to answer
        return b""
    except Exception as exc:
        return _failed(environ, exc, exchange, framing)
    if exchange.length is None or framing.head_only or type(result) is FileWrapper or exchange.pending:
        return _rest(environ, exchange, result, result, framing)
    return _first(environ, exchange, result, framing)


def _first(environ: Environ, exchange: Exchange, result: Iterable[bytes], framing: Framing) -> bytes | Response:
    """An iterable that declared its length: its first chunk is asked for at once (the driver would ask for it
    first anyway); when it holds the whole body, the whole response as bytes, the iterable closed."""
    length = exchange.length
    assert length is not None
    try:
        try:
            chunks = iter(result)
            chunk = next(chunks, None)
        except BaseException:
            _close(result)
            raise
        if type(chunk) is bytes and len(chunk) >= length:
            try:
                return _whole(exchange, (chunk,), framing)
            finally:
                _close(result)
    except ClientDisconnected:
        framing.keep_alive = False
        return b""
    except Exception as exc:
        return _failed(environ, exc, exchange, framing)
    # More is to come (or an empty or bad chunk, which _stream judges): the rest as it is made, this chunk first.
    return _rest(environ, exchange, chunks if chunk is None else chain((chunk,), chunks), result, framing)


def _close(result: Iterable[bytes]) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()


def respond(app: WSGIApp, environ: Environ, framing: Framing) -> Response:
    """The same as one generator, the app called at its first step (an upload's thread drives it so)."""
    produced = call(app, environ, framing)
    if type(produced) is bytes:
        if produced:
            yield produced
    else:
        yield from produced  # type: ignore[misc]


def _rest(environ: Environ, exchange: Exchange, chunks: Iterable[bytes], result: Iterable[bytes],
          framing: Framing) -> Response:
    """The response of an app whose body is another iterable (``result``; ``chunks`` what is left of it), made as
    the driver asks for it; closing the generator closes the iterable."""
    try:
        try:
            if not (type(result) is FileWrapper and (yield from _send_file(exchange, result, framing))):
                yield from _stream(exchange, chunks, framing)
        finally:
            _close(result)
    except ClientDisconnected:
        framing.keep_alive = False
    except Exception as exc:
        # Only app code raises in here: the driver writes outside this generator, and its close() raises
        # GeneratorExit, which is no Exception.
        failed = _failed(environ, exc, exchange, framing)
        if failed:
            yield failed


def _failed(environ: Environ, exc: Exception, exchange: Exchange, framing: Framing) -> bytes:
    """The app raised: log it, close the connection after, and answer 500 if nothing of the response went out."""
    log_app_error(environ, exc)
    framing.keep_alive = False
    return b"" if exchange.started else error_head(framing.server_head, 500, b"Internal Server Error", framing)


def _whole(exchange: Exchange, result: list[bytes] | tuple[bytes, ...], framing: Framing) -> bytes:
    """A body known up front: one blob with its head and a Content-Length (cut to the app's, as gunicorn)."""
    body = b"".join(chain(exchange.pending, result)) if exchange.pending else b"".join(result)
    if exchange.headers is None:
        raise RuntimeError("the WSGI app returned its body before calling start_response()")
    exchange.started = True
    length = exchange.length
    if length is not None and len(body) != length and status_has_body(exchange.status):
        if len(body) < length:
            framing.keep_alive = False  # fewer bytes than announced: only closing tells the client
        body = body[:length]
    head = framing.head(exchange, len(body))
    if framing.bodiless:
        return head
    framing.size = len(body)
    return head + body


def _stream(exchange: Exchange, result: Iterable[bytes], framing: Framing) -> Response:
    """Any other iterable: the head waits for the first non-empty chunk (PEP 3333), each chunk goes as made."""
    remaining = None
    for chunk in body_chunks(result, exchange.pending):
        head = b""
        if not exchange.started:
            if exchange.headers is None:
                raise RuntimeError("the WSGI app produced body data before calling start_response()")
            exchange.started = True
            head = framing.head(exchange, None)
            remaining = exchange.length
        if remaining is not None:
            if len(chunk) >= remaining:  # Content-Length reached: the rest is cut, iteration stops
                yield head + framing.body(chunk[:remaining])
                return
            remaining -= len(chunk)
        yield head + framing.body(chunk)
    yield from _end(exchange, framing, remaining)


def _end(exchange: Exchange, framing: Framing, remaining: int | None) -> Response:
    if not exchange.started:  # an empty body: the head alone
        if exchange.headers is None:
            raise RuntimeError("the WSGI app returned without calling start_response()")
        exchange.started = True
        head = framing.head(exchange, None if framing.head_only else 0)
        remaining = exchange.length
        if remaining and not framing.bodiless:
            framing.keep_alive = False
        yield head
        return
    if remaining and not framing.bodiless:
        framing.keep_alive = False  # the body fell short of its Content-Length: close, so that it shows
    if framing.chunked:
        yield b"0\r\n\r\n"


class SendFile:
    """``count`` bytes of the open file ``fd`` from ``offset``, for the driver to send with ``os.sendfile``."""

    __slots__ = ("count", "fd", "offset")

    def __init__(self, fd: int, offset: int, count: int) -> None:
        self.fd, self.offset, self.count = fd, offset, count


def _file_part(result: FileWrapper, exchange: Exchange) -> SendFile | None:
    """The part of a ``wsgi.file_wrapper`` file to send with sendfile; None if it is no plain file."""
    filelike: Any = result.filelike
    try:
        fd, offset = filelike.fileno(), filelike.tell()
        size = os.fstat(fd).st_size
    except (AttributeError, OSError, ValueError):
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        return None
    count = max(0, size - offset)
    if exchange.length is not None:
        count = min(count, exchange.length)
    return SendFile(fd, offset, count)


def _send_file(exchange: Exchange, result: FileWrapper, framing: Framing) -> Generator[bytes | SendFile, None, bool]:
    """The head, then the file through sendfile; False (nothing yielded) when the file cannot go that way."""
    if exchange.headers is None or framing.head_only or not status_has_body(exchange.status):
        return False
    part = _file_part(result, exchange)
    if part is None:
        return False
    exchange.started = True
    yield framing.head(exchange, part.count)
    if exchange.length is not None and part.count < exchange.length:
        framing.keep_alive = False
    framing.size = part.count
    if part.count:
        yield part
    return True
