"""An ASGI app with a WebSocket route, for least-conn's count of upgraded connections and the WebSocket limits.

The accept carries the worker's pid in an ``x-pid`` header, so that a raw client sees where it landed; each
message is echoed back. Any other request is answered 200 with the worker's pid.
"""

from __future__ import annotations

import os
from typing import Any


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
    elif scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.accept", "headers": [(b"x-pid", str(os.getpid()).encode())]})
        while (message := await receive())["type"] != "websocket.disconnect":
            await send({"type": "websocket.send", "bytes": message.get("bytes"), "text": message.get("text")})
    else:
        body = str(os.getpid()).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
