"""What an ASGI app answered, told once each HTTP response ends: the one observer of the access log and --metrics
on the stack, and of the inline engine's HTTP/2 side (which posts it to the engine's thread).

May import: nothing of clusterrun (a leaf of this package).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

# What ``done`` is told: the request's scope, the status, the body's size, the seconds it took and the response
# headers the app gave (any iterable of pairs, as ASGI allows).
Done = Callable[[Any, int, int, float, Any], None]


def observed(app: Any, done: Done) -> Any:
    """The ASGI app, each HTTP response told to ``done`` when the app returns or fails (500 and size 0 when it
    fails before it starts one). Other scopes (WebSocket, lifespan) pass through untold."""

    async def observed_app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        started = time.perf_counter()
        status, size = 500, 0
        headers: Any = ()

        async def send_observed(message: Any) -> None:
            nonlocal status, size, headers
            kind = message["type"]
            if kind == "http.response.start":
                status, headers = message["status"], message.get("headers", ())
            elif kind == "http.response.body":
                size += len(message.get("body", b""))
            elif kind == "http.response.zerocopysend":  # a static file, sent with loop.sendfile
                size += message.get("count") or 0
            await send(message)

        try:
            await app(scope, receive, send_observed)
        finally:
            done(scope, status, size, time.perf_counter() - started, headers)

    return observed_app
