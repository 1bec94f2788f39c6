"""What the primary does with what a worker sends over its channel: each frame kind to its action.

It acts on the pool (readiness, broadcasts, recycling, retiring), tells the dispatcher the worker was heard
from, and emits the cluster's events: it takes those three and the clock, not the whole Primary.
"""

from __future__ import annotations

import logging
import os
import selectors
from collections.abc import Callable

from clusterrun.errors import ChannelError, MessageError
from clusterrun.host.procstats import cpu_seconds
from clusterrun.primary.dispatch import Dispatcher
from clusterrun.primary.events import Events
from clusterrun.primary.handle import WorkerHandle
from clusterrun.primary.pool import Pool
from clusterrun.wire.protocol import Beat, BootFailed, Broadcast, Draining, Frame, Message, Online, Ready, Recycle

logger = logging.getLogger("clusterrun")


class WorkerFrames:
    def __init__(
        self, pool: Pool, dispatcher: Dispatcher, events: Events, clock: Callable[[], float],
        warm_up: Callable[[str], None] | None = None,
    ) -> None:
        self.pool = pool
        self.dispatcher = dispatcher
        self.events = events
        self.clock = clock
        # Called once with the interface the first ready worker reports. With --interface auto and no --preload the
        # primary cannot know before the first fork whether the app is WSGI or ASGI, so it imports uvicorn's stack
        # only once a worker says ASGI: later forks (respawns, rolling restarts) then share it instead of each
        # importing it, and a WSGI worker never carries it.
        self.warm_up: Callable[[str], None] | None = warm_up
        pool.last_words = lambda handle: self.on_channel(handle, selectors.EVENT_READ)

    def on_channel(self, handle: WorkerHandle, mask: int) -> None:
        """The worker's channel is readable (frames) or writable (a backlog to flush)."""
        pool = self.pool
        if mask & selectors.EVENT_WRITE:
            handle.channel.flush()
        if not mask & selectors.EVENT_READ:
            return
        try:
            frames = handle.channel.receive()
        except ChannelError as exc:
            logger.error("%s sent a malformed frame (%s): killing it", handle.info, exc)
            pool.hang_up(handle)
            handle.kill()
            return
        handle.last_seen = self.clock()
        for frame, fds in frames:
            for fd in fds:
                os.close(fd)  # workers have no business sending descriptors
            self.on_frame(handle, frame)
        self.dispatcher.heard_from(handle)
        if handle.channel.eof:
            pool.hang_up(handle)

    def on_frame(self, handle: WorkerHandle, frame: Frame) -> None:
        pool, events = self.pool, self.events
        match frame:
            case Ready(interface, room):
                handle.connection_room = room
                warm_up, self.warm_up = self.warm_up, None
                if warm_up is not None:
                    warm_up(interface)
                pool.ready(handle, interface)
            case BootFailed(error):
                handle.boot_error = error
            case Beat() as counts:
                handle.counts = counts  # last_seen was set above
                handle.cpu_seconds = cpu_seconds(handle.pid) or handle.cpu_seconds
            case Message(data):
                events.emit("message", handle.public, data)
            case Broadcast(data):
                try:
                    pool.broadcast(data, sender=handle)
                except MessageError as exc:
                    logger.error("cannot relay a broadcast from %s: %s", handle.info, exc)
            case Online():
                events.emit("online", handle.public)
            case Recycle(reason):
                if not pool.stopping:
                    pool.rollout.recycle(handle, reason)
            case Draining():
                # The worker was told to stop by someone else (SIGTERM): route nothing more to it, let it drain.
                pool.retire(handle, respawn=not pool.stopping)
            case _:
                logger.debug("ignoring %s from %s: not a frame for the primary", type(frame).__name__, handle.info)
