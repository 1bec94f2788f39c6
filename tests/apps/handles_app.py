"""Test app for handles (a socket passed with a message), as raw WSGI (``wsgi``) and raw ASGI (``asgi``).

/   the worker's id, index and pid as JSON (on any connection: the cluster's own, or one passed as a handle)

Messages from the primary (tests/apps/handles_runner.py) say what to do with the socket that came with them:
"serve" hands it to clusterrun.serve_connection ("thread": from a thread of its own); "raw" writes one line on
it and closes it; "accept" (a listener) accepts one connection on it and writes one line there. A callback of
one argument is registered too: it must keep receiving the message alone.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from typing import Any

import clusterrun

logger = logging.getLogger("handles_app")


@clusterrun.on_message
def with_handle(message: Any, handle: socket.socket | None) -> None:
    worker = clusterrun.current_worker()
    assert worker is not None
    if handle is None:
        logger.warning("worker %d got %s without a handle", worker.id, json.dumps(message))
    elif message["mode"] == "serve":
        clusterrun.serve_connection(handle)
    elif message["mode"] == "thread":  # handed to the server from another thread than the event loop's
        threading.Thread(target=clusterrun.serve_connection, args=(handle,)).start()
    elif message["mode"] == "raw":
        handle.sendall(f"raw from worker {worker.id} index {worker.index}\n".encode())
        handle.close()
    elif message["mode"] == "accept":  # a listener: one connection, accepted off the event loop
        threading.Thread(target=_accept_one, args=(handle, worker.id), daemon=True).start()


def _accept_one(listener: socket.socket, worker_id: int) -> None:
    with listener:
        listener.setblocking(True)
        conn, _address = listener.accept()
        with conn:
            conn.sendall(f"accepted by worker {worker_id}\n".encode())


@clusterrun.on_message
def message_only(message: Any) -> None:
    logger.warning("one-argument callback got %s", json.dumps(message))


def _who() -> bytes:
    worker = clusterrun.current_worker()
    assert worker is not None
    return json.dumps({"id": worker.id, "index": worker.index, "pid": worker.pid}).encode()


def wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    data = _who()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    data = _who()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": data})
