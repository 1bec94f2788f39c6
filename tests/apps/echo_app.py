"""Echo the request as the app sees it, as JSON: for the HTTP parsing tests (tests/adapters/test_corpus.py,
tests/adapters/engine/test_e2e_framing.py).

Both interfaces answer the same shape: ``{"method", "path", "query", "version", "headers", "body", "client",
"scheme"}``, ``headers`` a list of ``[NAME, value]`` with NAME upper-case and dashed (as gunicorn's corpus
writes it), ``body`` the body as latin-1 text. The WSGI app rebuilds names from the environ's keys (one entry
per name, repeated fields joined by the server, sorted by name); the ASGI app lists the scope's headers in
the order they came. The WSGI app answers ``Connection: close`` to a request with ``X-Answer-Close``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any


def _answer(result: dict[str, Any]) -> bytes:
    return json.dumps(result, sort_keys=True).encode()


def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    headers = []
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers.append([key[5:].replace("_", "-"), value])
        elif key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            headers.append([key.replace("_", "-"), value])
    body = environ["wsgi.input"].read()
    result = {
        "method": environ["REQUEST_METHOD"], "path": environ["PATH_INFO"], "query": environ["QUERY_STRING"],
        "version": environ["SERVER_PROTOCOL"], "headers": sorted(headers), "body": body.decode("latin-1"),
        "client": environ.get("REMOTE_ADDR"), "scheme": environ["wsgi.url_scheme"],
    }
    data = _answer(result)
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    if "HTTP_X_ANSWER_CLOSE" in environ:  # the app closes the connection after this answer
        headers.append(("Connection", "close"))
    start_response("200 OK", headers)
    return [data]


async def asgi(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    headers = [[name.decode("latin-1").upper(), value.decode("latin-1")] for name, value in scope["headers"]]
    client = scope.get("client")
    result = {
        "method": scope["method"], "path": scope["path"], "query": scope["query_string"].decode("latin-1"),
        "version": "HTTP/" + scope["http_version"], "headers": headers, "body": body.decode("latin-1"),
        "client": client[0] if client else None, "scheme": scope["scheme"],
    }
    data = _answer(result)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})
