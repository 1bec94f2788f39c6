"""Takes a minute to import, as an app stuck on a database at start: clusterrun start must give up at its deadline."""

from __future__ import annotations

import time

time.sleep(60)


def app(environ: dict[str, object], start_response: object) -> list[bytes]:  # pragma: no cover - never reached
    raise AssertionError("the import never ends in time")
