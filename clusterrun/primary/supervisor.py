"""The primary: one thread, one wait — the loop, and the wiring between the pieces that do the work.

Everything the primary reacts to is a file descriptor in one selector: the signal inbox (signals.py), every worker's
channel, and the listeners under a dispatching policy (dispatch.py). Timers (boot, respawn and drain deadlines, the
watchdog) only shorten the wait. No polling, and nothing ever blocks on one worker. The workers and their slots are
the pool's (pool.py); forking one is spawn.py's; what each frame kind is, protocol.py's; taking a configuration read
again, reconfigure.py's. Here: what each signal and each frame makes happen, and stopping. The door hands in the
worker's entry (``target``) and what ops/ runs in the same wait (``Ops``: ops/ sits above).
"""
from __future__ import annotations

import gc
import logging
import selectors
import signal
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from clusterrun import identity, logs
from clusterrun.config.options import Config
from clusterrun.errors import EXIT_ERROR, EXIT_OK, ClusterrunError
from clusterrun.host import listeners, priority
from clusterrun.host.pidfile import PidFile
from clusterrun.host.sdnotify import Notifier
from clusterrun.host.signals import SignalInbox
from clusterrun.host.timers import Timers
from clusterrun.primary.dispatch import Dispatcher
from clusterrun.primary.events import Events
from clusterrun.primary.frames import WorkerFrames
from clusterrun.primary.handle import WorkerHandle
from clusterrun.primary.policies import make_policy
from clusterrun.primary.pool import Pool
from clusterrun.primary.reconfigure import Outcome, reread
from clusterrun.primary.reloader import make_reloader
from clusterrun.primary.spawn import Forker, ForkSettings, WorkerEntry
from clusterrun.primary.watchdog import Watchdog
from clusterrun.wire.heartbeat import late_after
from clusterrun.wire.protocol import ReopenLogs

if TYPE_CHECKING:  # a type only: at run time the core imports adapters lazily (see api.prepare_engine)
    from clusterrun.adapters.entry import LoadedApp

logger = logging.getLogger("clusterrun")


class Ops(Protocol):
    """What runs in the wait beside the workers, handed in by the door (clusterrun.ops.endpoints.Endpoints)."""

    def open(self) -> None: ...  # before the app's listeners: a second cluster of one name stops there
    def announce(self, policy: str, sockets: Sequence[socket.socket]) -> None: ...  # the start banner
    def status(self) -> str: ...  # one line for people, sent to systemd
    def filenos(self) -> list[int]: ...  # what a forked worker must close
    def close(self) -> None: ...


class Primary:
    def __init__(
        self, config: Config, target: WorkerEntry, ops: Callable[[Primary], Ops],
        clock: Callable[[], float] = time.monotonic, preloaded: LoadedApp | None = None, events: Events | None = None,
        warm_up: Callable[[str], None] | None = None, fork_settings: ForkSettings | None = None,
        rebuild: Callable[[], Config] | None = None,
    ) -> None:
        """The door hands in ``target``, what each forked worker runs (clusterrun.worker.child.run), ``ops``, which
        builds what runs beside the workers from the parts made here (pool, dispatcher, selector, timers), and
        ``rebuild()``, the Config built again from its source (SIGHUP); ``warm_up(interface)`` is called once a
        first worker says what it serves (see WorkerFrames)."""
        self.config = config
        self.events = events or Events()
        self.clock = clock
        self.policy = make_policy(config.policy)
        self.timers = Timers(clock)
        self.selector = selectors.DefaultSelector()
        self.listeners: list[socket.socket] = []
        self.exit_code = EXIT_OK
        self.signals = SignalInbox(self.selector, self._on_signal)
        self.dispatcher = Dispatcher(self.policy, self.selector, self.timers, late_after(config.timeout), clock,
                                     config.limit_concurrency)
        # The forker calls the frames late: they act on the pool, which needs the forker first.
        self.forker = forker = Forker(config, target, self.policy, self.listeners, self.selector, self._own_fds,
                                      self.dispatcher, lambda h, mask: self.frames.on_channel(h, mask), clock,
                                      preloaded, fork_settings)
        self.pool = Pool(config, clock, self.timers, forker, self.dispatcher, self.policy, self.events, forker.settings)
        self.frames = WorkerFrames(self.pool, self.dispatcher, self.events, clock, warm_up)
        self.watchdog = Watchdog(config.timeout, clock, self.timers, self.pool.workers, config.request_timeout)
        self.preloaded = preloaded
        self.rebuild = rebuild or (lambda: self.config)  # no source (embedded with a Config): nothing to re-read
        self.started = clock()
        self.shutting_down = False  # told to stop: /readyz answers 503 (during --shutdown-delay, still serving)
        self.endpoints = ops(self)  # the control socket, /metrics: once every part they read is made
        self.reloader = make_reloader(config, self.selector, self.timers, lambda: self.pool.rollout.active, self.reload)
        self.notifier = Notifier(self.timers, self.endpoints.status)  # systemd, when it started us
        self.events.on("when_ready", lambda config: self.notifier.ready())
        self.events.on("on_reload", lambda config: self.notifier.reloading())
        self.pool.rollout.on_end.append(self.notifier.reload_finished)
        self.pid_file = PidFile(config.pid_file) if config.pid_file else None

    @property
    def workers(self) -> Mapping[int, WorkerHandle]:
        return self.pool.workers

    @property
    def stopping(self) -> bool:
        return self.pool.stopping

    def _own_fds(self) -> list[int]:
        """What a forked worker must close: the signal inbox, the endpoints, every other worker's channel (with
        the connections queued on it), the connections held for want of a worker."""
        reloader = self.reloader.filenos() if self.reloader else []
        return [*self.signals.filenos(), *self.endpoints.filenos(), *reloader, *self.notifier.filenos(),
                *self.dispatcher.filenos(), *(fd for w in self.pool.workers.values() for fd in w.channel.filenos())]

    # The loop.

    def run(self) -> int:
        """Serve until stopped; the process exit code. Every child is reaped before this returns."""
        try:
            identity.become_primary()
            self.events.emit("on_starting", self.config)
            self.endpoints.open()
            for address in self.config.binds:
                self.listeners.append(self.policy.bind(address, self.config.backlog))
            listeners.forget_activation()
            self.dispatcher.listen(self.listeners)
            if self.pid_file is not None:
                self.pid_file.write()
            self.signals.install()
            self.endpoints.announce(self.policy.name, self.listeners)
            if self.preloaded is not None:
                # Objects the app made at import move to the permanent generation: the collector then never
                # writes to their pages in a worker, so copy-on-write keeps them shared.
                gc.freeze()
            if self.reloader is not None:
                self.reloader.start()
            if self.policy.dispatches:
                priority.give_way()
            for index in range(self.pool.target):
                self.pool.spawn(index)
            self.watchdog.start()
            self.notifier.start()
            while self.pool.workers or not self.stopping:
                for key, mask in self.selector.select(self.timers.wait_time()):
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
            self.events.emit("on_exit", self.config)

    # Signals.

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if signum == signal.SIGCHLD:
            while (verdict := self.pool.reap()) is not None:
                self.exit_code = self.exit_code or verdict.value
                self.stop(delay=0.0)
        elif signum == signal.SIGINT and self.shutting_down:
            logger.warning("second interrupt: killing every worker now")
            self.stop(delay=0.0)
            self.pool.kill_all()
        elif signum in (signal.SIGTERM, signal.SIGINT):
            logger.info("received %s: stopping gracefully (up to %gs)", name, self.config.graceful_timeout)
            self.stop()
        elif signum == signal.SIGQUIT:
            # gunicorn's quick stop: no drain; requests in flight are cut off.
            logger.warning("received SIGQUIT: quick stop, every worker quits now")
            self.pool.quit_all()  # first: an idle worker told to drain would be gone before worker_int
            self.stop(delay=0.0)
        elif signum == signal.SIGUSR1:  # logrotate's postrotate, as in gunicorn and nginx
            logger.info("received SIGUSR1: reopening %d log file%s here and in every worker", count := logs.reopen(),
                        "" if count == 1 else "s")
            self.pool.broadcast_frame(ReopenLogs())
        elif signum == signal.SIGHUP:  # as gunicorn's: the configuration is read again first
            logger.info("received SIGHUP: re-reading the configuration, then a rolling restart")
            self.reconfigure()
        elif signum == signal.SIGUSR2:
            logger.info("received SIGUSR2: rolling restart")
            self.reload()
        elif signum in (signal.SIGTTIN, signal.SIGTTOU):
            self.scale(self.pool.target + (1 if signum == signal.SIGTTIN else -1))
        else:
            logger.warning("received %s, which clusterrun does not use: ignored", name)

    # Steering: the signals' actions and the Cluster API's.

    def reload(self) -> None:
        if not self.stopping:
            self.pool.rollout.start()

    def reconfigure(self) -> Outcome:
        """SIGHUP's: the configuration read again, what can change taken, then a rolling restart."""
        return reread(self, self.rebuild)

    def scale(self, target: int) -> None:
        self.pool.scale(target)

    # Stopping.

    def stop(self, timeout: float | None = None, delay: float | None = None) -> None:
        """Stop accepting, let every worker drain within ``timeout`` (--graceful-timeout), then kill what is left.

        First, for ``delay`` (--shutdown-delay), only /readyz says so: serving goes on while load balancers
        take the cluster out of rotation.
        """
        if self.stopping:
            return
        delay = self.config.shutdown_delay if delay is None else delay
        if not self.shutting_down:
            self.shutting_down = True
            self.notifier.stopping()
            if delay > 0:
                logger.info("/readyz now answers 503; serving %gs more (--shutdown-delay) before draining", delay)
                self.timers.add(delay, lambda: self.stop(timeout, delay=0.0))
                return
        elif delay > 0:
            return  # already waiting out the delay
        self.dispatcher.close()
        self.pool.stop_all()
        limit = f"--graceful-timeout {self.config.graceful_timeout:g}s" if timeout is None else f"{timeout:g}s"
        self.timers.add(self.config.graceful_timeout if timeout is None else timeout, lambda: self._overdue(limit))

    def _overdue(self, limit: str) -> None:
        if left := len(self.pool.workers):
            logger.warning("%d worker%s did not finish within %s: killing", left, "" if left == 1 else "s", limit)
            self.pool.kill_all()

    def _cleanup(self) -> None:
        """Leave nothing behind: no live child, listener, socket file or CPU policy; the host's signal handlers back."""
        self.pool.close()
        self.endpoints.close()
        if self.reloader is not None:
            self.reloader.stop()
        if self.pid_file is not None:
            self.pid_file.remove()
        self.notifier.close()
        self.dispatcher.close()
        self.policy.close()
        listeners.close_all(self.listeners)
        self.signals.restore()  # the host's handlers (Cluster.run() embedded in a program) come back
        self.selector.close()
        priority.restore()  # a process that called Cluster.run() goes on as it was
