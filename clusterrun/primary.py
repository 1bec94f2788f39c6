"""The primary: binds, forks, reaps, respawns, dispatches and stops — one thread, one wait.

Everything the primary reacts to is a file descriptor in one selector: the
signal inbox (signals.py: each signal's number arrives on a socket), every
worker's channel, and the
listeners under a dispatching policy. Timers (boot and drain deadlines) only
shorten the wait. No polling, and nothing ever blocks on one worker.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from . import __version__, identity, listeners, messaging, priority, worker
from .channel import Channel, encode
from .config import Config
from .counters import SharedCounter
from .dispatch import Dispatcher
from .errors import EXIT_BOOT, EXIT_ERROR, EXIT_OK, EXIT_RESTART_LIMIT, ChannelError, ClusterrunError, MessageError
from .events import Events
from .policies import make_policy
from .protocol import Beat, BootFailed, Broadcast, Draining, Frame, Message, Online, Ready, Recycle
from .rollout import Rollout
from .signals import SignalInbox
from .supervision import Timers, Watchdog, WorkerHandle, WorkerState, describe_status, exit_of, late_after
from .throttle import RestartThrottle

logger = logging.getLogger("clusterrun")

class Primary:
    def __init__(
        self, config: Config, clock: Callable[[], float] = time.monotonic, preloaded: Any = None,
        events: Events | None = None,
    ) -> None:
        self.config = config
        self.events = events or Events()
        self.preloaded = preloaded  # the app, imported before forking (--preload)
        self.clock = clock
        self.policy = make_policy(config.policy)
        self.throttle = RestartThrottle(config.max_restarts, config.restart_window, clock,
                                        min_uptime=config.min_uptime)
        self.timers = Timers(clock)
        self.selector = selectors.DefaultSelector()
        self.listeners: list[socket.socket] = []
        self.workers: dict[int, WorkerHandle] = {}  # by pid: every live child
        self.slots: dict[int, WorkerHandle] = {}  # by index: the worker that serves the slot now
        self.target = config.workers
        self.next_id = 1
        self.booted = False
        self.stopping = False
        self.exit_code = EXIT_OK
        self.dispatcher = Dispatcher(self.policy, self.selector, self.timers, late_after(config.timeout), clock)
        self.rollout = Rollout(self.slots, lambda index, old: self._spawn(index, replaces=old), self._retire)
        self.watchdog = Watchdog(config.timeout, clock, self.timers, self.workers)
        self.pending_respawns: set[int] = set()  # slots waiting out their backoff delay
        self.signals = SignalInbox(self.selector, self._on_signal)

    # The loop.

    def run(self) -> int:
        """Serve until stopped; the process exit code. Every child is reaped before this returns."""
        try:
            identity.become_primary()
            self._bind()
            self.signals.install()
            logger.info(
                "clusterrun %s: %s with %d worker%s (%s), policy %s", __version__, self.config.app, self.target,
                "" if self.target == 1 else "s", self._workers_note(), self.policy.name,
            )
            for sock in self.listeners:
                logger.info("listening on %s", listeners.describe(sock))
            if self.preloaded is not None:
                # Objects the app made at import move to the permanent generation: the collector then never
                # writes to their pages in a worker, so copy-on-write keeps them shared.
                gc.freeze()
            if self.policy.dispatches:
                priority.give_way()
            for index in range(self.target):
                self._spawn(index)
            self.watchdog.start()
            while self.workers or not self.stopping:
                events = self.selector.select(self.timers.wait_time())
                for key, mask in events:
                    key.data(mask)
                self.timers.run_due()
            logger.info("stopped (exit code %d)", self.exit_code)
            return self.exit_code
        except ClusterrunError:
            raise  # the CLI's to report, e.g. a listener that cannot be bound
        except BaseException:
            logger.critical("the primary failed; stopping every worker", exc_info=True)
            return EXIT_ERROR
        finally:
            self._cleanup()

    def _workers_note(self) -> str:
        spec, source = self.config.workers_spec, self.config.workers_from
        said = f"{source} {spec}" if source.startswith("--") else f"{source}={spec}"
        if spec == "auto" or spec.endswith("x"):
            return f"{said}: {self.config.usable_cpus} usable CPU{'s' if self.config.usable_cpus > 1 else ''}"
        return said

    def _bind(self) -> None:
        for address in self.config.binds:
            self.listeners.append(self.policy.bind(address, self.config.backlog))
        self.dispatcher.listen(self.listeners)

    def _on_signal(self, signum: int) -> None:
        if signum == signal.SIGCHLD:
            self._reap()
        elif signum in (signal.SIGTERM, signal.SIGINT):
            if self.stopping and signum == signal.SIGINT:
                logger.warning("second interrupt: killing every worker now")
                self._kill_all()
            else:
                logger.info("received %s: stopping gracefully (up to %gs)", signal.Signals(signum).name,
                            self.config.graceful_timeout)
                self.stop()
        elif signum == signal.SIGQUIT:
            # gunicorn's quick stop: no drain; requests in flight are cut off.
            logger.warning("received SIGQUIT: quick stop, killing every worker now")
            self.stop()
            self._kill_all()
        elif signum == signal.SIGUSR1:
            # Reserved for reopening log files (logrotate), as in gunicorn and nginx; nothing to reopen yet.
            logger.info("received SIGUSR1: clusterrun logs to stderr only, so there is no log file to reopen; "
                        "ignored")
        elif signum in (signal.SIGHUP, signal.SIGUSR2):
            logger.info("received %s: rolling restart", signal.Signals(signum).name)
            self.reload()
        elif signum == signal.SIGTTIN:
            self.scale(self.target + 1)
        elif signum == signal.SIGTTOU:
            self.scale(self.target - 1)
        else:
            logger.warning("received %s, which clusterrun does not use: ignored", signal.Signals(signum).name)

    # Workers: spawn, reap, respawn.

    def _spawn(self, index: int, replaces: WorkerHandle | None = None) -> WorkerHandle:
        parent_end, child_end = Channel.pair()
        closes = SharedCounter()  # made before the fork: the worker writes it, the primary reads it
        worker_id = self.next_id
        self.next_id += 1
        sockets = self.policy.worker_sockets(index, self.listeners, self.config.backlog)
        primary_fds = [*self.signals.filenos(), parent_end.fileno()]
        primary_fds += [fd for w in self.workers.values() for fd in w.channel.filenos()]
        primary_fds += [s.fileno() for s in (*self.listeners, *self.policy.held_sockets()) if s not in sockets]
        with contextlib.suppress(AttributeError, OSError):
            primary_fds.append(self.selector.fileno())  # type: ignore[attr-defined]
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            worker.run(self.config, worker_id, index, child_end, sockets, primary_fds, closes, self.preloaded)
        # The primary keeps the worker's end open too: what the worker never reads outlives it (channel.py).
        handle = WorkerHandle(worker_id, index, pid, Channel(parent_end, keep=child_end), started=self.clock(),
                              replaces=replaces, closes=closes)
        handle.channel.on_backlog = lambda waiting: self.dispatcher.backlog_changed(handle, waiting)
        self.workers[pid] = handle
        if replaces is None:
            self.slots[index] = handle
        self.selector.register(handle.channel.sock, selectors.EVENT_READ, lambda mask: self._on_channel(handle, mask))
        handle.boot_timer = self.timers.add(self.config.boot_timeout, lambda: self._boot_overdue(handle))
        logger.debug("spawned %s", handle.info)
        self.events.emit("fork", handle.public)
        return handle

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            handle = self.workers.pop(pid, None)
            if handle is not None:
                self._on_exit(handle, status)

    def _on_exit(self, handle: WorkerHandle, status: int) -> None:
        self.dispatcher.gone(handle)
        # Connections passed to the dead worker that it never read, and those still queued for it, never
        # reached it: they go to another worker.
        self.dispatcher.redispatch(handle.channel.take_undelivered_fds())
        self._close_channel(handle)
        handle.channel.close()
        handle.closes.close()  # its shared page: the primary's last mapping of it
        handle.boot_timer.cancel()
        how = describe_status(status)
        self.events.emit("exit", handle.public, *exit_of(status))
        if self.slots.get(handle.index) is handle:
            del self.slots[handle.index]
        was = handle.state
        handle.move(WorkerState.EXITED)
        if was is WorkerState.STARTING:
            self._on_boot_failure(handle, how)
        elif self.stopping or was is WorkerState.DRAINING:
            logger.debug("%s exited (%s)", handle.info, how)
        else:
            self._on_crash(handle, how)
        if handle.index >= self.target and all(w.index != handle.index for w in self.workers.values()):
            self.policy.release(handle.index)  # scaled down: the slot's own sockets (reuseport) go with it
        if not self.slots and not self.pending_respawns and not self.stopping and not self.rollout.active:
            logger.error("no worker is left: stopping")
            self.exit_code = self.exit_code or EXIT_RESTART_LIMIT
            self.stop()

    def _on_boot_failure(self, handle: WorkerHandle, how: str) -> None:
        reason = handle.boot_error or f"it exited ({how}) before it was ready"
        if self.stopping:
            logger.debug("%s exited while starting (%s)", handle.info, how)
        elif handle.replaces is not None:
            self.rollout.replacement_failed(handle, reason)
        elif not self.booted:
            # Before the first worker ever served: the app cannot start. One line, exit 3, no loop.
            logger.error("app %s failed to boot in %s: %s", self.config.app, handle.info, reason)
            self.exit_code = EXIT_BOOT
            self.stop()
        else:
            # The cluster serves; this respawn failed to start (a broken deploy, a missing resource): an unstable
            # death of its slot, throttled, while the other workers go on serving.
            self._on_crash(handle, reason)

    def _on_crash(self, handle: WorkerHandle, how: str) -> None:
        now = self.clock()
        served = None if handle.ready_at is None else now - handle.ready_at
        decision = self.throttle.record_death(handle.index, uptime=now - handle.started, served=served)
        if not decision.respawn:
            logger.error(
                "slot %d died %d times within %gs before it was ready or within --min-uptime %gs of it (last: %s, "
                "%s): not respawning it; raise --max-restarts or fix the crash", handle.index, decision.deaths,
                self.config.restart_window, self.config.min_uptime, handle.info, how,
            )
            self.policy.release(handle.index)  # nobody will serve the slot's own sockets (reuseport) again
            return
        if decision.stable:
            note = f"it had served for {served:.1f}s; crash {decision.crashes} of slot {handle.index}"
        else:
            note = (f"an unstable start: {decision.deaths} of --max-restarts {self.config.max_restarts} within "
                    f"{self.config.restart_window:g}s")
        logger.warning("%s died (%s); respawning slot %d in %gs (%s)", handle.info, how, handle.index,
                       decision.delay, note)
        self.pending_respawns.add(handle.index)
        index = handle.index  # not the handle: the timer must not keep the dead worker's handle alive
        self.timers.add(decision.delay, lambda: self._respawn(index))

    def _respawn(self, index: int) -> None:
        self.pending_respawns.discard(index)
        if not self.stopping and index not in self.slots and index < self.target:
            self._spawn(index)

    def _boot_overdue(self, handle: WorkerHandle) -> None:
        if handle.state is WorkerState.STARTING and handle.pid in self.workers:
            handle.boot_error = f"it was not ready within --boot-timeout {self.config.boot_timeout:g}s"
            handle.kill()

    # Frames from workers.

    def _on_channel(self, handle: WorkerHandle, mask: int) -> None:
        if mask & selectors.EVENT_WRITE:
            handle.channel.flush()
        if not mask & selectors.EVENT_READ:
            return
        try:
            frames = handle.channel.receive()
        except ChannelError as exc:
            logger.error("%s sent a malformed frame (%s): killing it", handle.info, exc)
            self._close_channel(handle)
            handle.kill()
            return
        handle.last_seen = self.clock()
        for frame, fds in frames:
            for fd in fds:
                os.close(fd)  # workers have no business sending descriptors
            self._on_frame(handle, frame)
        self.dispatcher.heard_from(handle)
        if handle.channel.eof:
            self._close_channel(handle)

    def _on_frame(self, handle: WorkerHandle, frame: Frame) -> None:
        match frame:
            case Ready(interface, room):
                handle.connection_room = room
                self._on_ready(handle, interface)
            case BootFailed(error):
                handle.boot_error = error
            case Beat():
                pass  # last_seen was set above
            case Message(data):
                self.events.emit("message", handle.public, data)
            case Broadcast(data):
                try:
                    self.broadcast(data, sender=handle)
                except MessageError as exc:
                    logger.error("cannot relay a broadcast from %s: %s", handle.info, exc)
            case Online():
                self.events.emit("online", handle.public)
            case Recycle(reason):
                self._recycle(handle, reason)
            case Draining():
                # The worker was told to stop by someone else (SIGTERM): route nothing more to it, let it drain.
                self._retire(handle, respawn=not self.stopping)
            case _:
                logger.debug("ignoring %s from %s: not a frame for the primary", type(frame).__name__, handle.info)

    def _on_ready(self, handle: WorkerHandle, interface: str) -> None:
        if handle.state is not WorkerState.STARTING:
            return
        handle.boot_timer.cancel()
        handle.mark_ready(interface, self.clock())
        self.events.emit("listening", handle.public)
        if self.stopping:
            self._retire(handle)
            return
        self.dispatcher.ready_worker(handle)
        if self.booted:
            logger.info("%s is serving", handle.info)
        if handle.replaces is not None:
            self.rollout.replacement_ready(handle)
        if not self.booted and len(self.slots) == self.target and all(w.is_ready for w in self.slots.values()):
            self.booted = True
            pids = ", ".join(str(w.pid) for w in sorted(self.slots.values(), key=lambda w: w.index))
            logger.info("ready: %d worker%s serving %s (%s), pids %s", self.target, "" if self.target == 1 else "s",
                        self.config.app, interface, pids)
            if interface == "asgi" and self.config.threads > 1:
                logger.warning("--threads %d is ignored: %s is an ASGI app, which runs on each worker's event loop;"
                               " --threads sizes the thread pool of WSGI apps", self.config.threads, self.config.app)

    # Retiring: a worker is drained and stopped on purpose.

    def _retire(self, handle: WorkerHandle, respawn: bool = False) -> None:
        """Route nothing more to ``handle`` and ask it to drain; with ``respawn``, fill its slot anew."""
        if handle.state in (WorkerState.DRAINING, WorkerState.EXITED):
            return
        self.dispatcher.gone(handle)
        if respawn and self.slots.get(handle.index) is handle:
            del self.slots[handle.index]
            self._spawn(handle.index)
        handle.stop(linger=not self.stopping)

    def _close_channel(self, handle: WorkerHandle) -> None:
        """Stop talking to the worker. The channel itself is closed once it is reaped: until then, what it never
        read stays recoverable (``Channel.take_undelivered_fds``)."""
        if handle.channel.is_open:
            handle.channel.hang_up()
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(handle.channel.sock)
            self.events.emit("disconnect", handle.public)

    # Rolling restart and scaling.

    def reload(self) -> None:
        if not self.stopping:
            self.rollout.start()

    def _recycle(self, handle: WorkerHandle, reason: str) -> None:
        if not self.stopping:
            self.rollout.recycle(handle, reason)

    def scale(self, target: int) -> None:
        if self.stopping or target < 1:
            logger.warning("cannot scale to %d workers; at least 1 is needed", target)
            return
        while self.target < target:
            free = next(i for i in range(len(self.slots) + 1) if i not in self.slots)
            self.target += 1
            self._spawn(free)
        while self.target > target:
            self.target -= 1
            handle = self.slots.pop(max(self.slots))
            self._retire(handle)
        logger.info("scaled to %d worker%s", self.target, "" if self.target == 1 else "s")

    def broadcast(self, message: Any, sender: WorkerHandle | None = None) -> None:
        """Send ``message`` to every live worker but ``sender``: once each, checked and encoded once."""
        messaging.check(message)
        frame = encode(Message(message))
        for handle in list(self.workers.values()):
            if handle is not sender and handle.channel.is_open:
                handle.channel.send_bytes(frame)

    # Stopping.

    def stop(self) -> None:
        """Stop accepting, let every worker drain within --graceful-timeout, then kill what is left."""
        if self.stopping:
            return
        self.stopping = True
        self.rollout.cancel()
        self.dispatcher.close()
        for handle in list(self.workers.values()):
            if handle.state is WorkerState.STARTING:
                handle.move(WorkerState.DRAINING)  # nothing to drain yet: it is stopped at once
                handle.terminate()
            else:
                self._retire(handle)
        self.timers.add(self.config.graceful_timeout, self._drain_overdue)

    def _drain_overdue(self) -> None:
        if self.workers:
            logger.warning("%d worker%s did not finish within --graceful-timeout %gs: killing",
                           len(self.workers), "" if len(self.workers) == 1 else "s", self.config.graceful_timeout)
            self._kill_all()

    def _kill_all(self) -> None:
        for handle in self.workers.values():
            handle.kill()

    def _cleanup(self) -> None:
        """Leave nothing behind: no live child, listener, socket file or CPU policy; the host's signal handlers back."""
        for handle in list(self.workers.values()):
            handle.kill()
        for pid in list(self.workers):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        for handle in self.workers.values():
            self._close_channel(handle)
            handle.channel.close()
            handle.closes.close()
        self.workers.clear()
        self.dispatcher.close()
        self.policy.close()
        for sock in self.listeners:
            path = sock.getsockname() if sock.family == socket.AF_UNIX else None
            listeners.close_quietly(sock)
            if path:
                with contextlib.suppress(OSError):
                    os.unlink(path)
        self.signals.restore()  # the host's handlers (Cluster.run() embedded in a program) come back
        self.selector.close()
        priority.restore()  # a process that called Cluster.run() goes on as it was
