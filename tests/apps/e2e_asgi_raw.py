"""A raw ASGI coroutine function without lifespan support: clusterrun must detect it as ASGI."""

from __future__ import annotations

from typing import Any

from e2e_common import asgi_app


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await asgi_app(scope, receive, send, kind="raw-asgi-function")
