"""A raw WSGI function (no framework): clusterrun must detect it as WSGI."""

from __future__ import annotations

from typing import Any

from e2e_common import wsgi_app


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    return wsgi_app(environ, start_response, kind="raw-wsgi-function")
