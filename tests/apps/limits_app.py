"""Apps for the input-limit tests (tests/test_e2e_limits.py), WSGI and ASGI, with the same routes.

- ``/``: 200 ``ok`` (the body, if any, unread);
- ``/reject``: 405 without reading the body, as a route that does not take uploads;
- ``/sha``: reads the whole body in 64 KiB reads and answers ``{"length": N, "sha256": HEX, "tmp": PATH}``,
  where ``tmp`` is the temporary directory the worker would spool to (the test checks it stays empty);
- ``flask``: a Flask app with ``MAX_CONTENT_LENGTH`` 1 MiB whose ``/upload`` reads ``request.data`` (413 above).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
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


@flask.post("/upload")
def upload() -> dict[str, int]:
    return {"length": len(request.get_data())}
