"""Access lines: one per response, in the format --access-log-format gives, from every engine alike.

The format is Python's ``str.format`` with named fields (docs/operating.md "Logs"): ``{client}``, ``{method}``,
``{path}``, ``{query}``, ``{request_line}``, ``{status}``, ``{bytes}``, ``{duration_ms}``, ``{duration_us}``,
``{referer}``, ``{user_agent}``, ``{worker_id}``, ``{worker_index}``, ``{pid}``, and any header:
``{header_x_request_id}`` for the request's ``X-Request-Id``, ``{response_header_content_type}`` for the
response's ``Content-Type`` (lower case, ``_`` for ``-``; gunicorn's ``%({X-Request-Id}i)s`` and
``%({Content-Type}o)s``, granian's ``%(header{X-Request-Id})s``). A header that is absent is ``-``; one sent
several times, its values joined by ``, ``. It is checked once, when the configuration is read: a field that does
not exist is a ConfigError naming it. With --log-format json the fields go into the JSON object as well.

Headers cost nothing when the format names none: the engines hand their header lists over as they are, and only
a format with header fields looks through them.
"""

from __future__ import annotations

import logging
import re
import string
from collections.abc import Iterable
from typing import Any

from clusterrun.errors import ConfigError
from clusterrun.identity import WorkerInfo

DEFAULT_FORMAT = '{client} - "{request_line}" {status} {bytes} {duration_ms:.1f}ms'
FIELDS = ("client", "method", "path", "query", "request_line", "status", "bytes", "duration_ms", "duration_us",
          "referer", "user_agent", "worker_id", "worker_index", "pid")
REQUEST_HEADER = "header_"
RESPONSE_HEADER = "response_header_"
_HEADER_FIELD = re.compile(r"(response_header_|header_)([a-z0-9_]+)")
_SAMPLE: dict[str, Any] = {
    "client": "127.0.0.1:50000", "method": "GET", "path": "/", "query": "", "request_line": "GET / HTTP/1.1",
    "status": 200, "bytes": 2, "duration_ms": 1.0, "duration_us": 1000, "referer": "-", "user_agent": "-",
    "worker_id": 1, "worker_index": 0, "pid": 1,
}
Headers = Iterable[tuple[bytes, bytes]]


def field_names(text: str) -> list[str]:
    """The fields a (valid) format names, without their attributes or indexes."""
    return [re.split(r"[.\[]", name, maxsplit=1)[0]
            for _lit, name, _spec, _conv in string.Formatter().parse(text) if name is not None]


def check_format(text: str) -> str:
    """The format, if every field in it exists and it renders; else a ConfigError naming the problem."""
    try:
        names = field_names(text)
    except ValueError as exc:
        raise ConfigError(f"bad --access-log-format {text!r}: {exc}; write fields as {{status}}") from None
    for name in names:
        if name not in FIELDS and not _HEADER_FIELD.fullmatch(name):
            raise ConfigError(f"bad --access-log-format {text!r}: no field {name!r}; the fields are "
                              f"{', '.join(FIELDS)}, and header_NAME or response_header_NAME for a header (lower "
                              "case, '_' for '-': header_x_request_id)")
    try:
        text.format(**_SAMPLE, **{name: "-" for name in names if name not in _SAMPLE})
    except (ValueError, TypeError, LookupError, AttributeError) as exc:
        raise ConfigError(f"bad --access-log-format {text!r}: {exc}") from None
    return text


def _wanted(names: Iterable[str], prefix: str) -> dict[bytes, str]:
    """The headers the format names with ``prefix``: the header's name as a field spells it -> the field."""
    return {name[len(prefix):].encode("ascii"): name for name in names
            if (match := _HEADER_FIELD.fullmatch(name)) is not None and match.group(1) == prefix}


def _pick(headers: Headers, wanted: dict[bytes, str], fields: dict[str, Any]) -> None:
    """Fill ``fields`` with the values of the wanted headers ("-" for a header that is absent)."""
    found: dict[str, list[str]] = {}
    for name, value in headers:
        field = wanted.get(name.lower().replace(b"-", b"_"))
        if field is not None:
            found.setdefault(field, []).append(value.decode("latin-1"))
    for field in wanted.values():
        values = found.get(field)
        fields[field] = ", ".join(values) if values else "-"


class AccessLog:
    """Writes access lines to the ``clusterrun.access`` logger (stdout, or --access-log-file)."""

    def __init__(self, text_format: str, worker: WorkerInfo) -> None:
        self.format = text_format
        self.worker = {"worker_id": worker.id, "worker_index": worker.index, "pid": worker.pid}
        self.logger = logging.getLogger("clusterrun.access")
        names = field_names(text_format)
        self.request_headers = _wanted(names, REQUEST_HEADER)
        self.response_headers = _wanted(names, RESPONSE_HEADER)

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)

    def log(self, client: str, method: str, path: str, query: str, http_version: str, status: int, size: int,
            seconds: float, referer: str, user_agent: str, request_headers: Headers = (),
            response_headers: Headers = ()) -> None:
        fields: dict[str, Any] = {
            "client": client, "method": method, "path": path, "query": query,
            "request_line": f"{method} {path}{'?' + query if query else ''} HTTP/{http_version}",
            "status": status, "bytes": size, "duration_ms": seconds * 1000, "duration_us": round(seconds * 1e6),
            "referer": referer or "-", "user_agent": user_agent or "-", **self.worker,
        }
        if self.request_headers:
            _pick(request_headers, self.request_headers, fields)
        if self.response_headers:
            _pick(response_headers, self.response_headers, fields)
        self.logger.info(self.format.format(**fields), extra={"access": fields})
