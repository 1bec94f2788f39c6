"""An app that opens a connection pool when imported, as many do; with --preload that happens in the primary.

``/`` answers which process opened the pool now in use (``pool_pid``) and which process answers (``pid``).
tests/apps/pool_hooks.py opens the pool again in each worker (worker_init).
"""

from __future__ import annotations

import json
import os
from typing import Any

POOL_PID = os.getpid()  # stands for a pool of connections: made by this process, unusable after a fork
IMPORTED_IN = os.getpid()


def _body() -> bytes:
    return json.dumps({"pool_pid": POOL_PID, "pid": os.getpid(), "imported_in": IMPORTED_IN}).encode()


def wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "application/json")])
    return [_body()]


async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": _body()})
