"""Starlette (and FastAPI) integration: ``request.state.worker`` and an optional ``X-Worker-Id`` header.

    from starlette.middleware import Middleware
    from clusterrun.adapters.starlette import WorkerMiddleware
    app = Starlette(routes=..., middleware=[Middleware(WorkerMiddleware, header=True)])

A pure ASGI middleware (not BaseHTTPMiddleware), so that it costs one dict
write per request and streams responses untouched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from clusterrun.identity import current_worker

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

HEADER = b"x-worker-id"


class WorkerMiddleware:
    def __init__(self, app: ASGIApp, header: bool = False) -> None:
        self.app = app
        self.header = header

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        worker = current_worker()
        state = scope.get("state")
        if state is None:
            state = scope["state"] = {}
        state["worker"] = worker
        if not self.header or worker is None:
            await self.app(scope, receive, send)
            return
        value = str(worker.id).encode()

        async def send_with_header(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (HEADER, value)]
            await send(message)

        await self.app(scope, receive, send_with_header)
