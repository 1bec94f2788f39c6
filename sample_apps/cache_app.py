"""Per-process caches kept coherent with clusterrun.broadcast, no Redis needed.

    clusterrun cache_app:app --workers 4
    curl localhost:8000/greeting                       # each worker caches what it read
    curl -X PUT 'localhost:8000/greeting?text=hi'      # the write invalidates every worker's cache
    curl localhost:8000/greeting                       # every worker now answers "hi"
"""

import json
import os
import tempfile
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import clusterrun

# The "database": a file every worker reads. Reading it is the slow path the cache avoids.
DB = Path(os.environ.get("CACHE_DEMO_DB", Path(tempfile.gettempdir()) / "clusterrun-cache-demo.json"))
cache: dict[str, str] = {}


def read_greeting() -> str:
    try:
        return str(json.loads(DB.read_text())["greeting"])
    except (OSError, ValueError, KeyError):
        return "hello"


@clusterrun.on_message
def invalidate(message: object) -> None:
    # Broadcasts from the other workers: drop what they changed.
    if isinstance(message, dict) and "invalidate" in message:
        cache.pop(message["invalidate"], None)


async def greeting(request: Request) -> JSONResponse:
    worker = clusterrun.current_worker()
    if request.method == "PUT":
        DB.write_text(json.dumps({"greeting": request.query_params.get("text", "hello")}))
        cache.pop("greeting", None)
        clusterrun.broadcast({"invalidate": "greeting"})
    cached = "greeting" in cache
    if not cached:
        cache["greeting"] = read_greeting()
    return JSONResponse({"greeting": cache["greeting"], "cached": cached, "worker": worker.id if worker else None})


app = Starlette(routes=[Route("/greeting", greeting, methods=["GET", "PUT"])])
