"""Unit tests of the ASGI lifespan protocol as each worker runs it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from clusterrun.adapters.stack.lifespan import Lifespan

from clusterrun.errors import BootError

# Lifespan


def test_lifespan_failure_becomes_one_line() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "Traceback...\n  line\nKeyError: 'db'\n"})

    with pytest.raises(BootError, match=r"ASGI lifespan startup failed: KeyError: 'db'$"):
        asyncio.run(Lifespan(app, "auto").startup())


def test_an_app_without_lifespan_is_served_in_auto_but_fails_when_on() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http", "no lifespan here"

    asyncio.run(Lifespan(app, "auto").startup())
    with pytest.raises(BootError, match="AssertionError: no lifespan here"):
        asyncio.run(Lifespan(app, "on").startup())
