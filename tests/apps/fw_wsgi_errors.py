"""A raw WSGI app that misbehaves on purpose, and reports its environ (issue 10, item 2).

GET /environ            the CGI/PEP 3333 keys of the environ, as JSON
GET /boom               raises before starting the response
GET /boom-later         sends one chunk, then raises
GET /bad-header?KIND    a response header with CR/LF/NUL in its value (KIND: crlf, lf, nul) or a bad name (name)
GET /                   200 "ok"
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

_BAD_HEADERS = {
    "crlf": ("X-Injected", "a\r\nSet-Cookie: evil=1"),
    "lf": ("X-Injected", "a\nb"),
    "nul": ("X-Injected", "a\x00b"),
    "name": ("X Injected\r\n", "v"),
}


def _later(start_response: Any) -> Iterator[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    yield b"first chunk\n"
    raise LookupError("the backend went away mid-response")


def app(environ: dict[str, Any], start_response: Any) -> Any:
    path = environ["PATH_INFO"]
    if path == "/environ":
        environ["wsgi.input"].read()
        shown = {key: value for key, value in environ.items() if isinstance(value, (str, bool, tuple))}
        body = json.dumps(shown).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
    if path == "/boom":
        raise ZeroDivisionError("the app divided by zero")
    if path == "/boom-later":
        return _later(start_response)
    if path == "/bad-header":
        start_response("200 OK", [("Content-Type", "text/plain"), _BAD_HEADERS[environ["QUERY_STRING"]]])
        return [b"should never be sent"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
