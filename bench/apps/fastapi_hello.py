"""FastAPI hello: what a FastAPI app does per request, with no clusterrun integration.

``GET /`` takes its query as a pydantic model (``?name=...&count=...``, validated, defaults when absent) and answers
with another through ``response_model``: validation in, serialisation out, FastAPI's dependency resolution and
routing, as a small real endpoint has them. GET, so that every server, the load generator and the in-process
ceiling send it the same request as the other apps; a JSON body would add only the body's read and parse.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import FastAPI, Query
from pydantic import BaseModel, Field


class Greeting(BaseModel):
    name: str = Field("world", max_length=64)
    count: int = Field(1, ge=1, le=100)


class Answer(BaseModel):
    message: str
    count: int


app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@app.get("/", response_model=Answer)
async def hello(greeting: Annotated[Greeting, Query()]) -> Answer:
    return Answer(message=f"Hello, {greeting.name}!", count=greeting.count)
