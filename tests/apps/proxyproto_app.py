"""Answers the client address it was given: ``wsgi`` REMOTE_ADDR and REMOTE_PORT, ``asgi`` the scope's client.

GET / -> {"addr": ..., "port": ..., "scheme": ...} as JSON: what a PROXY protocol header must set. A WebSocket
(``asgi``) is accepted with an ``x-client: ADDR:PORT`` header, then closed.
"""

from __future__ import annotations

import json
from typing import Any


def wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = json.dumps({"addr": environ.get("REMOTE_ADDR"), "port": int(environ.get("REMOTE_PORT") or 0),
                       "scheme": environ["wsgi.url_scheme"]}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    client = scope.get("client") or (None, 0)
    if scope["type"] == "websocket":  # the accept names the client in x-client, then the socket closes
        await receive()
        await send({"type": "websocket.accept", "headers": [(b"x-client", f"{client[0]}:{client[1]}".encode())]})
        await send({"type": "websocket.close"})
        return
    if scope["type"] != "http":
        return  # lifespan: nothing to set up
    body = json.dumps({"addr": client[0], "port": client[1], "scheme": scope["scheme"]}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
