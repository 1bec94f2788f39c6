"""Taking the configuration read again (SIGHUP, ``clusterrun reload NAME --config``) while the cluster serves.

As gunicorn on SIGHUP: the configuration is built again from its source (clusterrun.config.build.ConfigSource:
the file read anew, the command line and the start's environment still winning over it). What can change
without a rebind is taken; what cannot (``NEEDS_RESTART``: listeners, the policy, the app and its engine, the
processes' ids and files, the control and metrics sockets) is said, one line each ("needs a restart: --bind
changed from X to Y"), and kept as it was. A source that no longer reads (a file that does not parse, a bad
value) changes nothing: one line says why, and the cluster keeps serving as it was.

Taking the new Config means making it the one every part of the primary reads from now on, and the one later
forks get: the workers are forked from the primary and build everything of theirs from it (their limits,
timeouts, log level, TLS files, recycling). The caller then restarts the workers one by one, so each runs the
new settings. Most parts read ``config`` when they act (the primary, the pool, the forker); the few that keep
a value of their own are given the new one here: the restart throttle, the watchdog and the dispatcher (the
heartbeat's terms), the primary's log level, and the number of workers (scaled).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from clusterrun.config.options import OPTIONS_BY_NAME, Config
from clusterrun.errors import ClusterrunError
from clusterrun.host.listeners import BindAddress
from clusterrun.host.sdnotify import Notifier
from clusterrun.primary.dispatch import Dispatcher
from clusterrun.primary.pool import Pool
from clusterrun.primary.spawn import Forker
from clusterrun.primary.watchdog import Watchdog
from clusterrun.wire.heartbeat import heartbeat_interval, late_after

logger = logging.getLogger("clusterrun")

# What a running cluster cannot take: bound (listeners, policy, control and metrics sockets), imported or
# checked in the primary before the first fork (the app and its engine), or set up once for the process (its
# folder, environment, ids, pid file, log handlers, the file watcher). A change is said, not taken. (--hooks is
# taken: the door's rebuild imports the module anew and swaps its handlers, clusterrun.api.Cluster._rebuild.)
NEEDS_RESTART = (
    "app", "app_dir", "factory", "preload", "interface", "http", "loop", "lifespan", "threads",
    "binds", "fds", "uds_mode", "backlog", "policy", "name", "control", "no_control", "metrics", "health",
    "chdir", "env_file", "pid_file", "user", "group", "run_as",
    "log_format", "log_config", "log_file", "access_log_file", "reload", "reload_dirs", "reload_include",
    "reload_exclude",
    "log_max_size", "log_keep",  # the primary's rotation (ops.rotation) is set up once, at start
)
# Not options: what the build derives, taken with the rest (the workers' spec and source go with --workers).
DERIVED = ("workers_spec", "usable_cpus", "workers_from", "sources")


@dataclass
class Outcome:
    """What a re-read did: ``error`` when the source did not read (nothing changed), else what changed."""

    error: str = ""
    changed: list[str] = field(default_factory=list)  # "--workers 2 -> 3"
    kept: list[str] = field(default_factory=list)  # "--bind changed from X to Y" (needs a restart)


class Parts(Protocol):
    """What of the primary a re-read changes and starts (the Primary)."""

    config: Config
    pool: Pool
    forker: Forker
    watchdog: Watchdog
    dispatcher: Dispatcher
    notifier: Notifier

    def reload(self) -> None: ...

    def scale(self, target: int) -> None: ...


def reread(parts: Parts, build: Callable[[], Config]) -> Outcome:
    """Build the Config again, take what can change, and restart the workers one by one; the Outcome, logged."""
    if parts.pool.stopping:
        return Outcome(error="the cluster is stopping")
    if parts.pool.rollout.active:  # its replacements are forked with the old settings: one at a time
        logger.warning("the configuration was not re-read: a rolling restart is running; try again once it ends")
        return Outcome(error="a rolling restart is running; try again once it ends")
    try:
        new = build()
    except ClusterrunError as exc:
        logger.error("the configuration was not re-read: %s; nothing changed, the cluster keeps serving", exc)
        if parts.pool.booted:
            # systemd's Type=notify-reload sends SIGHUP and waits for RELOADING=1, then READY=1: this reload is over.
            parts.notifier.reloading()
            parts.notifier.reload_finished()
        return Outcome(error=str(exc))
    old = parts.config
    outcome = Outcome()
    for name in (f.name for f in dataclasses.fields(Config) if f.name not in DERIVED):
        was, now = getattr(old, name), getattr(new, name)
        if was == now:
            continue
        if name == "ssl_keyfile_password":
            was, now = ("(hidden)" if value else "(none)" for value in (was, now))
        if name in NEEDS_RESTART:
            if name != "run_as":  # --user and --group say it
                outcome.kept.append(f"{_flag(name)} changed from {_shown(was)} to {_shown(now)}")
        else:
            outcome.changed.append(f"{_flag(name)} {_shown(was)} -> {_shown(now)}")
    kept = {name: getattr(old, name) for name in NEEDS_RESTART}
    sources = {**new.sources, **{name: old.sources[name] for name in NEEDS_RESTART if name in old.sources}}
    _take(parts, dataclasses.replace(new, **kept, sources=sources))
    for line in outcome.kept:
        logger.warning("the configuration changed, but this needs a restart: %s (kept as it was)", line)
    logger.info("configuration re-read: %s", "; ".join(outcome.changed) or "nothing that applies changed")
    # A new --workers (the number running may differ: scaled since): fewer, before the rolling restart, which
    # then replaces only those kept; more, once it has begun, so that the new slots are forked with the new
    # settings once and not replaced again.
    scale, running = new.workers != old.workers, parts.pool.target
    if scale and new.workers < running:
        parts.scale(new.workers)
    parts.reload()
    if scale and new.workers > running:
        parts.scale(new.workers)
    return outcome


def _take(parts: Parts, config: Config) -> None:
    old, pool = parts.config, parts.pool
    parts.config = pool.config = parts.forker.config = config
    throttle = pool.throttle
    throttle.max_restarts, throttle.window, throttle.min_uptime = (config.max_restarts, config.restart_window,
                                                                    config.min_uptime)
    throttle.first_delay, throttle.max_delay = config.restart_delay, config.restart_delay_max
    parts.dispatcher.concurrency = config.limit_concurrency
    if not config.log_config:  # else the logging file rules the levels
        logging.getLogger("clusterrun").setLevel(config.log_level.upper())
    if (config.timeout, config.request_timeout) != (old.timeout, old.request_timeout):
        _retime(parts, old, config)


def _retime(parts: Parts, old: Config, new: Config) -> None:
    """The watchdog's and the dispatcher's deadlines. A worker beats at the rate its own --timeout set when it was
    forked: deadlines that the running workers' beats would miss (a shorter beat needed) wait until the rolling
    restart has replaced every one of them, so that no healthy worker is taken for a hung one."""

    def apply() -> None:
        parts.watchdog.retime(new.timeout, new.request_timeout)
        parts.dispatcher.late_after = late_after(new.timeout)

    if heartbeat_interval(new.timeout) >= heartbeat_interval(old.timeout):
        apply()
        return
    rollout = parts.pool.rollout

    def after_rollout() -> None:
        rollout.on_end.remove(after_rollout)
        if rollout.outcome == "complete":
            apply()
        else:
            logger.warning("--timeout %g is kept: the rolling restart did not replace every worker, and those left "
                           "beat for --timeout %g; reload again to take it", new.timeout, old.timeout)

    rollout.on_end.append(after_rollout)


def _flag(name: str) -> str:
    return OPTIONS_BY_NAME[name].flags[-1] if name in OPTIONS_BY_NAME else name.upper()


def _shown(value: Any) -> str:
    if isinstance(value, tuple):
        return ",".join(_shown(item) for item in value) or "(none)"
    if isinstance(value, BindAddress):
        return str(value)
    if value == "" or value is None:
        return "(none)"
    return f"{value:g}" if isinstance(value, float) else str(value)
