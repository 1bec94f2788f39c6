"""An app that configures logging itself, as many do: basicConfig at DEBUG with its own format.

``wsgi`` and ``asgi`` answer every request after logging "handled PATH" at DEBUG through the logger "app".
"""

from __future__ import annotations

import logging
from typing import Any

logging.basicConfig(level=logging.DEBUG, format="APP-FORMAT %(levelname)s %(name)s pid=%(process)d: %(message)s")
log = logging.getLogger("app")


def wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    log.debug("handled %s", environ["PATH_INFO"])
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    log.debug("handled %s", scope["path"])
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})
