"""The programmatic API, as Node's cluster module: ``Cluster``, with events, messages and control.

    from clusterrun import Cluster

    cluster = Cluster("app:app", workers="auto", policy="rr")   # the CLI's options, by their flag names

    @cluster.on("message")
    def on_message(worker, message):
        worker.send({"echo": message})

    cluster.run()   # blocks; returns the exit code

The CLI is this class too: ``clusterrun APP --flags`` builds the same Config and calls ``run``.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import logging
import os
import selectors
import socket
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from clusterrun import logs
from clusterrun.config.build import ConfigSource
from clusterrun.config.options import OPTIONS, OPTIONS_BY_NAME, Config
from clusterrun.errors import BindError, ConfigError
from clusterrun.host import privileges
from clusterrun.ops.appmetrics import AppMetricsDir
from clusterrun.ops.endpoints import Endpoints
from clusterrun.ops.metrics import Probe, require_client
from clusterrun.ops.operations import Operations
from clusterrun.ops.status import StatusLine
from clusterrun.primary.events import EVENTS, Events, Handler, check_handler
from clusterrun.primary.handle import Worker
from clusterrun.primary.reloader import require_watchfiles
from clusterrun.primary.spawn import ForkSettings, checked_env
from clusterrun.primary.supervisor import Primary
from clusterrun.wire import handles
from clusterrun.worker import child
from clusterrun.worker import hooks as workerhooks
from clusterrun.worker.hooks import WORKER_EVENTS

if TYPE_CHECKING:  # a type only: at run time the core imports adapters lazily (see api.prepare_engine)
    from clusterrun.adapters.entry import LoadedApp

logger = logging.getLogger("clusterrun")

# Keyword names are the long flags without dashes (bind=..., app_dir=...), so that the CLI's documentation
# serves both; the internal option names are accepted too.
API_NAMES: dict[str, str] = {option.flags[-1].lstrip("-").replace("-", "_"): option.name for option in OPTIONS}


class Cluster:
    def __init__(self, app: str, **options: Any) -> None:
        values: dict[str, Any] = {}
        for key, value in options.items():
            name = API_NAMES.get(key) or (key if key in OPTIONS_BY_NAME else None)
            if name is None:
                raise ConfigError(f"unknown option {key!r}: known options are {', '.join(sorted(API_NAMES))}")
            values[name] = value
        source = ConfigSource.capture(app, values, read_file=False)  # the API reads no file: SIGHUP finds the same
        self._setup(source.build(), source)

    @classmethod
    def from_config(cls, config: Config, source: ConfigSource | None = None) -> Cluster:
        """A cluster of a Config built already; with its ``source``, SIGHUP builds it again from there."""
        cluster = cls.__new__(cls)
        cluster._setup(config, source)
        return cluster

    def _setup(self, config: Config, source: ConfigSource | None = None) -> None:
        self.config = config
        self._source = source
        self.events = Events()
        self._primary: Primary | None = None
        self._fork_settings = ForkSettings()  # setup_primary(); the primary and its forker share this object
        self._hooked: list[tuple[str, Handler]] = []  # what --hooks registered, for SIGHUP to swap

    def on(self, event: str, handler: Handler | None = None) -> Any:
        """Register ``handler`` for ``event`` (see clusterrun.primary.events); without a handler, a decorator."""
        if handler is not None:
            return self._register(event, handler)

        def register(function: Handler) -> Handler:
            return self._register(event, function)

        return register

    def _register(self, event: str, handler: Handler) -> Handler:
        """Cluster events to the primary's Events; worker_init and worker_exit to the worker's hooks, which every
        worker inherits with the fork (registered here, at the door: events and hooks never import each other)."""
        self._attach(event, handler)
        return handler

    def _attach(self, event: str, handler: Handler) -> Handler:
        """Register ``handler``; what was registered (the worker's hooks may wrap it), for ``_detach``."""
        if event not in EVENTS + WORKER_EVENTS:
            raise ConfigError(f"unknown cluster event {event!r}: choose one of {', '.join(EVENTS + WORKER_EVENTS)}")
        if event in WORKER_EVENTS:
            check_handler(event, handler)
            return workerhooks.add(event, handler)
        return self.events.on(event, handler)

    def _detach(self, event: str, registered: Handler) -> None:
        if event in WORKER_EVENTS:
            workerhooks.remove(event, registered)
        else:
            self.events.off(event, registered)

    def run(self) -> int:
        """Start the primary and serve until stopped; the exit code (0 clean, 3 boot failure, 4 restart limit).

        Configuration problems (a port in use, a missing module or hooks module) raise ConfigError instead.
        """
        run_as = privileges.check(self.config.run_as)  # --user while not root: a ConfigError, before anything
        restore_logging = logs.setup(self.config)
        app_metrics: AppMetricsDir | None = None
        try:
            # Before prometheus_client is imported anywhere (here, --hooks, --preload): it reads the variable
            # once, at import, to choose between its single-process and multiprocess modes.
            prepare_process(self.config)  # --chdir, --env-file: before anything is imported from the app
            app_metrics = AppMetricsDir(self.config)
            if app_metrics.created and app_metrics.path is not None:
                privileges.give(app_metrics.path, run_as)  # the workers' prometheus_client writes there
            if self.config.metrics is not None:
                require_client()
            if self.config.reload:
                require_watchfiles()
            if self.config.hooks:
                self._load_hooks(self.config.hooks)
            preloaded = prepare_engine(self.config)
            metrics_dir = app_metrics.path
            self._primary = Primary(self.config, child.run, lambda primary: build_ops(primary, metrics_dir),
                                    preloaded=preloaded, events=self.events, warm_up=warm_up(self.config),
                                    fork_settings=self._fork_settings,
                                    rebuild=self._rebuild if self._source is not None else None)
            return self._primary.run()  # puts the host's signal handlers back before it returns
        finally:
            self._primary = None
            if app_metrics is not None:
                app_metrics.close()
            workerhooks.clear()  # this cluster's; an embedding program may run another
            restore_logging()  # the host program's logging, as it was

    # Control, from event handlers (they run in the primary's loop).

    @property
    def workers(self) -> dict[int, Worker]:
        """Live workers by id, as Node's ``cluster.workers``."""
        if self._primary is None:
            return {}
        return {handle.id: handle.public for handle in self._primary.workers.values()}

    def fork(self, env: Mapping[str, str] | None = None) -> Worker | None:
        """One worker more, as Node's ``cluster.fork(env)``: the new worker, or None when the system refused the
        fork (the ``error`` event says why; it is tried again). It takes the lowest free slot; ``env`` is added to
        its environment, and the slot's respawns and rolling-restart replacements keep it."""
        checked = checked_env(env, "fork(env=...)") if env is not None else None
        primary = self._running()
        if primary.stopping:
            return None
        handle = primary.pool.add(checked)
        return None if handle is None else handle.public

    def setup_primary(self, **settings: Any) -> None:
        """Node's ``cluster.setupPrimary(settings)``: defaults for the workers forked from now on (``env``, a dict
        added to their environment; ``args``, their ``sys.argv[1:]``); emits ``setup`` with ``settings``.
        Callable before run() and from handlers; workers already running keep what they had."""
        self._fork_settings.update(settings)
        self.events.emit("setup", self.settings)

    @property
    def settings(self) -> dict[str, Any]:
        """Node's ``cluster.settings``: what setup_primary() set so far (a copy)."""
        return self._fork_settings.as_dict()

    def scale(self, workers: int) -> None:
        self._running().scale(workers)

    def reload(self) -> None:
        """Rolling restart, as SIGHUP."""
        self._running().reload()

    def stop(self) -> None:
        """Graceful stop, as SIGTERM."""
        self._running().stop()

    def broadcast(self, message: Any) -> None:
        """Send ``message`` to every live worker."""
        self._running().pool.broadcast(message)

    def listen(
        self, listener: socket.socket | tuple[str, int], on_connection: Callable[[socket.socket, Any], object]
    ) -> socket.socket:
        """Accept on a listener of the program's own, in the primary's loop: ``on_connection(conn, address)`` for
        each connection, as Node's ``net.createServer(onConnection)`` in the primary. The listening socket.

        ``listener``: a listening ``socket.socket``, or a ``(host, port)`` address to open one on. Callable
        before ``run()`` (the loop watches it from the start) or from an event handler while it runs.

        Why in the loop rather than in a thread of the program's: the primary is one thread (it forks, and a
        fork from a threaded process is unsafe), and ``Worker.send`` touches the workers' channels, which only
        the loop may. So accepting is one more descriptor in the loop's one wait, and ``on_connection`` runs
        there like an event handler: pass ``conn`` on with ``worker.send(message, conn)`` (the worker's copy is
        then the only one), or close it; keep it no longer than the call (a worker forked meanwhile would
        inherit it). It is in blocking mode, as ``accept()`` gives it. A handler that raises is logged and its
        connection closed. Accepting stops when the cluster stops, or when the program closes the listener,
        which stays the program's (it may close it any time).
        """
        if isinstance(listener, tuple):
            try:
                sock = socket.create_server(listener)
            except OSError as exc:
                raise BindError(f"Cluster.listen() cannot listen on {listener!r}: {exc.strerror or exc}; choose "
                                "a free address") from None
        elif isinstance(listener, socket.socket) and listener.fileno() >= 0 and handles.is_listener(listener):
            sock = listener
        else:
            raise ConfigError(f"Cluster.listen() takes a listening socket.socket or a (host, port) address, not "
                              f"{listener!r:.80}: call listen() on the socket first")
        check_handler("listen", on_connection)
        accepting = _ProgramListener(sock, on_connection)
        if self._primary is not None:
            accepting.watch(self._primary)
        self.events.on("on_starting", lambda config: accepting.watch(self._running()))  # every later run()
        self.events.on("on_exit", lambda config: accepting.release())  # after the run closed its selector
        return sock

    def _running(self) -> Primary:
        if self._primary is None:
            raise ConfigError("the cluster is not running: call this from an event handler while run() serves")
        return self._primary

    def _load_hooks(self, spec: str) -> None:
        self._hooked = [(event, self._attach(event, handler)) for event, handler in self._import_hooks(spec)]

    def _import_hooks(self, spec: str, again: bool = False) -> list[tuple[str, Handler]]:
        """The functions of the --hooks module (or module:object) named after cluster events; ``again``: the module
        executed anew (SIGHUP), so that a hooks file edited since is what runs."""
        from clusterrun.adapters import entry  # lazily: see prepare_engine

        entry.put_app_dir_first(self.config.app_dir)
        module_name, _, attr = spec.partition(":")
        try:
            loaded = sys.modules.get(module_name) if again else None  # imported before: executed anew
            hooks: Any = importlib.reload(loaded) if loaded is not None else importlib.import_module(module_name)
            for part in filter(None, attr.split(".")):
                hooks = getattr(hooks, part)
        except Exception as exc:
            raise ConfigError(f"cannot load --hooks {spec!r}: {type(exc).__name__}: {exc}; give an importable "
                              "module (or module:object) whose functions are named after cluster events") from None
        found = [(event, getattr(hooks, event)) for event in EVENTS + WORKER_EVENTS
                 if getattr(hooks, event, None) is not None]
        if not found:
            raise ConfigError(f"--hooks {spec!r} has no function named after a cluster event: "
                              f"{', '.join(EVENTS + WORKER_EVENTS)}")
        for event, handler in found:
            check_handler(event, handler)
        return found

    def _rebuild(self) -> Config:
        """SIGHUP's build (the primary's ``rebuild``): the Config from its source, and the --hooks module imported
        anew, its functions put in place of the ones it registered before. Either fails as a whole (ConfigError),
        with the hooks in place left as they were."""
        assert self._source is not None
        config = self._source.build()
        found = self._import_hooks(config.hooks, again=True) if config.hooks else []
        old, self._hooked = self._hooked, []
        for event, registered in old:
            self._detach(event, registered)
        try:
            for event, handler in found:
                self._hooked.append((event, self._attach(event, handler)))
        except ConfigError:  # a second ssl_context, say: the hooks go back as they were
            for event, registered in self._hooked:
                self._detach(event, registered)
            self._hooked = [(event, self._attach(event, registered)) for event, registered in old]
            raise
        if config.hooks:
            count = len(found)
            logger.info("--hooks %s imported again: %d hook%s", config.hooks, count, "" if count == 1 else "s")
        return config


class _ProgramListener:
    """Cluster.listen's accepting, in the primary's loop: ``on_connection(conn, address)`` per connection.

    The loop watches a duplicate of the program's socket, its own: a program that closes its socket while the
    cluster runs would otherwise leave the selector holding a number the next socket the primary opens (a
    worker's channel) may get, and registering that one would fail. Once the program's socket is closed, the
    next wake-up stops watching; the duplicate is closed then, or when the cluster's run ends.
    """

    _BATCH = 64  # accepts per wake-up, then back to the loop: the workers' frames are not starved
    _FULL_PAUSE = 0.1  # out of descriptors, the listener stays readable: stop watching it this long

    def __init__(self, sock: socket.socket, on_connection: Callable[[socket.socket, Any], object]) -> None:
        self.sock = sock
        self.on_connection = on_connection
        self.watched: socket.socket | None = None  # the duplicate the running primary's loop watches
        sock.setblocking(False)  # the duplicate shares the mode: an accept never blocks the loop
        handles.primary_only(sock)  # workers close their copies

    def watch(self, primary: Primary) -> None:
        if self.sock.fileno() < 0 or primary.stopping:
            return
        if self.watched is None:
            self.watched = self.sock.dup()
            handles.primary_only(self.watched)
        with contextlib.suppress(KeyError, ValueError):  # watched already
            primary.selector.register(self.watched, selectors.EVENT_READ, lambda mask: self.accept(primary))

    def pause(self, primary: Primary) -> None:
        if self.watched is not None:
            with contextlib.suppress(KeyError, ValueError):
                primary.selector.unregister(self.watched)

    def release(self) -> None:
        """Close the duplicate (unregistered already, or its selector closed with the run)."""
        if self.watched is not None:
            self.watched.close()
            self.watched = None

    def accept(self, primary: Primary) -> None:
        assert self.watched is not None
        for _ in range(self._BATCH):
            if primary.stopping or self.sock.fileno() < 0:
                self.pause(primary)
                self.release()
                return
            try:
                conn, address = self.watched.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    logger.warning("Cluster.listen(): cannot accept (%s); pausing %gs", exc.strerror, self._FULL_PAUSE)
                    self.pause(primary)
                    primary.timers.add(self._FULL_PAUSE, lambda: self.watch(primary))
                return  # else the client left before it was accepted
            conn.setblocking(True)  # where accepted sockets inherit the listener's mode (BSD), undo it
            try:
                self.on_connection(conn, address)
            except Exception:
                logger.exception("the Cluster.listen() handler %s raised; its connection is closed",
                                 getattr(self.on_connection, "__qualname__", self.on_connection))
                conn.close()  # nothing if it was passed on already (it is detached then)


def build_ops(primary: Primary, app_metrics_dir: str | None) -> Endpoints:
    """What ops/ runs in the primary's wait, each part given what it reads of the primary: ops/ sits above the
    primary and never imports the supervisor, so the door wires the two."""
    config, pool, clock, policy = primary.config, primary.pool, primary.clock, primary.policy.name
    commands = Operations(pool, primary, clock, policy, primary.listeners, primary.started)
    probe = Probe(pool, backlog=lambda: len(primary.dispatcher.held), shutting_down=lambda: primary.shutting_down)
    return Endpoints(config, primary.selector, primary.timers, commands.answer, probe, StatusLine(pool, clock, policy),
                     app_metrics_dir)


def prepare_process(config: Config) -> None:
    """The process the app will see: its folder (--chdir) and its environment (--env-file)."""
    if config.chdir:
        os.chdir(config.chdir)
    if config.env_file:
        try:
            from dotenv import load_dotenv  # optional: clusterrun[dotenv], for --env-file alone
        except ImportError:
            raise ConfigError("--env-file needs python-dotenv: pip install python-dotenv") from None
        load_dotenv(config.env_file, override=False)


def prepare_engine(config: Config) -> LoadedApp | None:
    """In the primary, before any fork: check the engine and the app's module, warm the imports.

    With --preload the app is imported here; its BootError exits 3 like a worker's would.

    The core imports adapters only here and below, when a cluster starts, never when it loads: run from the root
    of a checkout, ``clusterrun/`` is the source folder, which holds no ``clusterrun.adapters`` (adapters/ is
    mapped there at install), and `import clusterrun` must still work there for the message below.
    """
    try:
        from clusterrun.adapters import entry  # lazily: see the docstring
    except ImportError as exc:
        package = os.path.dirname(os.path.abspath(__file__))
        if os.path.isfile(os.path.join(os.path.dirname(package), "adapters", "__init__.py")):
            # The source folder of a checkout shadows the installed package (python -m run from its root).
            raise ConfigError(f"{package} is the source folder of a clusterrun checkout, not the installed "
                              "package: run from another directory, or install the checkout with pip install -e ."
                              ) from None
        raise ConfigError(f"the serving engine cannot be imported ({exc}); reinstall clusterrun (from its clone: "
                          "pip install .)") from None
    entry.check_module_exists(config.app, config.app_dir)
    entry.preimport(config.http, threads=config.threads, interface=config.interface)
    if not config.preload:
        return None
    loaded = entry.load_app(config.app, app_dir=config.app_dir, factory=config.factory, interface=config.interface)
    entry.preimport(config.http, threads=config.threads, interface=loaded.interface)  # the app said which it is
    logger.info("preloaded %s (%s) in the primary", config.app, loaded.interface)
    return loaded


def warm_up(config: Config) -> Callable[[str], None]:
    """What the primary imports once the first worker says which interface it serves, for the later forks."""
    from clusterrun.adapters import entry  # loaded by prepare_engine already: this only names it

    return lambda interface: entry.preimport(config.http, threads=config.threads, interface=interface)


def check_app(config: Config) -> str:
    """``clusterrun config --check``: import the app as a start would, in this process; what was found.

    A module that cannot be found is a ConfigError (exit 2), an app that fails to import or is no app a
    BootError (exit 3): the codes a start gives for the same app.
    """
    prepare_process(config)
    prepare_engine(config)  # the engine, and the app's module found without importing it
    from clusterrun.adapters import entry  # lazily: see prepare_engine

    loaded = entry.load_app(config.app, app_dir=config.app_dir, factory=config.factory, interface=config.interface)
    return f"clusterrun: {config.app} loads: a {loaded.interface.upper()} app"


__all__ = ["Cluster", "Worker", "check_app", "prepare_engine"]
