"""Apps inside a package: ``e2e_pkg.web:wsgi`` and ``e2e_pkg.web:asgi``."""

from __future__ import annotations

from typing import Any

from e2e_common import asgi_app, wsgi_app


def wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    return wsgi_app(environ, start_response, kind="package-wsgi", module=__name__)


async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await asgi_app(scope, receive, send, kind="package-asgi", module=__name__)
