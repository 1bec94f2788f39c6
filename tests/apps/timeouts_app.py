"""Apps for the body and request timeout tests (tests/worker/test_e2e_timeouts.py), WSGI and ASGI, with the same routes.

- ``/upload``: reads the whole body and answers its length; while it reads, it counts among ``/reading``;
- ``/reading``: how many ``/upload`` requests are reading their body now (in this worker);
- ``/sleep``: sleeps 60 s, a request stuck in the app, then answers ``late``;
- ``/started``: sends the head and a first chunk, then sleeps 60 s in the middle of its body;
- ``/``: ``ok``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

STUCK = 60.0
_lock = threading.Lock()
_reading = 0


def _count(step: int) -> None:
    global _reading
    with _lock:
        _reading += step


def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
    path = environ["PATH_INFO"]
    body = b"ok"
    if path == "/upload":
        _count(1)
        length = 0
        try:
            while chunk := environ["wsgi.input"].read(65536):
                length += len(chunk)
        finally:
            _count(-1)
        body = str(length).encode()
    elif path == "/reading":
        body = str(_reading).encode()
    elif path == "/sleep":
        time.sleep(STUCK)
        body = b"late"
    elif path == "/started":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _started()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def _started() -> Iterator[bytes]:
    yield b"first\n"
    time.sleep(STUCK)
    yield b"late\n"


async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    path, body = scope["path"], b"ok"
    if path == "/upload":
        _count(1)
        length, more = 0, True
        try:
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                length += len(message.get("body", b""))
                more = message.get("more_body", False)
        finally:
            _count(-1)
        body = str(length).encode()
    elif path == "/reading":
        body = str(_reading).encode()
    elif path == "/sleep":
        await asyncio.sleep(STUCK)
        body = b"late"
    elif path == "/started":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"first\n", "more_body": True})
        await asyncio.sleep(STUCK)
        await send({"type": "http.response.body", "body": b"late\n"})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
