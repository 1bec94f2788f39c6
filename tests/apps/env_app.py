"""Answers what the app sees of its process: the folder it runs in and the variables named in the query.

GET /?names=A,B  ->  {"cwd": "...", "env": {"A": ..., "B": ...}}
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import parse_qs


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    names = parse_qs(environ.get("QUERY_STRING", "")).get("names", [""])[0].split(",")
    body = json.dumps({"cwd": os.getcwd(), "env": {name: os.environ.get(name) for name in names if name}})
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body.encode()]


def printing(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Prints a line per request, as apps do for their logs: it goes to the app's stdout."""
    print(f"served {environ.get('PATH_INFO')}")
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"printed\n"]


def orphan(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """Leaves an orphan behind: a child forks a grandchild and exits at once; the grandchild exits 0.2 s later.

    The grandchild is reparented to the nearest subreaper or to PID 1, which must reap it.
    """
    pid = os.fork()
    if pid == 0:
        if os.fork() == 0:
            import time

            time.sleep(0.2)
            os._exit(0)
        os._exit(0)
    os.waitpid(pid, 0)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"left an orphan\n"]
