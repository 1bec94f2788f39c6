"""Answers who the worker runs as: GET / -> {"pid", "uid", "gid", "euid", "egid", "groups", "metrics_dir_writable"}.

``metrics_dir_writable``: whether the worker may write in PROMETHEUS_MULTIPROC_DIR (None: not set).
"""

from __future__ import annotations

import json
import os
from typing import Any


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    body = json.dumps({"pid": os.getpid(), "uid": os.getuid(), "gid": os.getgid(), "euid": os.geteuid(),
                       "egid": os.getegid(), "groups": sorted(os.getgroups()),
                       "metrics_dir_writable": _writable(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))})
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body.encode()]


def _writable(folder: str | None) -> bool | None:
    return None if folder is None else os.access(folder, os.W_OK | os.X_OK)
