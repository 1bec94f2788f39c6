"""Log set-up: one format for the primary and every worker, each line naming its process.

Only clusterrun's own loggers are configured — the ``clusterrun`` tree, and the
``uvicorn`` tree that serves the workers (its errors, and its access lines with
``--access-log``) — each with clusterrun's handler and without propagation. The
root logger is the app's and the host program's: an app's
``logging.basicConfig(level=..., format=...)`` takes effect in its workers, and
a program that embeds ``Cluster.run()`` keeps its handlers. Records that no
handler takes (an app that configured nothing) fall back to clusterrun's format
through ``logging.lastResort``, so a worker's stray warnings still say which
worker wrote them. ``setup`` returns what puts everything back as it was.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from . import __version__, listeners
from .identity import WorkerInfo

if TYPE_CHECKING:
    import socket

    from .config import Config
    from .endpoints import Endpoints

logger = logging.getLogger("clusterrun")

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

# The loggers clusterrun configures; nothing else is touched.
_OWN = ("clusterrun", "uvicorn", "uvicorn.error", "uvicorn.access")


@dataclass(frozen=True)
class _Saved:
    handlers: list[logging.Handler]
    level: int
    propagate: bool
    disabled: bool


def setup(level: str, worker: WorkerInfo | None = None, access_log: bool = False) -> Callable[[], None]:
    """Route clusterrun's and uvicorn's records to stderr, tagged with the primary or the worker's id, index and
    pid; the function that restores the loggers (and the last-resort handler) as they were."""
    saved = {name: _save(logging.getLogger(name)) for name in _OWN}
    saved_last_resort = logging.lastResort
    who = f"worker {worker.id} index {worker.index} pid {worker.pid}" if worker else "primary pid %(process)d"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s [{who}] %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))

    own = logging.getLogger("clusterrun")
    _own(own, handler, _LEVELS[level])
    # uvicorn chats at INFO about lifespan and shutdown in every worker; the primary says what matters.
    # (Set on the tree's top too: a level left unset would follow the root's, the app's choice.)
    uvicorn_level = logging.DEBUG if level == "debug" else logging.WARNING
    _own(logging.getLogger("uvicorn"), handler, uvicorn_level)
    logging.getLogger("uvicorn.error").setLevel(uvicorn_level)
    access = logging.getLogger("uvicorn.access")
    access.handlers = []
    access.setLevel(logging.INFO)
    # uvicorn's protocol logs access lines only when this logger has handlers (hasHandlers() looks up the
    # propagation chain, to the "uvicorn" logger's): cut it off when not wanted.
    access.propagate = access_log
    access.disabled = not access_log

    # What nobody handles (an app that configured no logging) still names its process. As Python's own
    # last resort: warnings and errors only.
    fallback = logging.StreamHandler(sys.stderr)
    fallback.setFormatter(handler.formatter)
    fallback.setLevel(logging.WARNING)
    logging.lastResort = fallback

    def restore() -> None:
        for name, was in saved.items():
            _restore(logging.getLogger(name), was)
        logging.lastResort = saved_last_resort
        for made in (handler, fallback):
            made.flush()
            made.close()

    return restore


def _own(target: logging.Logger, handler: logging.Handler, level: int) -> None:
    target.handlers = [handler]
    target.setLevel(level)
    target.propagate = False
    target.disabled = False


def _save(target: logging.Logger) -> _Saved:
    return _Saved(list(target.handlers), target.level, target.propagate, target.disabled)


def _restore(target: logging.Logger, saved: _Saved) -> None:
    target.handlers = saved.handlers
    target.setLevel(saved.level)
    target.propagate = saved.propagate
    target.disabled = saved.disabled


def announce_start(config: Config, policy: str, sockets: list[socket.socket], endpoints: Endpoints) -> None:
    """The primary's first lines: what runs, how many workers and why, where it listens and is steered."""
    spec, source, target = config.workers_spec, config.workers_from, config.workers
    note = f"{source} {spec}" if source.startswith("--") else f"{source}={spec}"
    if spec == "auto" or spec.endswith("x"):
        note += f": {config.usable_cpus} usable CPU{'s' if config.usable_cpus > 1 else ''}"
    logger.info("clusterrun %s: %s with %d worker%s (%s), policy %s", __version__, config.app, target,
                "" if target == 1 else "s", note, policy)
    for sock in sockets:
        logger.info("listening on %s", listeners.describe(sock))
    if endpoints.control_path:
        logger.info("control socket %s: clusterrun status %s", endpoints.control_path, config.cluster_name)
    if endpoints.metrics_url:
        logger.info("metrics on %s", endpoints.metrics_url)
