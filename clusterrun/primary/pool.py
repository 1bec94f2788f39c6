"""The pool: every worker and every slot, their states, and what the life and death of each means.

The pool is the one owner of the workers (by pid) and the slots (by index, the
worker that serves each now). It spawns workers through a ``Spawner`` (the real
one forks, see spawn.py; tests pass a fake), moves them through their states
(supervision.WorkerState: starting → ready → draining → exited, checked),
retires them, scales, and decides what each exit means: a boot failure, a
crash to respawn with backoff (throttle.py), a slot given up, or nothing (a
worker stopped on purpose). The rolling restart (rollout.py), the dispatcher and
the watchdog ask it; the primary's loop feeds it what happens and acts on the
two outcomes that end the cluster (``Verdict``).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import os
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from clusterrun.config.options import MAX_WORKERS, Config
from clusterrun.host.timers import Timers
from clusterrun.identity import WorkerInfo
from clusterrun.primary.dispatch import Dispatcher
from clusterrun.primary.events import Events
from clusterrun.primary.handle import WorkerHandle, WorkerState, describe_status, exit_of
from clusterrun.primary.policies import Policy
from clusterrun.primary.rollout import Rollout
from clusterrun.primary.spawn import ForkSettings
from clusterrun.primary.tally import Tally
from clusterrun.primary.throttle import RestartThrottle
from clusterrun.wire.channel import encode
from clusterrun.wire.protocol import Frame, Message, check_message

logger = logging.getLogger("clusterrun")

# SIGQUIT's quick stop: how long a worker has to run its worker_int hooks and exit before it is killed.
_QUIT_GRACE = 1.0


class Spawner(Protocol):
    def spawn(self, worker_id: int, index: int, replaces: WorkerHandle | None) -> WorkerHandle:
        """A new worker for slot ``index``, its channel watched by the primary's loop."""

    def forget(self, handle: WorkerHandle) -> None:
        """Stop watching the worker's channel (it hung up, or its process is gone)."""


class Verdict(enum.Enum):
    """What an exit means for the whole cluster, when it means anything."""

    BOOT_FAILED = 3  # no worker ever served: the app cannot start (exit 3)
    NONE_LEFT = 4  # every slot has given up (exit 4)


class Pool:
    def __init__(
        self, config: Config, clock: Callable[[], float], timers: Timers, spawner: Spawner, dispatcher: Dispatcher,
        policy: Policy, events: Events, fork_settings: ForkSettings | None = None,
    ) -> None:
        self.config = config
        self.clock = clock
        self.timers = timers
        self.spawner = spawner
        self.dispatcher = dispatcher
        self.policy = policy
        self.events = events
        self.throttle = RestartThrottle(config.max_restarts, config.restart_window, clock, config.restart_delay,
                                        config.restart_delay_max, config.min_uptime)
        self.workers: dict[int, WorkerHandle] = {}  # by pid: every live child
        self.slots: dict[int, WorkerHandle] = {}  # by index: the worker that serves the slot now
        self.target = config.workers
        # Slots below the highest one left empty on purpose by Worker.kill() or disconnect(): not respawned, and
        # the first filled again by a fork. The slots in use are those under target + len(vacant), less these.
        self.vacant: set[int] = set()
        self.fork_settings = fork_settings or ForkSettings()  # shared with the forker, which applies it
        # gunicorn's order: its arbiter sets the number when it is made, before on_starting.
        self.events.emit("nworkers_changed", config, self.target, None)
        self.pending_respawns: set[int] = set()  # slots waiting out their backoff delay
        # Reads a worker's unread frames (the primary's WorkerFrames sets it): see reaped().
        self.last_words: Callable[[WorkerHandle], None] = lambda handle: None
        self.last_exit: dict[int, str] = {}  # per slot: how its last unplanned exit went (for status)
        self.tally = Tally()  # what exited workers did, per slot (for metrics that never go backwards)
        self.booted = False  # every slot of the first generation has served
        self.stopping = False
        self.rollout = Rollout(self)
        self._next_id = 1

    # Spawning and becoming ready.

    def spawn(self, index: int, replaces: WorkerHandle | None = None) -> WorkerHandle | None:
        """Fork a worker for slot ``index``; a replacement takes the slot only once it is ready.

        None when the system refuses the fork: the primary never dies of it. A slot's fork is tried again
        after a growing wait, while the other workers serve; a replacement's is given up (the caller's to say).
        """
        if self.events.wanted("pre_fork"):  # pid 0: there is no process yet
            self.events.emit("pre_fork", self.config, WorkerInfo(self._next_id, index, 0))
        try:
            handle = self.spawner.spawn(self._next_id, index, replaces)
        except OSError as exc:
            self._fork_refused(index, replaces, exc)
            return None
        self._next_id += 1
        handle.owner = self
        self.workers[handle.pid] = handle
        if replaces is None:
            self.slots[index] = handle
        handle.boot_timer = self.timers.add(self.config.boot_timeout, lambda: self._boot_overdue(handle))
        logger.debug("spawned %s", handle.info)
        self.events.emit("fork", handle.public)
        return handle

    def ready(self, handle: WorkerHandle, interface: str) -> bool:
        """The worker serves; True when this completes the first generation (the cluster is ready)."""
        if handle.state is not WorkerState.STARTING:
            return False
        handle.boot_timer.cancel()
        handle.mark_ready(interface, self.clock())
        self.events.emit("listening", handle.public)
        if self.stopping:
            self.retire(handle)
            return False
        self.dispatcher.ready_worker(handle)
        if self.booted:
            logger.info("%s is serving", handle.info)
        if handle.replaces is not None:
            self.rollout.replacement_ready(handle)
        if not self.booted and len(self.slots) == self.target and all(w.is_ready for w in self.slots.values()):
            self.booted = True
            self._log_ready(interface)
            self.events.emit("when_ready", self.config)
            return True
        return False

    def _log_ready(self, interface: str) -> None:
        pids = ", ".join(str(w.pid) for w in sorted(self.slots.values(), key=lambda w: w.index))
        logger.info("ready: %d worker%s serving %s (%s), pids %s", self.target, "" if self.target == 1 else "s",
                    self.config.app, interface, pids)
        if interface == "asgi" and self.config.threads > 1:
            logger.warning("--threads %d is ignored: %s is an ASGI app, which runs on each worker's event loop; "
                           "--threads sizes the thread pool of WSGI apps", self.config.threads, self.config.app)

    def _fork_refused(self, index: int, replaces: WorkerHandle | None, exc: OSError) -> None:
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        serving = sum(1 for w in self.slots.values() if w.is_ready)
        self.failed(None, exc)
        if replaces is not None:
            logger.error("cannot fork a replacement for %s: %s (the process limit, ulimit -u, or memory); it keeps "
                         "serving", replaces.info, why)
            return
        delay = self.throttle.fork_refused(index)
        logger.error("cannot fork a worker for slot %d: %s (the process limit, ulimit -u, or memory); trying again "
                     "in %gs, %d worker%s serving", index, why, delay, serving, "" if serving == 1 else "s")
        self.pending_respawns.add(index)
        self.timers.add(delay, lambda: self._respawn(index))

    def _boot_overdue(self, handle: WorkerHandle) -> None:
        if handle.state is WorkerState.STARTING and handle.pid in self.workers:
            handle.boot_error = f"it was not ready within --boot-timeout {self.config.boot_timeout:g}s"
            handle.kill()

    # Retiring: a worker drained and stopped on purpose.

    def retire(self, handle: WorkerHandle, respawn: bool = False) -> None:
        """Route nothing more to ``handle`` and ask it to drain; with ``respawn``, fill its slot anew."""
        if handle.state in (WorkerState.DRAINING, WorkerState.EXITED):
            return
        self.dispatcher.gone(handle)
        if respawn and self.slots.get(handle.index) is handle:
            del self.slots[handle.index]
            self.spawn(handle.index)
        handle.drain(linger=not self.stopping)

    def hang_up(self, handle: WorkerHandle) -> None:
        """Talk to the worker no more (it broke or closed its channel); what it never read stays recoverable."""
        if handle.channel.is_open:
            handle.channel.hang_up()
            self.spawner.forget(handle)
            self.events.emit("disconnect", handle.public)

    def scale(self, target: int) -> None:
        if self.stopping or target < 1:
            logger.warning("cannot scale to %d workers; at least 1 is needed", target)
            return
        if target > MAX_WORKERS:
            logger.warning("cannot scale to %d workers; one cluster runs at most %d", target, MAX_WORKERS)
            return
        old = self.target
        while self.target < target:
            self._add()
        while self.target > target:
            self.target -= 1
            # The highest slot goes, whether it serves or waits for its respawn (whose timer then finds it unwanted):
            # retiring a lower one instead would leave the waiting slot above the target, never filled again.
            highest = max(self.slots.keys() | self.pending_respawns)
            self.fork_settings.slot_env.pop(highest, None)
            if highest in self.slots:
                self.retire(self.slots.pop(highest))
            else:
                self.pending_respawns.discard(highest)
            self._trim_vacant()
        logger.info("scaled to %d worker%s", self.target, "" if self.target == 1 else "s")
        if self.target != old:
            self.events.emit("nworkers_changed", self.config, self.target, old)

    def add(self, env: dict[str, str] | None = None) -> WorkerHandle | None:
        """One worker more, in the lowest free slot (one left vacant first), with ``env`` for the slot's forks:
        Node's ``cluster.fork(env)``. None when the system refused the fork (retried, see spawn), or at the limit."""
        old = self.target
        handle = self._add(env)
        if self.target != old:
            self.events.emit("nworkers_changed", self.config, self.target, old)
        return handle

    def _add(self, env: dict[str, str] | None = None) -> WorkerHandle | None:
        if self.target >= MAX_WORKERS:
            logger.warning("cannot fork one worker more: one cluster runs at most %d", MAX_WORKERS)
            return None
        taken = self.slots.keys() | self.pending_respawns  # a slot waiting for its respawn is not free
        free = next(i for i in range(len(taken) + 1) if i not in taken)
        self.target += 1
        self.vacant.discard(free)
        if env:
            self.fork_settings.slot_env[free] = dict(env)
        else:
            self.fork_settings.slot_env.pop(free, None)  # a slot's environment was its last fork's, not this one's
        return self.spawn(free)

    def let_go(self, handle: WorkerHandle, signum: int | None) -> None:
        """Worker.disconnect() (``signum`` None) and Worker.kill(signum): the worker leaves on purpose, drained
        (killed past --graceful-timeout), and its slot with it: the cluster keeps one worker fewer, as a Node
        cluster would until its runner forks again."""
        if handle.state is WorkerState.EXITED:
            return
        if self.slots.get(handle.index) is handle and not self.stopping:
            del self.slots[handle.index]
            self.target -= 1
            self.events.emit("nworkers_changed", self.config, self.target, self.target + 1)
            self.vacant.add(handle.index)
            self.fork_settings.slot_env.pop(handle.index, None)
            self._trim_vacant()
            logger.info("%s leaves (Worker.%s); %d worker%s kept", handle.info,
                        "disconnect()" if signum is None else "kill()", self.target, "" if self.target == 1 else "s")
        if self.rollout.current is handle:
            self.rollout.cancel(f"its new {handle.info} was let go")
        for other in list(self.workers.values()):
            if other.replaces is handle and other.state is WorkerState.STARTING:
                self.let_go(other, None)  # it would fill the slot given up again, once ready
        if signum is not None:
            # The signal first: sent after the Stop frame, it could land after an idle worker had drained and
            # exited 0, and kill("SIGKILL") would read as a clean exit. Its own signal decides how a worker ends.
            handle.send_signal(signum)
        if handle.state is WorkerState.STARTING:
            handle.move(WorkerState.DRAINING)  # nothing to drain yet
            if signum is None:
                handle.terminate()
        else:
            self.retire(handle)
        ref = weakref.ref(handle)  # the deadline must not keep a reaped worker's handle alive
        self.timers.add(self.config.graceful_timeout, lambda: self._leave_overdue(ref))

    def _leave_overdue(self, ref: weakref.ref[WorkerHandle]) -> None:
        handle = ref()
        if handle is not None and handle.pid in self.workers:
            logger.warning("%s did not finish within --graceful-timeout %gs: killing it", handle.info,
                           self.config.graceful_timeout)
            handle.kill()

    def failed(self, handle: WorkerHandle | None, error: Exception) -> None:
        """The ``error`` event (Node's worker "error"): a worker could not be forked, or sent to."""
        self.events.emit("error", None if handle is None else handle.public, error)

    def _trim_vacant(self) -> None:
        """A vacant slot at the top is simply one slot fewer."""
        while self.vacant and max(self.vacant) == self.target + len(self.vacant) - 1:
            self.vacant.remove(max(self.vacant))

    def wanted(self, index: int) -> bool:
        """The pool keeps slot ``index`` filled (it is under the target, and not left vacant on purpose)."""
        return index < self.target + len(self.vacant) and index not in self.vacant

    def stop_all(self) -> None:
        """Every worker drains (a starting one is stopped at once); nothing is respawned from now on."""
        self.stopping = True
        self.rollout.cancel()
        for handle in list(self.workers.values()):
            if handle.state is WorkerState.STARTING:
                handle.move(WorkerState.DRAINING)  # nothing to drain yet
                handle.terminate()
            else:
                self.retire(handle)

    def kill_all(self) -> None:
        for handle in self.workers.values():
            handle.kill()

    def quit_all(self) -> None:
        """gunicorn's quick stop: SIGQUIT to every worker (it runs the worker_int hooks and exits, no drain), then
        SIGKILL to what is left after a grace."""
        for handle in self.workers.values():
            handle.quit()
        self.timers.add(_QUIT_GRACE, self.kill_all)

    def close(self) -> None:
        """The primary is leaving: kill and reap every worker, and free what it held for each."""
        self.kill_all()
        for pid in list(self.workers):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        for handle in self.workers.values():
            self.hang_up(handle)
            free(handle)
        self.workers.clear()

    def broadcast(self, message: Any, sender: WorkerHandle | None = None) -> None:
        """Send ``message`` to every live worker but ``sender``: once each, checked and encoded once."""
        check_message(message)
        self.broadcast_frame(Message(message), sender)

    def broadcast_frame(self, frame: Frame, sender: WorkerHandle | None = None) -> None:
        """Send ``frame`` to every live worker but ``sender``, encoded once."""
        encoded = encode(frame)
        for handle in list(self.workers.values()):
            if handle is not sender and handle.channel.is_open:
                handle.channel.send_bytes(encoded)

    # Exits.

    def reap(self) -> Verdict | None:
        """Reap the children that exited, up to the first whose exit ends the cluster: its Verdict.

        The caller stops the cluster on a Verdict, then calls again: the exits after it are judged as
        exits of a stopping cluster (one "failed to boot" line, not one per worker), and none is left
        unreaped (no further SIGCHLD may come for them).
        """
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return None
            if pid == 0:
                return None
            verdict = self.reaped(pid, status)
            if verdict is not None:
                return verdict

    def reaped(self, pid: int, status: int) -> Verdict | None:
        """A child exited: release what it held, decide what comes next; a Verdict when the cluster must end."""
        handle = self.workers.get(pid)
        if handle is None:
            return None
        if handle.channel.is_open:
            # What it sent before it died and the loop has not read yet: when two workers fail to boot together,
            # the SIGCHLD of the first may reap the second before its channel's turn, and its boot error is there.
            self.last_words(handle)
        del self.workers[pid]
        self.dispatcher.gone(handle)
        # Connections passed to it that it never read, and those still queued for it, go to another worker.
        self.dispatcher.redispatch(handle.channel.take_undelivered_fds())
        self.hang_up(handle)
        free(handle)
        how = describe_status(status)
        self.tally.fold(handle)
        was = handle.state
        handle.status = status  # before the event: its handlers see is_dead() and process.exitcode
        handle.exited_after_disconnect = was is WorkerState.DRAINING  # told to leave: retired, or stopping
        self.events.emit("exit", handle.public, *exit_of(status))
        self.events.emit("child_exit", self.config, handle.public)
        if self.slots.get(handle.index) is handle:
            del self.slots[handle.index]
        handle.move(WorkerState.EXITED)
        verdict = None
        if was is WorkerState.STARTING:
            verdict = self._boot_failed(handle, how)
        elif self.stopping or was is WorkerState.DRAINING:
            logger.debug("%s exited (%s)", handle.info, how)
        else:
            self._crashed(handle, how)
        if not self.wanted(handle.index) and all(w.index != handle.index for w in self.workers.values()):
            self.policy.release(handle.index)  # scaled down: the slot's own sockets (reuseport) go with it
        # target 0: every worker was let go on purpose (Worker.kill, disconnect); the runner forks again or stops.
        if verdict is None and self.target and not (self.slots or self.pending_respawns or self.stopping
                                                    or self.rollout.active):
            logger.error("no worker is left: stopping")
            verdict = Verdict.NONE_LEFT
        return verdict

    def _boot_failed(self, handle: WorkerHandle, how: str) -> Verdict | None:
        reason = handle.boot_error or f"it exited ({how}) before it was ready"
        if self.stopping:
            logger.debug("%s exited while starting (%s)", handle.info, how)
        elif handle.replaces is not None:
            self.rollout.replacement_failed(handle, reason)
        elif not self.booted:
            # Before the first worker ever served: the app cannot start. One line, exit 3, no loop.
            logger.error("app %s failed to boot in %s: %s", self.config.app, handle.info, reason)
            return Verdict.BOOT_FAILED
        else:
            # The cluster serves; this respawn failed to start (a broken deploy, a missing resource): an unstable
            # death of its slot, throttled, while the other workers go on serving.
            self._crashed(handle, reason)
        return None

    def _crashed(self, handle: WorkerHandle, how: str) -> None:
        self.last_exit[handle.index] = f"worker {handle.id}: {how}"
        self.tally.restarts[handle.index, how] += 1
        ready_for = None if handle.ready_at is None else self.clock() - handle.ready_at
        # The slot is dead already (reaped() took it out): are any of the others serving?
        others_serving = any(w.is_ready for w in self.slots.values())
        decision = self.throttle.record_death(handle.index, ready_for, handle.took_request, others_serving)
        if not decision.respawn:
            logger.error(
                "slot %d died %d times within %gs without taking a request, before it was ready or within "
                "--min-uptime %gs of it (last: %s, %s): not respawning it; raise --max-restarts or fix the crash",
                handle.index, decision.deaths, self.config.restart_window, self.config.min_uptime, handle.info, how,
            )
            self.policy.release(handle.index)  # nobody will serve the slot's own sockets (reuseport) again
            return
        if decision.stable:
            took = "it had taken requests" if decision.served else "no request"
            note = f"{took}, ready for {ready_for or 0.0:.1f}s; crash {decision.crashes} of slot {handle.index}"
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
        if not self.stopping and index not in self.slots and self.wanted(index):
            self.spawn(index)


def free(handle: WorkerHandle) -> None:
    """Free what the primary holds for a worker that is gone: its timer, its channel and its shared page."""
    handle.boot_timer.cancel()
    handle.channel.close()
    handle.pages.close()
