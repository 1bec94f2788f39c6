"""Hooks for pool_app: every hook writes a line to $POOL_HOOK_LOG; worker_init opens the pool again.

With $POOL_HOOK_FAIL set, worker_init raises, as when the database cannot be reached.
"""

from __future__ import annotations

import os
from typing import Any

import pool_app


def _note(text: str) -> None:
    with open(os.environ["POOL_HOOK_LOG"], "a") as log:
        log.write(text + "\n")


def worker_init(worker: Any) -> None:
    if os.environ.get("POOL_HOOK_FAIL"):
        raise RuntimeError("cannot reach the database")
    pool_app.POOL_PID = os.getpid()
    _note(f"worker_init {worker.id} {worker.pid}")


def worker_exit(worker: Any) -> None:
    _note(f"worker_exit {worker.id}")


def on_starting(config: Any) -> None:
    _note(f"on_starting {config.app}")


def when_ready(config: Any) -> None:
    _note("when_ready")


def on_reload(config: Any) -> None:
    _note("on_reload")


def on_exit(config: Any) -> None:
    _note("on_exit")
