"""A Starlette app whose lifespan startup raises: every worker fails to boot."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    raise RuntimeError("e2e-lifespan: cache server unreachable")
    yield  # unreachable: makes this an async generator


async def hello(request: object) -> PlainTextResponse:
    return PlainTextResponse("should never be served")


app = Starlette(routes=[Route("/", hello)], lifespan=lifespan)
