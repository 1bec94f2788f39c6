"""Flask integration: the current worker on ``g.worker``, and an optional ``X-Worker-Id`` header.

    from clusterrun.adapters.flask import ClusterrunFlask
    ClusterrunFlask(app, header=True)
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, g

from clusterrun.identity import WorkerInfo, current_worker

HEADER = "X-Worker-Id"


class ClusterrunFlask:
    def __init__(self, app: Flask | None = None, *, header: bool = False) -> None:
        self.header = header
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        app.extensions["clusterrun"] = self
        app.before_request(self._before)
        if self.header:
            app.after_request(self._after)
        app.context_processor(lambda: {"worker": current_worker()})

    @staticmethod
    def _before() -> None:
        g.worker = current_worker()

    @staticmethod
    def _after(response: Response) -> Response:
        worker = g.get("worker")
        if worker is not None:
            response.headers[HEADER] = str(worker.id)
        return response


def worker() -> WorkerInfo | None:
    """The worker serving this request (the same as ``g.worker``), None outside clusterrun."""
    found: Any = g.get("worker", None)
    return found if found is not None else current_worker()
