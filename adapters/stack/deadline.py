"""--request-timeout on uvicorn's stack: each HTTP request's task cancelled at its deadline (ASGI apps, and WSGI apps
on the bridge with ``--threads N``). The inline engine's side, and why the two differ, is adapters.deadline.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["RequestTimedOut", "with_deadline"]

logger = logging.getLogger("clusterrun")

Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class RequestTimedOut(OSError):
    """Raised by ``send`` once the request's deadline passed: what the app still sends goes nowhere."""


def _answer_504(seconds: float) -> tuple[Message, Message]:
    body = f"Gateway Timeout: the request took longer than {seconds:g} s (--request-timeout)\n".encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
               (b"connection", b"close")]
    return ({"type": "http.response.start", "status": 504, "headers": headers},
            {"type": "http.response.body", "body": body, "more_body": False})


def with_deadline(app: Any, seconds: float) -> Any:
    """``app`` with each HTTP request cancelled after ``seconds``: 504, or the connection closed once answering.

    One timer per request on the loop (no system call); WebSocket and lifespan scopes are left alone.
    """

    async def deadline_app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        task = asyncio.current_task()
        assert task is not None
        started = expired = False

        async def send_in_time(message: Message) -> None:
            nonlocal started
            if expired:
                raise RequestTimedOut(f"the request took longer than {seconds:g} s (--request-timeout)")
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        timer = asyncio.get_running_loop().call_later(seconds, expire)
        try:
            await app(scope, receive, send_in_time)
        except asyncio.CancelledError:
            if not expired:
                raise  # cancelled by someone else (the server going away)
            uncancel = getattr(task, "uncancel", None)  # 3.11+: the cancel was ours, and it is handled here
            if uncancel is not None:
                uncancel()
            what = "answered 504" if not started else "its connection closed (the response had begun)"
            logger.warning("request %s %s ran past --request-timeout %g s: cancelled, %s", scope.get("method", "-"),
                           scope.get("path", "-"), seconds, what)
            if not started:
                for message in _answer_504(seconds):
                    await send(message)
            # Else the response stays incomplete: uvicorn then closes the connection, so the client cannot
            # take it for a whole one.
        finally:
            timer.cancel()

    return deadline_app
