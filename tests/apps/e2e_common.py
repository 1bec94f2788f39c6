"""Shared by the e2e test apps: every way a handler can learn which worker it runs in, as JSON.

GET /            the identity report
GET /log?TOKEN   the same, after logging TOKEN at WARNING through the logging module (for log-format tests)
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import clusterrun

log = logging.getLogger("e2e.app")


def _as_dict(worker: Any) -> dict[str, int] | None:
    return None if worker is None else {"id": worker.id, "index": worker.index, "pid": worker.pid}


def report(interface: str, path: str, query: str, from_request: Any, **extra: Any) -> bytes:
    if path == "/log":
        log.warning("e2e-marker %s", query)
    return json.dumps({
        "interface": interface,
        "path": path,
        "pid": os.getpid(),
        "current_worker": _as_dict(clusterrun.current_worker()),
        "request_worker": _as_dict(from_request),
        "env": {"id": os.environ.get("CLUSTERRUN_WORKER_ID"), "index": os.environ.get("CLUSTERRUN_WORKER_INDEX")},
        **extra,
    }).encode()


def wsgi_app(environ: dict[str, Any], start_response: Any, **extra: Any) -> list[bytes]:
    body = report("wsgi", environ["PATH_INFO"], environ.get("QUERY_STRING", ""), environ.get("clusterrun.worker"),
                  **extra)
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any, **extra: Any) -> None:
    if scope["type"] != "http":
        return  # no lifespan support: the server must carry on without it
    state = scope.get("state") or {}
    body = report("asgi", scope["path"], scope.get("query_string", b"").decode(), state.get("clusterrun.worker"),
                  **extra)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
