"""Apps for the input-limit tests (tests/adapters/engine/test_e2e_limits.py), WSGI and ASGI, with the same routes.

- ``/``: 200 ``ok`` (the body, if any, unread);
- ``/reject``: 405 without reading the body, as a route that does not take uploads;
- ``/sha``: reads the whole body in 64 KiB reads and answers ``{"length": N, "sha256": HEX, "tmp": PATH}``,
  where ``tmp`` is the temporary directory the worker would spool to (the test checks it stays empty);
- ``guarded``: ``/guard`` and ``/sha`` mark a busy flag around each stretch of app code and count the times
  another found it set (``overlaps``): under ``--threads 1`` app code must never run in two places at once;
- ``flask``: a Flask app with ``MAX_CONTENT_LENGTH`` 1 MiB whose ``/upload`` reads ``request.data`` (413 above).
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import time
from typing import Any

from flask import Flask, request

CHUNK = 64 * 1024


def _sha_answer(length: int, digest: str) -> bytes:
    return json.dumps({"length": length, "sha256": digest, "tmp": tempfile.gettempdir()}).encode()


def wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    path = environ["PATH_INFO"]
    if path == "/reject":
        start_response("405 Method Not Allowed", [("Content-Type", "text/plain"), ("Content-Length", "9")])
        return [b"no upload"]
    if path == "/sha":
        stream, digest, length = environ["wsgi.input"], hashlib.sha256(), 0
        while chunk := stream.read(CHUNK):
            digest.update(chunk)
            length += len(chunk)
        assert stream.read(CHUNK) == b"" and stream.read() == b""  # reads past the end: empty
        body = _sha_answer(length, digest.hexdigest())
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    status, body = 200, b"ok"
    if scope["path"] == "/reject":
        status, body = 405, b"no upload"
    elif scope["path"] == "/sha":
        digest, length, more = hashlib.sha256(), 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            digest.update(message.get("body", b""))
            length += len(message.get("body", b""))
            more = message.get("more_body", False)
        body = _sha_answer(length, digest.hexdigest())
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


flask = Flask(__name__)
flask.config["MAX_CONTENT_LENGTH"] = 1024 * 1024


@flask.get("/")
def root() -> str:
    return "ok"


@flask.post("/upload")
def upload() -> dict[str, int]:
    return {"length": len(request.get_data())}


_busy = [False]
_overlaps = [0]


def _enter() -> None:
    if _busy[0]:
        _overlaps[0] += 1
        print("overlap: app code running in two places at once", file=sys.stderr, flush=True)
    _busy[0] = True
    time.sleep(0.001)  # widens the window in which a second caller would find the flag set


def _leave() -> None:
    _busy[0] = False


def guarded(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    _enter()
    try:
        if environ["PATH_INFO"] != "/sha":
            start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
            return [b"ok"]
        stream, digest, length = environ["wsgi.input"], hashlib.sha256(), 0
        while True:
            _leave()
            chunk = stream.read(CHUNK)  # not app code: waits for the network
            _enter()
            if not chunk:
                break
            digest.update(chunk)
            length += len(chunk)
        body = json.dumps({"length": length, "sha256": digest.hexdigest(), "overlaps": _overlaps[0]}).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]
    finally:
        _leave()
