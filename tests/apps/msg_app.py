"""Test app for cluster messages, as raw WSGI (``wsgi``) and raw ASGI (``asgi``).

/send?text=T       clusterrun.send({"text": T}) to the primary
/broadcast?text=T  clusterrun.broadcast({"text": T}) to every other worker
/inbox             the messages this worker received, with its id
/bad               tries to send a value that is not JSON; answers with the error
/crash             the worker exits at once
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any
from urllib.parse import parse_qs

import clusterrun

logger = logging.getLogger("msg_app")
inbox: list[Any] = []


@clusterrun.on_message
def received(message: Any) -> None:
    inbox.append(message)
    logger.warning("worker %s got message %s", clusterrun.current_worker().id, json.dumps(message))


def _answer(path: str, query: str) -> dict[str, Any]:
    text = parse_qs(query).get("text", [""])[0]
    worker = clusterrun.current_worker()
    if path == "/crash":
        os._exit(1)
    if path == "/send":
        clusterrun.send({"text": text, "from": worker.id})
    elif path == "/broadcast":
        clusterrun.broadcast({"text": text, "from": worker.id})
    elif path == "/bad":
        try:
            clusterrun.send({"not json": object()})
        except clusterrun.MessageError as exc:
            return {"error": str(exc)}
    return {"id": worker.id, "inbox": inbox}


def wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    data = json.dumps(_answer(environ["PATH_INFO"], environ["QUERY_STRING"])).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    data = json.dumps(_answer(scope["path"], scope["query_string"].decode())).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": data})
