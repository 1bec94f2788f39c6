"""Run a cluster from Python, with Node-style events: python runner.py

The primary logs every worker's life, answers messages, and replaces workers
one by one every hour (a toy policy; clusterrun's --max-requests is the real one).
"""

import logging
import os
import sys

from clusterrun import Cluster, Worker

# The runner's logging is its own: clusterrun configures only its own loggers, and puts back what it
# touched when run() returns.
logging.basicConfig(level=logging.INFO, format="%(asctime)s [runner] %(levelname)s %(message)s")
log = logging.getLogger("runner")
cluster = Cluster("starlette_app:app", workers=2, bind=os.environ.get("BIND", "127.0.0.1:8000"))


@cluster.on("listening")
def listening(worker: Worker) -> None:
    log.info("worker %d (slot %d, pid %d) is serving; live: %s", worker.id, worker.index, worker.pid,
             sorted(cluster.workers))


@cluster.on("exit")
def exited(worker: Worker, code: int | None, signal: str | None) -> None:
    log.info("worker %d exited (%s)", worker.id, f"code {code}" if signal is None else signal)


@cluster.on("message")
def message(worker: Worker, message: object) -> None:
    log.info("worker %d says %r", worker.id, message)
    worker.send({"ack": True})


if __name__ == "__main__":
    sys.exit(cluster.run())
