"""Access lines: one per response, in the format --access-log-format gives, from every engine alike.

The format is Python's ``str.format`` with named fields (README "Logs"): ``{client}``, ``{method}``, ``{path}``,
``{query}``, ``{request_line}``, ``{status}``, ``{bytes}``, ``{duration_ms}``, ``{duration_us}``,
``{referer}``, ``{user_agent}``, ``{worker_id}``, ``{worker_index}``, ``{pid}``. It is checked once, when the
configuration is read: a field that does not exist is a ConfigError naming it. With --log-format json the
fields go into the JSON object as well.
"""

from __future__ import annotations

import logging
import string
from typing import Any

from clusterrun.errors import ConfigError
from clusterrun.identity import WorkerInfo

DEFAULT_FORMAT = '{client} - "{request_line}" {status} {bytes} {duration_ms:.1f}ms'
FIELDS = ("client", "method", "path", "query", "request_line", "status", "bytes", "duration_ms", "duration_us",
          "referer", "user_agent", "worker_id", "worker_index", "pid")
_SAMPLE: dict[str, Any] = {
    "client": "127.0.0.1:50000", "method": "GET", "path": "/", "query": "", "request_line": "GET / HTTP/1.1",
    "status": 200, "bytes": 2, "duration_ms": 1.0, "duration_us": 1000, "referer": "-", "user_agent": "-",
    "worker_id": 1, "worker_index": 0, "pid": 1,
}


def check_format(text: str) -> str:
    """The format, if every field in it exists and it renders; else a ConfigError naming the problem."""
    try:
        names = [name for _lit, name, _spec, _conv in string.Formatter().parse(text) if name is not None]
    except ValueError as exc:
        raise ConfigError(f"bad --access-log-format {text!r}: {exc}; write fields as {{status}}") from None
    for name in names:
        if name not in FIELDS:
            raise ConfigError(f"bad --access-log-format {text!r}: no field {name!r}; the fields are "
                              f"{', '.join(FIELDS)}")
    try:
        text.format(**_SAMPLE)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"bad --access-log-format {text!r}: {exc}") from None
    return text


class AccessLog:
    """Writes access lines to the ``clusterrun.access`` logger (stdout, or --access-log-file)."""

    def __init__(self, text_format: str, worker: WorkerInfo) -> None:
        self.format = text_format
        self.worker = {"worker_id": worker.id, "worker_index": worker.index, "pid": worker.pid}
        self.logger = logging.getLogger("clusterrun.access")

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, client: str, method: str, path: str, query: str, http_version: str, status: int, size: int,
            seconds: float, referer: str, user_agent: str) -> None:
        fields: dict[str, Any] = {
            "client": client, "method": method, "path": path, "query": query,
            "request_line": f"{method} {path}{'?' + query if query else ''} HTTP/{http_version}",
            "status": status, "bytes": size, "duration_ms": seconds * 1000, "duration_us": round(seconds * 1e6),
            "referer": referer or "-", "user_agent": user_agent or "-", **self.worker,
        }
        self.logger.info(self.format.format(**fields), extra={"access": fields})
