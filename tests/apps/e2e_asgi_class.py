"""An ASGI app that is a class instance with an async __call__, speaking the lifespan protocol."""

from __future__ import annotations

from typing import Any

from e2e_common import asgi_app


class App:
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    scope["state"]["e2e.started"] = True
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        await asgi_app(scope, receive, send, kind="asgi-class-instance",
                       lifespan_ran=bool(scope.get("state", {}).get("e2e.started")))


app = App()
