"""Replacing workers with no dropped request: rolling restarts, and recycling one worker.

Both follow one path: fork the replacement into the same slot, wait until it
serves, then retire (drain and stop) the worker it replaces. A rolling restart
walks the slots one at a time; recycling (``--max-requests``, ``--max-memory``)
replaces one worker. If a replacement fails to boot, the old worker keeps
serving and a rolling restart stops where it is.
"""

from __future__ import annotations

import logging
import weakref
from collections import Counter
from collections.abc import Callable
from typing import Protocol

from clusterrun.config.options import Config
from clusterrun.primary.events import Events
from clusterrun.primary.handle import WorkerHandle

logger = logging.getLogger("clusterrun")


class Slots(Protocol):
    """What a rollout needs of the pool that owns it: the slots, and spawning into one and retiring from one.

    Declared here, beside its one consumer, so that the pool imports the rollout and not the other way round.
    """

    config: Config
    events: Events
    slots: dict[int, WorkerHandle]

    def spawn(self, index: int, replaces: WorkerHandle | None = None) -> WorkerHandle | None: ...

    def retire(self, handle: WorkerHandle, respawn: bool = False) -> None: ...


class Rollout:
    """Replacements, one slot at a time; it asks the pool for the slots and has it spawn and retire."""

    def __init__(self, pool: Slots) -> None:
        self.pool = pool
        self._queue: list[int] = []  # slots a rolling restart has still to replace
        self.current: WorkerHandle | None = None  # the replacement a rolling restart waits for
        # Workers a replacement was spawned for (--max-requests, --max-memory). Weak: reaped ones drop out.
        self._recycling: weakref.WeakSet[WorkerHandle] = weakref.WeakSet()
        # The last rolling restart, for status: how many there were, and how the last one went.
        self.reloads = 0
        self.outcome = "none"  # none, running, complete or aborted
        self.reason = ""  # why it aborted
        self.finished: Counter[str] = Counter()  # rolling restarts by how they ended: complete, aborted
        self.on_end: list[Callable[[], None]] = []  # called when a rolling restart completes or aborts

    @property
    def active(self) -> bool:
        return self.current is not None or bool(self._queue)

    def start(self) -> None:
        if self.active:
            logger.warning("a rolling restart is already running; this request is ignored")
            return
        self.pool.events.emit("on_reload", self.pool.config)
        self._queue = sorted(self.pool.slots)
        self.reloads += 1
        self.outcome, self.reason = "running", ""
        self._next()

    def recycle(self, handle: WorkerHandle, reason: str) -> None:
        if handle.retired or handle in self._recycling or self.pool.slots.get(handle.index) is not handle:
            return
        self._recycling.add(handle)
        logger.info("recycling %s: %s", handle.info, reason)
        self.pool.spawn(handle.index, handle)

    def cancel(self, reason: str = "the cluster is stopping") -> None:
        if self.active:
            self.outcome, self.reason = "aborted", reason
            self.finished["aborted"] += 1
            self._ended()
        self._queue = []
        self.current = None

    def replacement_ready(self, new: WorkerHandle) -> None:
        old = new.replaces
        new.replaces = None
        current = self.pool.slots.get(new.index)
        if current is not None and current is not new:
            self.pool.retire(current)  # the old worker, or another replacement that got there first
        self.pool.slots[new.index] = new
        logger.info("slot %d: %s replaced by %s", new.index, old.info if old else "none", new.info)
        if self.current is new:
            self._next()

    def replacement_failed(self, new: WorkerHandle, reason: str) -> None:
        if self.current is not new:
            logger.error("recycling %s failed: its replacement %s failed to boot: %s; it keeps serving",
                         new.replaces.info if new.replaces else "?", new.info, reason)
            return
        logger.error("rolling restart aborted: the new %s failed to boot: %s; the old workers keep serving",
                     new.info, reason)
        self.cancel(f"the new {new.info} failed to boot: {reason}")

    def _ended(self) -> None:
        for callback in self.on_end:
            callback()

    def _next(self) -> None:
        while self._queue:
            index = self._queue.pop(0)
            old = self.pool.slots.get(index)
            if old is not None and not old.retired:
                self.current = self.pool.spawn(index, old)
                if self.current is None:  # the system refused the fork (logged): the old workers keep serving
                    logger.error("rolling restart aborted: a new worker could not be forked")
                    self.cancel("a new worker could not be forked (the process limit, ulimit -u, or memory)")
                return
        self.current = None
        self.outcome = "complete"
        self.finished["complete"] += 1
        self._ended()
        logger.info("rolling restart complete: %d workers replaced", len(self.pool.slots))
