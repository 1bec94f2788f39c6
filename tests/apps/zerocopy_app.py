"""Test app: the ASGI zero-copy extension (http.response.zerocopysend) as an app other than --static uses it.

/?file=PATH&offset=N&count=N&framing=length|chunked  sends that part of the file; the scope's extensions, as JSON,
at /extensions. Framing ``chunked`` sends no Content-Length.
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import parse_qs


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/extensions":
        body = json.dumps(sorted(scope.get("extensions", {}))).encode()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]})
        await send({"type": "http.response.body", "body": body})
        return
    query = {key: values[0] for key, values in parse_qs(scope["query_string"].decode()).items()}
    offset, count = int(query["offset"]), int(query["count"])
    headers = [] if query["framing"] == "chunked" else [(b"content-length", b"%d" % (count + 4))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"head", "more_body": True})
    with open(query["file"], "rb") as file:
        await send({"type": "http.response.zerocopysend", "file": file, "offset": offset, "count": count})
    assert os.path.exists(query["file"])
