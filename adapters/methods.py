"""Extension methods: any token is a request method (RFC 9110 9.1), but httptools parses only those it knows.

httptools (llhttp) refuses ``FOO / HTTP/1.1`` as an invalid method, while gunicorn, h11 and the RFC accept
any token (``PURGE`` and ``PROPFIND`` pass only because llhttp lists them). An engine on httptools that sees
its parser fail on a request's first bytes asks ``stand_in``: if they are a token method the parser does not
know, it re-parses the request with the method replaced by ``GET`` and gives the app the real one. For a
request, llhttp frames the body the same whatever the method (Content-Length or chunked; CONNECT aside, which
it knows), so the stand-in changes nothing but the name. The work is done only after a parse failure: no
request with a known method pays anything.

Engine-neutral: used by uvicorn's stack (adapters.limits, adapters.uvicorn_seam), usable by the inline engine.
"""

from __future__ import annotations

import functools
import re

__all__ = ["COMMON", "STAND_IN", "conventional", "httptools_knows", "stand_in"]

COMMON = frozenset((b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH"))

STAND_IN = b"GET"
# RFC 9110 5.6.2 tchar, less what gunicorn refuses in a method by default (permit_unconventional_http_method):
# lowercase letters and "#", and fewer than 3 or more than 20 characters.
_METHOD = re.compile(rb"[!$%&'*+\-.^_`|~0-9A-Z]{3,20}")


def conventional(method: bytes) -> bool:
    """Whether gunicorn accepts ``method`` by default (h11 takes any token: ``-bl`` too)."""
    return _METHOD.fullmatch(method) is not None


def stand_in(data: bytes) -> tuple[bytes, bytes] | None:
    """``(data with its method replaced by STAND_IN, the method)`` when ``data`` begins with a method that gunicorn
    accepts (a token of 3 to 20 characters, no lowercase, no "#"), followed by a space, that httptools does not
    know; None otherwise."""
    space = data.find(b" ", 0, 21)
    if space <= 0:
        return None
    method = data[:space]
    if _METHOD.fullmatch(method) is None or httptools_knows(method):
        return None
    return STAND_IN + data[space:], method


@functools.lru_cache(maxsize=64)
def httptools_knows(method: bytes) -> bool:
    """Whether httptools parses a request with ``method`` (asked of a parser: its list changes with llhttp)."""
    import httptools

    parser = httptools.HttpRequestParser(_Ignoring())
    try:
        parser.feed_data(method + b" / HTTP/1.1\r\nHost: t\r\n\r\n")
    except httptools.HttpParserError:
        return False
    return True


class _Ignoring:
    """A parser's protocol with no callbacks."""
