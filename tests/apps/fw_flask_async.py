"""Flask views that need a thread with no running event loop (issue 10, item 1).

GET /async        an ``async def`` view (flask[async] runs it with asgiref's AsyncToSync)
GET /asyncio-run  a plain view that calls ``asyncio.run()``
GET /stream       a streamed body: each chunk says whether a running loop was visible when it was produced
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

from flask import Flask, Response, jsonify

app = Flask(__name__)


async def _answer(value: int) -> int:
    await asyncio.sleep(0)
    return value * 2


@app.get("/async")
async def async_view() -> Response:
    return jsonify(answer=await _answer(21), pid=os.getpid())


@app.get("/asyncio-run")
def asyncio_run_view() -> Response:
    return jsonify(answer=asyncio.run(_answer(4)), pid=os.getpid())


def _loop_visible() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


@app.get("/stream")
def stream() -> Response:
    def chunks() -> Iterator[str]:
        for _ in range(3):
            yield "loop\n" if _loop_visible() else "no-loop\n"

    return Response(chunks(), mimetype="text/plain")
