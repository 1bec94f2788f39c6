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
