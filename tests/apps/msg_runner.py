"""A runner script on the Cluster API: python msg_runner.py APP WORKERS [EXTRA_OPTION=VALUE ...]

Logs every event as "event NAME ID ..." and answers each message with {"echo": text}; a message whose
text is "boom" makes the handler raise.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from clusterrun import Cluster, Worker

log = logging.getLogger("runner")
extra = dict(arg.split("=", 1) for arg in sys.argv[3:])
cluster = Cluster(sys.argv[1], workers=sys.argv[2], port=0, **extra)


def logger_for(name: str) -> Any:
    def log_event(worker: Worker, *rest: Any) -> None:
        log.warning("event %s %d %s", name, worker.id, " ".join(map(str, rest)))

    return log_event


for event in ("fork", "online", "listening", "disconnect", "exit", "message"):
    cluster.on(event, logger_for(event))


@cluster.on("message")
def echo(worker: Worker, message: Any) -> None:
    if message["text"] == "boom":
        raise RuntimeError("handler failed on purpose")
    worker.send({"echo": message["text"]})
    log.warning("workers now: %s", sorted(cluster.workers))


sys.exit(cluster.run())
