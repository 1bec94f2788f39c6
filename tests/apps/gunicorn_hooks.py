"""Every gunicorn server hook, as a gunicorn config file would define it: each writes one line to $HOOK_LOG.

A line is the hook's name, then what it was given, space-separated. With $HOOK_RAISE set, pre_request and
post_request raise after writing their line (a broken APM agent). With $HOOK_TLS13 set, ssl_context makes the
default context refuse anything older than TLS 1.3.
"""

from __future__ import annotations

import os
import ssl
from typing import Any


def _note(*words: object) -> None:
    with open(os.environ["HOOK_LOG"], "a") as log:
        log.write(" ".join(str(word) for word in words) + "\n")


def _who(worker: Any) -> str:
    return f"{worker.id}/{worker.index}/{worker.pid}"


def on_starting(config: Any) -> None:
    _note("on_starting")


def nworkers_changed(config: Any, new: int, old: int | None) -> None:
    _note("nworkers_changed", new, old)


def pre_fork(config: Any, worker: Any) -> None:
    _note("pre_fork", _who(worker), os.getpid())


def post_fork(config: Any, worker: Any) -> None:
    _note("post_fork", _who(worker), os.getpid(), config.app)


def post_worker_init(worker: Any) -> None:
    _note("post_worker_init", _who(worker), os.getpid())


def ssl_context(config: Any, default_ssl_context_factory: Any) -> ssl.SSLContext:
    context: ssl.SSLContext = default_ssl_context_factory()
    if os.environ.get("HOOK_TLS13"):
        context.minimum_version = ssl.TLSVersion.TLSv1_3
    _note("ssl_context", os.getpid())
    return context


def pre_request(worker: Any, req: Any) -> None:
    token = dict(req.headers).get("X-TOKEN", "-")
    _note("pre_request", _who(worker), os.getpid(), req.method, req.path, req.query or "-", req.uri, token,
          "{}.{}".format(*req.version))
    if os.environ.get("HOOK_RAISE"):
        raise RuntimeError("the APM agent is down")


def post_request(worker: Any, req: Any, environ: Any, resp: Any) -> None:
    kind = "environ" if "REQUEST_METHOD" in environ else "scope"
    _note("post_request", _who(worker), os.getpid(), req.method, req.path, kind, resp.status_code,
          resp.status.replace(" ", "_"))
    if os.environ.get("HOOK_RAISE"):
        raise RuntimeError("the APM agent is down")


def worker_int(worker: Any) -> None:
    _note("worker_int", _who(worker), os.getpid())


def worker_abort(worker: Any) -> None:
    _note("worker_abort", _who(worker), os.getpid())


def worker_exit(worker: Any) -> None:
    _note("worker_exit", _who(worker), os.getpid())


def child_exit(config: Any, worker: Any) -> None:
    _note("child_exit", f"{worker.id}/{worker.index}/{worker.pid}", os.getpid())


def pre_exec(config: Any) -> None:
    _note("pre_exec")


def on_exit(config: Any) -> None:
    _note("on_exit")
