"""A Starlette app for clusterrun: run it with `clusterrun starlette_app:app --workers 2`."""

import os

from clusterrun.adapters.starlette import WorkerMiddleware
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def hello(request: Request) -> JSONResponse:
    worker = request.state.worker
    return JSONResponse({
        "message": "Hello from Starlette on clusterrun",
        "worker": {"id": worker.id, "index": worker.index, "pid": worker.pid} if worker else None,
        "pid": os.getpid(),
    })


async def heavy(request: Request) -> JSONResponse:
    # About 10 ms of pure-Python CPU work, on the event loop on purpose: a slow request blocks its worker.
    total = sum(i * i for i in range(100_000))
    worker = request.state.worker
    return JSONResponse({"result": total, "worker": worker.id if worker else None})


app = Starlette(
    routes=[Route("/", hello), Route("/heavy", heavy)],
    middleware=[Middleware(WorkerMiddleware, header=True)],
)
