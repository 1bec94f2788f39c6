"""Apps that answer which server modules their worker has loaded (tests/adapters/engine/test_engine.py).

Both answer ``{"uvicorn": BOOL, "asyncio": BOOL, "pid": PID, "uvicorn_at_import": BOOL, "static": BOOL}``:
whether ``uvicorn`` and ``asyncio`` are in the worker's ``sys.modules`` when the request arrives, and whether
uvicorn was already there when the worker imported this module (before it chose its engine: then it came with
the fork, from the primary); ``static``: whether the static files' module (--static) is loaded. Neither imports
anything itself, so what they report is what clusterrun loaded.

- ``wsgi``: a plain WSGI app (served on the inline engine by default, on uvicorn's stack with --threads N);
- ``asgi``: a plain ASGI app (always on uvicorn's stack).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

UVICORN_AT_IMPORT = "uvicorn" in sys.modules

def _loaded() -> bytes:
    return json.dumps({"uvicorn": "uvicorn" in sys.modules, "asyncio": "asyncio" in sys.modules,
                       "pid": os.getpid(), "uvicorn_at_import": UVICORN_AT_IMPORT,
                       "static": "clusterrun.adapters.edge.static" in sys.modules}).encode()


def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = _loaded()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


async def asgi(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    if scope["type"] != "http":
        return  # lifespan: nothing to set up
    body = _loaded()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
