"""What Python's cycle collector had to free in an ASGI app's worker (tests/adapters/test_e2e_garbage.py).

GET /collected  runs a full collection first, then answers the number of objects every collection so far
                freed (as text)
anything else   "ok"
"""

from __future__ import annotations

import gc
from typing import Any

_freed = [0]


def _count(phase: str, info: dict[str, Any]) -> None:
    if phase == "stop":
        _freed[0] += info["collected"]


gc.callbacks.append(_count)


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return  # no lifespan support
    if scope["path"] == "/collected":
        gc.collect()
        body = str(_freed[0]).encode()
    else:
        body = b"ok"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
