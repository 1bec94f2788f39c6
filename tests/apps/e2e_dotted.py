"""Apps reached through a dotted attribute: ``e2e_dotted:site.wsgi`` and ``e2e_dotted:site.asgi``."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from e2e_common import asgi_app, wsgi_app


def _wsgi(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    return wsgi_app(environ, start_response, kind="dotted-wsgi")


async def _asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await asgi_app(scope, receive, send, kind="dotted-asgi")


site = SimpleNamespace(wsgi=_wsgi, asgi=_asgi)
