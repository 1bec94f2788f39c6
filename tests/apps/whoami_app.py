"""Answers who the worker runs as (``app`` WSGI, ``asgi`` ASGI).

GET / -> {"pid", "uid", "gid", "euid", "egid", "groups", "metrics_dir_writable"}.

``metrics_dir_writable``: whether the worker may write in PROMETHEUS_MULTIPROC_DIR (None: not set).
"""

from __future__ import annotations

import json
import os
from typing import Any


def _whoami() -> bytes:
    return json.dumps({"pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid(), "euid": os.geteuid(),
                       "egid": os.getegid(), "groups": sorted(os.getgroups()),
                       "metrics_dir_writable": _writable(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))}).encode()


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "application/json")])
    return [_whoami()]


async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return  # lifespan: nothing to set up
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": _whoami()})


def _writable(folder: str | None) -> bool | None:
    return None if folder is None else os.access(folder, os.W_OK | os.X_OK)
