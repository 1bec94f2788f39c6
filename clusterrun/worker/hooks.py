"""Hooks that run inside each worker process, under gunicorn's names (docs/api.md, "Hooks", has the table).

Registered in the primary (``--hooks`` or ``Cluster.on``) before any fork, so that every worker inherits them.
``worker`` is the worker's ``WorkerInfo`` (id, index, pid) and ``config`` the cluster's Config.

    post_fork(config, worker)          just after the fork, before the app loads
    worker_init(worker)                the app is loaded (or inherited with --preload), before the worker serves:
                                       the place to open again what must not be shared across a fork (a database
                                       pool made at import under --preload). gunicorn's name, post_worker_init,
                                       is the same moment.
    ssl_context(config, factory)       TLS only: returns the worker's SSLContext; ``factory()`` builds the one
                                       the --ssl-* options describe
    pre_request(worker, req)           before the app is called for a request
    post_request(worker, req, environ, resp)   after the app's response is done (2 to 4 parameters, as gunicorn)
    worker_int(worker)                 the worker got SIGINT or SIGQUIT
    worker_abort(worker)               the worker got SIGABRT: the watchdog's word before it kills a hung worker
    worker_exit(worker)                the worker drained and exits

If post_fork, worker_init or ssl_context raises, that worker failed to boot, with the exception in the message.
Any other hook that raises is logged, and the worker (and its request) goes on.
"""

from __future__ import annotations

import functools
import inspect
import logging
import ssl
from collections.abc import Callable
from typing import Any

from clusterrun.config.options import Config
from clusterrun.errors import BootError, ConfigError
from clusterrun.identity import WorkerInfo

logger = logging.getLogger("clusterrun")

WORKER_EVENTS = ("post_fork", "worker_init", "post_worker_init", "ssl_context", "pre_request", "post_request",
                 "worker_int", "worker_abort", "worker_exit")
# gunicorn's names for a moment clusterrun names otherwise: registered as that moment's hook.
_SAME_AS = {"post_worker_init": "worker_init"}

_hooks: dict[str, list[Callable[..., Any]]] = {name: [] for name in WORKER_EVENTS if name not in _SAME_AS}


def add(event: str, handler: Callable[..., Any]) -> Callable[..., Any]:
    """Register ``handler``; what was registered (post_request's is wrapped), which ``remove`` takes."""
    event = _SAME_AS.get(event, event)
    if event == "ssl_context" and _hooks[event]:
        raise ConfigError("a second ssl_context hook: it returns the one SSLContext of the workers, so give one "
                          "function (it may call the other)")
    if event == "post_request":
        handler = _four_parameters(handler)
    _hooks[event].append(handler)
    return handler


def remove(event: str, registered: Callable[..., Any]) -> None:
    """Take back what ``add`` registered (SIGHUP imports --hooks anew): later forks run it no more."""
    handlers = _hooks[_SAME_AS.get(event, event)]
    if registered in handlers:
        handlers.remove(registered)


def clear() -> None:
    for handlers in _hooks.values():
        handlers.clear()


def wanted(event: str) -> bool:
    return bool(_hooks[_SAME_AS.get(event, event)])


def _name(handler: Callable[..., Any]) -> str:
    return str(getattr(handler, "__qualname__", None) or repr(handler))


def _booting(event: str, *args: Any) -> None:
    """Run a hook of the worker's start; BootError (the worker's boot failure) naming the one that raised and why."""
    for handler in _hooks[event]:
        try:
            handler(*args)
        except Exception as exc:
            raise BootError(f"the {event} hook {_name(handler)} raised {type(exc).__name__}: {exc}") from exc


def _run(event: str, *args: Any) -> None:
    """Run the hooks of ``event``; one that raises is logged, and the worker goes on."""
    for handler in _hooks[event]:
        try:
            handler(*args)
        except Exception:
            logger.exception("the %s hook %s raised; the worker goes on", event, _name(handler))


def post_fork(config: Config, worker: WorkerInfo) -> None:
    _booting("post_fork", config, worker)


def init(worker: WorkerInfo) -> None:
    _booting("worker_init", worker)


def interrupted(worker: WorkerInfo) -> None:
    _run("worker_int", worker)


def aborted(worker: WorkerInfo) -> None:
    _run("worker_abort", worker)


def exit(worker: WorkerInfo) -> None:
    """Run the worker_exit hooks; one that raises is logged, and the worker exits all the same."""
    _run("worker_exit", worker)


def ssl_context(config: Config, default: Callable[[], ssl.SSLContext]) -> Callable[[], ssl.SSLContext]:
    """What builds the worker's SSLContext: ``default`` itself, or the ssl_context hook given ``default``."""
    if not _hooks["ssl_context"]:
        return default
    handler = _hooks["ssl_context"][0]

    def from_hook() -> ssl.SSLContext:
        try:
            context = handler(config, default)
        except BootError:
            raise  # the default factory's: the --ssl-* files, said as such
        except Exception as exc:
            raise BootError(f"the ssl_context hook {_name(handler)} raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(context, ssl.SSLContext):
            raise BootError(f"the ssl_context hook {_name(handler)} returned a {type(context).__name__}, not an "
                            "ssl.SSLContext: return the context (e.g. the one default_ssl_context_factory() makes)")
        return context

    return from_hook


def request_hooks() -> tuple[list[Callable[..., Any]], list[Callable[..., Any]]]:
    """The pre_request and post_request hooks, for the serving to wrap the app with (only when there are any)."""
    return list(_hooks["pre_request"]), list(_hooks["post_request"])


def _four_parameters(handler: Callable[..., Any]) -> Callable[..., Any]:
    """post_request as gunicorn takes it: with 2, 3 or 4 parameters (worker, req[, environ[, resp]])."""
    try:
        parameters = inspect.signature(handler).parameters.values()
    except (TypeError, ValueError):  # no signature to read (some builtins): called with all four
        return handler
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return handler
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    count = len(positional)
    if count >= 4:
        return handler
    if count in (2, 3):
        @functools.wraps(handler)  # its name, for the log line when it raises
        def fewer(worker: WorkerInfo, req: Any, environ: Any, resp: Any) -> Any:
            return handler(worker, req, environ) if count == 3 else handler(worker, req)

        return fewer
    raise ConfigError(f"the post_request hook {_name(handler)} takes {count} parameter{'' if count == 1 else 's'}: "
                      "give it (worker, req), (worker, req, environ) or (worker, req, environ, resp)")
