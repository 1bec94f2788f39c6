"""An ASGI app for the HTTP/1.1 protocols' own behaviour (tests/adapters/stack/test_e2e_http1.py), run on
clusterrun's protocol and on uvicorn's alike.

* ``/echo``: reads the body as it streams in, answers its size and SHA-256;
* ``/stream?n=N``: streams N chunks of 64 KiB (no Content-Length: chunked), each byte its chunk's index;
* ``/boom``: fails before answering (500);
* ``/half``: starts an answer of 10 bytes, sends 4, fails (the connection is cut);
* ``/scope``: answers what the scope said, as JSON, and the lifespan's state;
* ``/ws``: a WebSocket echo; anything else: ``ok``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

CHUNK = 64 * 1024


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (message := await receive())["type"] != "lifespan.shutdown":
            scope["state"]["started"] = "yes"
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept"})
        while (message := await receive())["type"] != "websocket.disconnect":
            await send({"type": "websocket.send", "bytes": message.get("bytes"), "text": message.get("text")})
        return
    path = scope["path"][len(scope["root_path"]):]  # the path includes root_path (ASGI 2.3 on)
    if path == "/echo":
        digest, size = hashlib.sha256(), 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            digest.update(message["body"])
            size += len(message["body"])
            if not message["more_body"]:
                break
        await answer(send, json.dumps({"size": size, "sha256": digest.hexdigest()}).encode())
    elif path == "/stream":
        count = int(scope["query_string"].split(b"=")[1])
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        for index in range(count):
            await send({"type": "http.response.body", "body": bytes([index % 256]) * CHUNK, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/boom":
        raise RuntimeError("boom before the answer")
    elif path == "/half":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"10")]})
        await send({"type": "http.response.body", "body": b"half", "more_body": True})
        raise RuntimeError("boom in the middle of the answer")
    elif path == "/scope":
        shown = {key: scope[key] for key in ("http_version", "method", "path", "scheme", "root_path")}
        shown.update(raw_path=scope["raw_path"].decode(), query_string=scope["query_string"].decode(),
                     client=list(scope["client"]), server=list(scope["server"]), state=scope["state"].get("started"),
                     worker=scope["state"]["clusterrun.worker"].id)
        await answer(send, json.dumps(shown).encode())
    else:
        await answer(send, b"ok")


async def answer(send: Any, body: bytes) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})
