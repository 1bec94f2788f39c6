"""Log set-up: one format for the primary and every worker, each line naming its process."""

from __future__ import annotations

import logging
import sys

from .identity import WorkerInfo

logger = logging.getLogger("clusterrun")

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def setup(level: str, worker: WorkerInfo | None = None, access_log: bool = False) -> None:
    """Route every log record to stderr, tagged with the primary or the worker's id, index and pid."""
    who = f"worker {worker.id} index {worker.index} pid {worker.pid}" if worker else "primary pid %(process)d"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s [{who}] %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(_LEVELS[level])
    # uvicorn chats at INFO about lifespan and shutdown in every worker; the primary says what matters.
    logging.getLogger("uvicorn.error").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
    access = logging.getLogger("uvicorn.access")
    access.setLevel(logging.INFO)
    # uvicorn's protocol logs access lines only when this logger has handlers: cut it off when not wanted.
    access.propagate = access_log
    access.disabled = not access_log
