"""What a request saw of TLS, as raw WSGI (``wsgi``) and raw ASGI (``asgi``): tests/host/test_e2e_tls.py.

Both answer ``{"scheme": ..., "pid": ...}``: the WSGI environ's ``wsgi.url_scheme`` and ``HTTPS`` (gunicorn
sets no ``HTTPS`` key, nor does clusterrun), or the ASGI scope's ``scheme``, and the worker's pid.
"""

from __future__ import annotations

import json
import os
from typing import Any


def wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = json.dumps({"scheme": environ["wsgi.url_scheme"], "https": environ.get("HTTPS"), "pid": os.getpid(),
                       "port": environ["SERVER_PORT"]}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = json.dumps({"scheme": scope["scheme"], "pid": os.getpid()}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
