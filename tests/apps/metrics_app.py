"""Test app for --metrics: it counts its own hits with prometheus_client, as an app would.

/        counts a hit (app_hits_total) and answers the worker's id and pid as JSON
/status?code=N  answers with status N (for the status classes)
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from prometheus_client import Counter

import clusterrun

HITS = Counter("app_hits", "Hits on / counted by the app itself.")


def _answer(path: str, query: str) -> tuple[int, bytes]:
    if path == "/status":
        return int(parse_qs(query).get("code", ["200"])[0]), b"as asked\n"
    HITS.inc()
    worker = clusterrun.current_worker()
    assert worker is not None
    return 200, json.dumps(worker.as_dict()).encode()


def wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    status, body = _answer(environ["PATH_INFO"], environ.get("QUERY_STRING", ""))
    start_response(f"{status} X", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    status, body = _answer(scope["path"], scope["query_string"].decode())
    await send({"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})
