"""Zero-argument app factories, for ``--factory``: each built app reports that it came from its factory."""

from __future__ import annotations

import os
from typing import Any

from e2e_common import asgi_app, wsgi_app


def create_wsgi() -> Any:
    made_in = os.getpid()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        return wsgi_app(environ, start_response, kind="factory-wsgi", made_in=made_in)

    return app


def create_asgi() -> Any:
    made_in = os.getpid()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await asgi_app(scope, receive, send, kind="factory-asgi", made_in=made_in)

    return app


def create_broken() -> Any:
    raise ValueError("e2e-factory: SECRET_KEY is missing")
