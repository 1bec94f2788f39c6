"""Extension methods: any token is a request method (RFC 9110 9.1), but httptools parses only those it knows.

httptools (llhttp) refuses ``FOO / HTTP/1.1`` as an invalid method, while gunicorn, h11 and the RFC accept
any token (``PURGE`` and ``PROPFIND`` pass only because llhttp lists them). An engine on httptools whose parser
fails on a read asks ``stand_in``: if the parser failed on a token method it does not know, the engine parses
that request again, with a new parser and the method replaced by ``GET``, and gives the app the real one. For
a request, llhttp frames the body the same whatever the method (Content-Length or chunked; CONNECT aside, which
it knows), so the stand-in changes nothing but the name. The work is done only after a parse failure: no
request with a known method pays anything.

Engine-neutral: used by the inline engine (adapters.engine.connection) and by uvicorn's stack (adapters.stack.guard).
"""

from __future__ import annotations

import re

import httptools

__all__ = ["COMMON", "STAND_IN", "conventional", "stand_in"]

COMMON = frozenset((b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"))

STAND_IN = b"GET"
# RFC 9110 5.6.2 tchar, less what gunicorn refuses in a method by default (permit_unconventional_http_method):
# lowercase letters and "#", and fewer than 3 or more than 20 characters.
_METHOD = re.compile(rb"[!$%&'*+\-.^_`|~0-9A-Z]{3,20}")


def conventional(method: bytes) -> bool:
    """Whether gunicorn accepts ``method`` by default (h11 takes any token: ``-bl`` too)."""
    return _METHOD.fullmatch(method) is not None


def stand_in(data: bytes) -> tuple[int, bytes, bytes] | None:
    """Where httptools fails on an extension method in ``data``, a read that begins at the start of a request:
    ``(the offset of the request that has it, data from there on with STAND_IN in its method's place, the
    method)``, when the method is one gunicorn accepts (``conventional``); None when the parser fails on
    anything else, or on a method gunicorn refuses too.

    Requests complete before that one in ``data`` parse the same with a new parser: a parser with no callbacks,
    fed ever longer prefixes of ``data`` (a bisection), finds the byte it fails on; the request begins on that
    byte's line.
    """
    low, high = 0, len(data)  # the shortest prefix the parser refuses: its last byte is the failing one
    while low < high:
        middle = (low + high) // 2
        try:
            httptools.HttpRequestParser(_Ignoring()).feed_data(data[:middle + 1])
        except httptools.HttpParserInvalidMethodError:
            high = middle
        except (httptools.HttpParserError, httptools.HttpParserUpgrade):  # failed otherwise, or stops before it
            return None
        else:
            low = middle + 1
    if low == len(data):
        return None  # the parser takes all of it: the failure was not its method
    begin = data.rfind(b"\n", 0, low) + 1
    space = data.find(b" ", begin, begin + 21)
    method = data[begin:space]
    if space < 0 or not conventional(method):
        return None
    return begin, STAND_IN + data[space:], method


class _Ignoring:
    """A parser's protocol with no callbacks: for a parser fed only to find where it fails."""
