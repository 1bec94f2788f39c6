"""A WSGI app for HTTP/2 on the inline engine (tests/adapters/engine/test_e2e_inline_http2.py).

* ``/environ``: what the environ said, as JSON;
* ``/echo``: reads the body in 16 KiB reads, answers its size and SHA-256;
* ``/big?n=N``: answers N bytes (each byte its offset modulo 251), streamed in 64 KiB chunks;
* ``/hold?dir=D``: writes D/started, waits for D/release to exist, answers ``held``;
* anything else: ``ok``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs

CHUNK = 64 * 1024
KEYS = ("SERVER_PROTOCOL", "REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "SCRIPT_NAME", "REMOTE_ADDR",
        "wsgi.url_scheme", "wsgi.multithread", "HTTP_HOST")


def pattern(size: int) -> bytes:
    return bytes(range(251)) * (size // 251) + bytes(range(size % 251))


def _big(size: int) -> Iterator[bytes]:
    body = pattern(size)
    for start in range(0, size, CHUNK):
        yield body[start:start + CHUNK]


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
    path = environ["PATH_INFO"]
    query = {key: values[0] for key, values in parse_qs(environ["QUERY_STRING"]).items()}
    if path == "/environ":
        body = json.dumps({key: environ.get(key) for key in KEYS}).encode()
    elif path == "/echo":
        digest, size = hashlib.sha256(), 0
        while chunk := environ["wsgi.input"].read(16384):
            digest.update(chunk)
            size += len(chunk)
        body = f"{size} {digest.hexdigest()}".encode()
    elif path == "/big":
        size = int(query["n"])
        start_response("200 OK", [("Content-Type", "application/octet-stream"), ("Content-Length", str(size))])
        return _big(size)
    elif path == "/hold":
        folder = query["dir"]
        with open(os.path.join(folder, "started"), "w"):
            pass
        while not os.path.exists(os.path.join(folder, "release")):
            time.sleep(0.02)
        body = b"held"
    else:
        body = b"ok"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
