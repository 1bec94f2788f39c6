"""Input limits on a request, engine-neutral: the bounds (``Limits``), the checks of a request head as its bytes
arrive and once it is parsed, the framing rules of HTTP/1.x, and the refusal they raise (``Exceeded``).

Both engines call these: the inline engine (adapters.engine.connection) and uvicorn's stack, through its guard
(adapters.stack.guard). This module imports neither of them, nor uvicorn, nor asyncio: a worker on the inline
engine loads it without loading the stack.
"""

from __future__ import annotations

import http
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from clusterrun.adapters.methods import COMMON, conventional

__all__ = ["Exceeded", "Headers", "Limits", "check_framing", "check_head", "check_trailers", "head_end",
           "header_lines", "measure_head", "plain_answer"]

Headers = list[tuple[bytes, bytes]]  # (name, value) of a head's fields, as the parsers give them

@dataclass(frozen=True)
class Limits:
    """Per-request bounds; the worker builds them from its Config (clusterrun.worker.serving), README "Limits"."""

    request_line: int = 4094  # bytes of "METHOD TARGET HTTP/1.1", as gunicorn's limit_request_line: 414
    header_count: int = 100  # header fields, as gunicorn's limit_request_fields: 431
    header_field: int = 8190  # bytes of one field's name and value, as gunicorn's limit_request_field_size: 431
    head: int = 64 * 1024  # bytes of the whole head: what a parser may ever hold of one: 414 or 431
    head_timeout: float = 10.0  # seconds to receive a complete head: 408 and close
    body: int = 0  # bytes of a request body, 0 = no limit: 413
    concurrency: int = 0  # connections served at once, 0 = no limit: 503 (adapters.admission)
    body_timeout: float = 30.0  # seconds with no byte of a body still arriving: 408, or close once answering
    request_timeout: float = 0.0  # seconds an app may take over one request, 0 = no deadline (README "Limits")


class Exceeded(Exception):
    """A limit a request broke: the status to answer and why.

    Also what a guard's parser hooks raise on uvicorn's stack (the seam's ``RequestRefused``): the parser then
    fails and the refusal is answered instead of uvicorn's 400.
    """

    def __init__(self, status: int, why: str, logged: bool = False) -> None:
        super().__init__(why)
        self.status, self.why = status, why
        self.logged = logged  # already logged where it was found (adapters.admission): not once per refusal


def measure_head(limits: Limits, tail: bytes, data: bytes, before: int, line_seen: bool) -> Exceeded | None:
    """The limit a head breaks once ``data`` arrived, counted before any parser sees it; None if none.

    ``before``: the head's bytes before ``data``, of which ``tail`` are the last (a line end may straddle two
    reads); ``line_seen``: the request line is complete already. Shared by uvicorn's stack (adapters.stack.guard)
    and the inline engine (adapters.engine.connection).
    """
    buf = tail + data
    base = before - len(tail)  # the head offset of buf[0]
    if not line_seen:
        newline = buf.find(b"\n")
        line = base + (newline if newline >= 0 else len(buf))
        if line > limits.request_line + 1:  # + 1: the CR before the LF
            return Exceeded(414, f"a request line longer than {limits.request_line} bytes")
    end = head_end(buf)
    if base + (end if end >= 0 else len(buf)) > limits.head:
        return Exceeded(431, f"a request head longer than {limits.head} bytes")
    return None


def head_end(buf: bytes) -> int:
    """The offset just past the blank line that ends a head in ``buf``, or -1 (both parsers accept bare LF)."""
    crlf, lf = buf.find(b"\n\r\n"), buf.find(b"\n\n")
    if crlf < 0:
        return lf + 2 if lf >= 0 else -1
    return crlf + 3 if lf < 0 or crlf < lf else lf + 2


def check_head(limits: Limits, method: bytes, target: bytes, headers: Headers, version: str) -> Exceeded | None:
    """What a parsed head breaks of ``limits`` (request line 414, header count and size 431, Content-Length 413)
    and of HTTP's framing rules (400, ``check_framing``; header names lowercased); ``version`` as "1.1".

    One pass over the headers for both: this runs for every request.
    """
    if len(method) + len(target) + 10 > limits.request_line:  # 10: the two spaces and " HTTP/1.1"
        return Exceeded(414, f"a request line longer than {limits.request_line} bytes")
    if len(headers) > limits.header_count:
        return Exceeded(431, f"{len(headers)} header fields (the limit is {limits.header_count})")
    # gunicorn's limit_request_field_size counts the field's line: name, ": ", value and the CRLF.
    field_limit = limits.header_field - 4
    watched: Headers | None = None
    host = False
    for name, value in headers:
        if len(name) + len(value) > field_limit:
            return _line_too_long(limits, name, value)
        if name in _FRAMING_NAMES:
            if name == b"host" and not host:  # the one Host most requests have: nothing to keep
                host = True
            elif watched is None:
                watched = [(name, value)]
            else:
                watched.append((name, value))
    # Most requests: HTTP/1.1, a path, a common method, and of the watched fields one Host only.
    if watched is not None or version != "1.1" or target[:1] != b"/" or method not in COMMON:
        hit = check_framing(method, target, version, watched or [], host)
        if hit is not None:
            return hit
    if limits.body:
        for name, value in headers:
            if name.lower() == b"content-length" and value.strip().isdigit() and int(value) > limits.body:
                return Exceeded(413, f"a body of {int(value)} bytes (the limit is {limits.body})")
    return None


# Header fields whose duplicates or combinations make a request ambiguous (as gunicorn's message.py refuses).
_SINGLETONS = frozenset((b"host", b"content-type"))
_SECURE_VALUES = {b"x-forwarded-proto": b"https", b"x-forwarded-ssl": b"on", b"x-forwarded-protocol": b"ssl"}
_FRAMING_NAMES = frozenset((b"content-length", b"transfer-encoding", *_SINGLETONS, *_SECURE_VALUES))
# RFC 9110 6.5.1: fields that change routing, framing or authentication, never accepted in trailers.
# (Trailers never reach the app's headers anyway: this refuses what no honest client sends, as gunicorn does.)
_FORBIDDEN_TRAILERS = frozenset((b"host", b"content-length", b"transfer-encoding", b"trailer", b"authorization",
                                 b"te"))
_ABSOLUTE_TARGET = re.compile(rb"[A-Za-z][A-Za-z0-9+.-]*://[^/?#\s]+([/?][^#\s]*)?")


def _line_too_long(limits: Limits, name: bytes, value: bytes) -> Exceeded:
    size = len(name) + len(value) + 4
    return Exceeded(431, f"a header line of {size} bytes (the limit is {limits.header_field})")


def check_framing(method: bytes, target: bytes, version: str, headers: Headers, host: bool = False
                  ) -> Exceeded | None:
    """The 400 for a head whose framing or origin is ambiguous, as gunicorn refuses them; None if none.

    ``headers``: (lowercased name, value), at least those named in ``_FRAMING_NAMES``; ``host``:
    a Host field was seen besides those (another one in ``headers`` is a second).
    A method with lowercase letters or "#", or of fewer than 3 or more than 20 characters,
    Content-Length with Transfer-Encoding (a proxy that reads the other one sees another request after it:
    smuggling), chunked on HTTP/1.0, two Host or Content-Type fields, X-Forwarded-Proto / -Ssl / -Protocol
    that disagree (whoever sent them: no proxy sends both ways), a version other than 1.0
    and 1.1, "*" other than for OPTIONS, and a target that is none of origin, absolute or authority form.
    """
    if version not in ("1.1", "1.0"):
        return Exceeded(400, f"HTTP/{version} is not HTTP/1.x")
    if method not in COMMON and not conventional(method):
        return Exceeded(400, f"the method {method.decode('latin-1')!r} (3 to 20 characters, no lowercase, no #)")
    if target[:1] != b"/":
        if target == b"*":
            if method != b"OPTIONS":
                return Exceeded(400, f"the target * with {method.decode('latin-1')} (only OPTIONS)")
        elif method != b"CONNECT":
            if _ABSOLUTE_TARGET.fullmatch(target) is None:
                return Exceeded(400, "a request target that is neither a path nor an absolute URL")
            try:
                urlsplit(target)  # its authority too: "s://]ufd/" matches the form, yet is no URL
            except ValueError:
                return Exceeded(400, "a malformed absolute request target")
    seen: set[bytes] = {b"host"} if host else set()
    length = chunked = coded = False
    secure: bool | None = None
    for name, value in headers:
        if name in _SINGLETONS:
            if name in seen:
                return Exceeded(400, f"two {name.decode()} header fields")
            seen.add(name)
        elif name == b"content-length":
            length = True
        elif name == b"transfer-encoding":
            coded = True
            chunked = chunked or b"chunked" in value.lower()
        else:
            says = value.strip().lower() == _SECURE_VALUES[name]
            if secure is not None and says != secure:
                return Exceeded(400, "X-Forwarded-Proto, -Ssl or -Protocol headers that disagree")
            secure = says
    if length and coded:
        return Exceeded(400, "both Content-Length and Transfer-Encoding")
    if chunked and version == "1.0":
        return Exceeded(400, "a chunked body on HTTP/1.0")
    return None


def check_trailers(trailers: Headers) -> Exceeded | None:
    """The 400 for trailer fields that may not be trailers (lowercased names); None if none."""
    for name, _value in trailers:
        if name in _FORBIDDEN_TRAILERS:
            return Exceeded(400, f"a {name.decode('latin-1')} trailer field")
    return None


def header_lines(headers: Headers) -> bytes:
    """Header fields as they go on the wire, each line ending in CRLF."""
    return b"".join(name + b": " + value + b"\r\n" for name, value in headers)


def plain_answer(status: int, text: bytes, server_lines: bytes = b"") -> bytes:
    """A whole text/plain answer that closes the connection: what both engines send for a refused request or an
    app that failed before answering. ``server_lines``: the server's own fields (header_lines), e.g. date."""
    return (b"HTTP/1.1 %d %s\r\n%scontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
            b"connection: close\r\n\r\n%s" % (status, http.HTTPStatus(status).phrase.encode(), server_lines, len(text),
                                              text))
