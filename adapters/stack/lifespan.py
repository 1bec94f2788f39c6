"""The ASGI lifespan protocol, run by each worker around serving.

Written here rather than taken from uvicorn so that a failed startup becomes
one ``BootError`` line for the primary, and so that "unsupported" is told from
"failed" by whether the app ever asked for a lifespan event.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from clusterrun.errors import BootError

logger = logging.getLogger("clusterrun")

Message = dict[str, Any]


class Lifespan:
    def __init__(self, app: Any, mode: str) -> None:
        self.app = app
        self.mode = mode  # "auto", "on" or "off"
        self.state: dict[str, Any] = {}
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._replies: asyncio.Queue[Message | BaseException | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._listening = False  # the app asked for an event: it speaks lifespan

    async def startup(self) -> None:
        """Run the app's startup; raise BootError if it fails (or, with mode "on", is unsupported)."""
        if self.mode == "off":
            return
        self._task = asyncio.get_running_loop().create_task(self._main())
        await self._inbox.put({"type": "lifespan.startup"})
        reply = await self._replies.get()
        if isinstance(reply, BaseException) or reply is None:
            if not self._listening and self.mode == "auto":
                logger.debug("the app does not support ASGI lifespan; serving without it")
                self._task = None
                return
            raise BootError(f"ASGI lifespan startup failed: {_describe(reply)}")
        if reply["type"] == "lifespan.startup.failed":
            raise BootError(f"ASGI lifespan startup failed: {_last_line(reply.get('message', ''))}")

    async def shutdown(self) -> None:
        if self._task is None:
            return
        await self._inbox.put({"type": "lifespan.shutdown"})
        reply = await self._replies.get()
        if isinstance(reply, dict) and reply["type"] == "lifespan.shutdown.failed":
            logger.error("ASGI lifespan shutdown failed: %s", _last_line(reply.get("message", "")))
        elif not isinstance(reply, dict):
            logger.error("ASGI lifespan shutdown failed: %s", _describe(reply))

    async def _main(self) -> None:
        scope = {"type": "lifespan", "asgi": {"version": "3.0", "spec_version": "2.0"}, "state": self.state}
        try:
            await self.app(scope, self._receive, self._send)
        except BaseException as exc:  # the app's own error, reported to whoever waits
            if self._listening:
                logger.debug("ASGI lifespan raised", exc_info=exc)
            await self._replies.put(exc)
            return
        await self._replies.put(None)

    async def _receive(self) -> Message:
        self._listening = True
        return await self._inbox.get()

    async def _send(self, message: Message) -> None:
        await self._replies.put(message)


def _describe(reply: BaseException | None) -> str:
    if reply is None:
        return "the app returned without completing it"
    return f"{type(reply).__name__}: {reply}"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[-1] if lines else "no reason given"
