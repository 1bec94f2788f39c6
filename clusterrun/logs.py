"""Log set-up: one format for the primary and every worker, each line naming its process.

Only clusterrun's own loggers are configured — the ``clusterrun`` tree (``clusterrun.access`` for access
lines), and the ``uvicorn`` tree that serves the workers — each with clusterrun's handler and without
propagation. The root logger is the app's and the host program's: an app's
``logging.basicConfig(level=..., format=...)`` takes effect in its workers, and a program that embeds
``Cluster.run()`` keeps its handlers. Records that no handler takes (an app that configured nothing) fall back
to clusterrun's format through ``logging.lastResort``, so a worker's stray warnings still say which worker wrote
them. ``setup`` returns what puts everything back as it was.

Where lines go: everything on stderr, access lines on stdout (as uvicorn), or into ``--log-file`` and
``--access-log-file``, which SIGUSR1 to the primary reopens everywhere (logrotate's ``postrotate``). In
``--log-format json`` each line is one JSON object. ``--log-config FILE`` hands all of it to the standard
library's dictConfig (.json, .toml, .yaml) or fileConfig (.ini and others) instead.
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
import stat
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any, Protocol

from clusterrun.errors import ConfigError
from clusterrun.identity import WorkerInfo

logger = logging.getLogger("clusterrun")

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}

# The loggers clusterrun configures; nothing else is touched.
_OWN = ("clusterrun", "clusterrun.access", "uvicorn", "uvicorn.error", "uvicorn.access")
ACCESS = "clusterrun.access"

# The files this process writes logs to: SIGUSR1 (in the primary; a frame in the workers) reopens them.
_files: list[ReopeningFileHandler] = []


class Account(Protocol):
    """Whom the workers run as (--user): the owner the primary gives the log files it opens."""

    @property
    def uid(self) -> int: ...

    @property
    def gid(self) -> int: ...


class LogSettings(Protocol):
    """The few settings ``setup`` reads. clusterrun's Config has them; declared here, so that this leaf imports
    nothing of the configuration (read-only properties: a frozen dataclass satisfies them)."""

    @property
    def log_level(self) -> str: ...

    @property
    def log_format(self) -> str: ...

    @property
    def log_config(self) -> str: ...

    @property
    def log_file(self) -> str: ...

    @property
    def access_log(self) -> bool: ...

    @property
    def access_log_file(self) -> str: ...

    @property
    def run_as(self) -> Account | None: ...


class ReopeningFileHandler(logging.FileHandler):
    """A log file that ``reopen()`` opens again by name (after logrotate moved it away), then closes the old one.

    ``owner``: with --user, the (uid, gid) of the workers. The primary, as root, gives them every log file it
    opens or creates, so that a worker (no longer root) can open it again on SIGUSR1, and so that logrotate's
    ``create`` (which copies the old file's owner) makes the next one theirs too.
    """

    def __init__(self, path: str, owner: tuple[int, int] | None = None) -> None:
        self.owner = owner
        super().__init__(path, encoding="utf-8")

    def _open(self) -> Any:
        stream = super()._open()
        # Regular files only: --log-file /dev/null or /dev/stdout must not hand a device or a pipe over.
        if self.owner is not None and os.geteuid() == 0 and stat.S_ISREG(os.fstat(stream.fileno()).st_mode):
            os.fchown(stream.fileno(), *self.owner)
        return stream

    def reopen(self) -> None:
        """Open the file again; if that fails (OSError) the old one stays open and in use."""
        stream = self._open()
        self.acquire()
        try:
            old, self.stream = self.stream, stream
        finally:
            self.release()
        if old is not None:
            old.close()


def reopen() -> int:
    """Reopen every log file of this process; how many could be. One that cannot keeps its old file, logged."""
    reopened = 0
    for handler in _files:
        try:
            handler.reopen()
        except OSError as exc:
            logger.error("cannot reopen the log file %s (%s): still writing to the file open before; make it "
                         "writable by uid %d", handler.baseFilename, exc, os.geteuid())
        else:
            reopened += 1
    return reopened


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the process, an access line's fields."""

    def __init__(self, worker: WorkerInfo | None) -> None:
        super().__init__()
        self.process = {"worker": worker.as_dict()} if worker else {"primary": os.getpid()}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage(),
            **self.process,
        }
        fields = getattr(record, "access", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _formatter(log_format: str, worker: WorkerInfo | None) -> logging.Formatter:
    if log_format == "json":
        return JsonFormatter(worker)
    who = f"worker {worker.id} index {worker.index} pid {worker.pid}" if worker else "primary pid %(process)d"
    return logging.Formatter(f"%(asctime)s [{who}] %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")


def _handler(
    path: str, stream: IO[str], formatter: logging.Formatter, owner: tuple[int, int] | None = None
) -> logging.Handler:
    handler: logging.Handler
    if path:
        handler = ReopeningFileHandler(path, owner)
        _files.append(handler)  # type: ignore[arg-type]
    else:
        handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    return handler


def setup(settings: LogSettings, worker: WorkerInfo | None = None) -> Callable[[], None]:
    """Set up clusterrun's and uvicorn's loggers as the options say; the function that puts them back."""
    saved = {name: _save(logging.getLogger(name)) for name in _OWN}
    saved_last_resort = logging.lastResort
    if settings.log_config:
        apply_log_config(settings.log_config)
        return lambda: None  # the file rules: nothing of ours to put back
    formatter = _formatter(settings.log_format, worker)
    owner = (settings.run_as.uid, settings.run_as.gid) if settings.run_as is not None else None  # --user
    handler = _handler(settings.log_file, sys.stderr, formatter, owner)
    access_handler = _handler(settings.access_log_file, sys.stdout, formatter, owner)
    _own(logging.getLogger("clusterrun"), handler, _LEVELS[settings.log_level])
    _own(logging.getLogger(ACCESS), access_handler, logging.INFO if settings.access_log else logging.CRITICAL + 1)
    # uvicorn chats at INFO about lifespan and shutdown in every worker; the primary says what matters.
    # (Set on the tree's top too: a level left unset would follow the root's, the app's choice.) Its access
    # lines are off: clusterrun writes its own (clusterrun.accesslog), in the same way for every engine.
    uvicorn_level = logging.DEBUG if settings.log_level == "debug" else logging.WARNING
    _own(logging.getLogger("uvicorn"), handler, uvicorn_level)
    logging.getLogger("uvicorn.error").setLevel(uvicorn_level)
    uvicorn_access = logging.getLogger("uvicorn.access")
    uvicorn_access.handlers, uvicorn_access.propagate, uvicorn_access.disabled = [], False, True

    # What nobody handles (an app that configured no logging) still names its process. As Python's own
    # last resort: warnings and errors only.
    fallback = _handler("", sys.stderr, formatter)
    fallback.setLevel(logging.WARNING)
    logging.lastResort = fallback

    def restore() -> None:
        for name, was in saved.items():
            _restore(logging.getLogger(name), was)
        logging.lastResort = saved_last_resort
        for made in (handler, access_handler, fallback):
            made.flush()
            made.close()
            if made in _files:
                _files.remove(made)  # type: ignore[arg-type]

    return restore


def apply_log_config(path: str) -> None:
    """--log-config: dictConfig from .json, .toml or .yaml/.yml; fileConfig from anything else (.ini)."""
    suffix = os.path.splitext(path)[1].lower()
    try:
        if suffix in (".json", ".toml", ".yaml", ".yml"):
            logging.config.dictConfig(_read_dict(path, suffix))
        else:
            logging.config.fileConfig(path, disable_existing_loggers=False)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"bad --log-config {path!r}: {type(exc).__name__}: {exc}") from None


def _read_dict(path: str, suffix: str) -> Any:
    with open(path, "rb") as file:
        data = file.read()
    if suffix == ".json":
        return json.loads(data)
    if suffix == ".toml":
        if sys.version_info >= (3, 11):
            import tomllib
        else:
            import tomli as tomllib
        return tomllib.loads(data.decode())
    try:
        import yaml
    except ImportError:
        raise ConfigError(f"--log-config {path!r} is YAML, which needs PyYAML: pip install pyyaml (or give "
                          "the same as .json or .toml)") from None
    return yaml.safe_load(data)


def _own(target: logging.Logger, handler: logging.Handler, level: int) -> None:
    target.handlers = [handler]
    target.setLevel(level)
    target.propagate = False
    target.disabled = False


@dataclass(frozen=True)
class _Saved:
    handlers: list[logging.Handler]
    level: int
    propagate: bool
    disabled: bool


def _save(target: logging.Logger) -> _Saved:
    return _Saved(list(target.handlers), target.level, target.propagate, target.disabled)


def _restore(target: logging.Logger, saved: _Saved) -> None:
    target.handlers = saved.handlers
    target.setLevel(saved.level)
    target.propagate = saved.propagate
    target.disabled = saved.disabled


def announce_engine(worker: WorkerInfo, engine: str) -> None:
    """What serves HTTP in the workers ("inline WSGI engine (httptools, compiled)", "uvicorn h11 + asyncio"): said
    once, by the first worker forked, so that a parser, loop or build fallen back to (h11 without httptools, the
    pure-Python engine where no compiler was) shows in the log."""
    if worker.id == 1:
        logger.info("serving with the %s", engine)
