"""Test app for Node's Worker calls, as raw WSGI (``wsgi``) and raw ASGI (``asgi``).

/                     the worker's id, index, pid and the variables X and Y of its environment, with sys.argv[1:]
/ask?cmd=C[&id=N]     clusterrun.current_worker().send({"cmd": C}): the runner (node_runner.py) acts on this worker
                      (or on worker N)
/slow?s=N             logs "slow request in worker ID", then blocks N seconds before it answers
/leave                clusterrun.current_worker().disconnect(): the worker leaves gracefully (answers first)
/crash?if_env=NAME    the worker exits at once with code 1 (only if NAME is in its environment, when given)
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any
from urllib.parse import parse_qs

import clusterrun


def _answer(path: str, query: str) -> dict[str, Any]:
    worker = clusterrun.current_worker()
    assert worker is not None
    params = {key: values[0] for key, values in parse_qs(query).items()}
    if path == "/crash" and ("if_env" not in params or params["if_env"] in os.environ):
        os._exit(1)
    if path == "/ask":
        worker.send({"cmd": params["cmd"], "id": int(params.get("id", worker.id))})
    if path == "/slow":
        logging.getLogger("node_app").warning("slow request in worker %d", worker.id)
        time.sleep(float(params["s"]))  # blocks the ASGI worker's loop too: a request that cannot finish in time
    if path == "/leave":
        worker.disconnect()
    return {"id": worker.id, "index": worker.index, "pid": worker.pid, "X": os.environ.get("X"),
            "Y": os.environ.get("Y"), "args": sys.argv[1:], "connected": worker.is_connected()}


def wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    data = json.dumps(_answer(environ["PATH_INFO"], environ["QUERY_STRING"])).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    data = json.dumps(_answer(scope["path"], scope["query_string"].decode())).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
    await send({"type": "http.response.body", "body": data})
