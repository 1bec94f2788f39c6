"""An app object that speaks WSGI when called with 2 arguments and ASGI with 3.

Its ``__call__`` is a plain method, so auto-detection calls it WSGI; only ``--interface asgi`` makes clusterrun
serve it as ASGI. The answer tells which interface was used.
"""

from __future__ import annotations

from typing import Any

from e2e_common import asgi_app, wsgi_app


class Dual:
    def __call__(self, *args: Any) -> Any:
        if len(args) == 2:
            return wsgi_app(*args, kind="dual")
        return asgi_app(*args, kind="dual")  # a coroutine: the ASGI server awaits it


app = Dual()
