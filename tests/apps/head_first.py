"""An ASGI app whose answer's head goes out before its body exists: it starts a chunked response, then waits for
the client to leave. tests/adapters/stack/test_e2e_asgi_framing.py reads the head while the app still waits."""

from __future__ import annotations

from typing import Any


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await receive()  # the request (no body)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    while (await receive())["type"] != "http.disconnect":
        pass  # no body until the client is gone: there never is one
