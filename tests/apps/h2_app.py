"""Apps for the HTTP/2 tests (tests/adapters/stack/test_e2e_http2.py).

``app`` (ASGI):
* ``/scope``: what the scope said, as JSON;
* ``/echo``: reads the body as it streams in, answers its size and SHA-256;
* ``/big?n=N``: answers N bytes (each byte its offset modulo 251), in 64 KiB sends;
* ``/hold?dir=D``: writes D/started, waits for D/release to exist, answers ``held``;
* anything else: ``ok``.

``wsgi`` (WSGI, served with --threads N): its SERVER_PROTOCOL, and the body's size.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

CHUNK = 64 * 1024


def pattern(size: int) -> bytes:
    return bytes(range(251)) * (size // 251) + bytes(range(size % 251))


async def _answer(send: Any, body: bytes, kind: bytes = b"text/plain") -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path = scope["path"]
    query = {key: values[0] for key, values in parse_qs(scope["query_string"].decode()).items()}
    if path == "/scope":
        seen = {key: scope[key] for key in ("http_version", "method", "path", "scheme")}
        seen["query_string"] = scope["query_string"].decode()
        seen["headers"] = [[name.decode(), value.decode()] for name, value in scope["headers"]]
        await _answer(send, json.dumps(seen).encode(), b"application/json")
    elif path == "/echo":
        digest, size = hashlib.sha256(), 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            digest.update(message["body"])
            size += len(message["body"])
            if not message["more_body"]:
                break
        await _answer(send, f"{size} {digest.hexdigest()}".encode())
    elif path == "/big":
        body = pattern(int(query["n"]))
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(len(body)).encode())]})
        for start in range(0, len(body), CHUNK):
            await send({"type": "http.response.body", "body": body[start:start + CHUNK],
                        "more_body": start + CHUNK < len(body)})
    elif path == "/hold":
        folder = query["dir"]
        with open(os.path.join(folder, "started"), "w"):
            pass
        while not os.path.exists(os.path.join(folder, "release")):
            await asyncio.sleep(0.02)
        await _answer(send, b"held")
    else:
        await _answer(send, b"ok")


def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    size = len(environ["wsgi.input"].read())
    body = f"{environ['SERVER_PROTOCOL']} {size}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
