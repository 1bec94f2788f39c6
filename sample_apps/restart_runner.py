"""Node's classic runner, in Python: restart the workers one by one, on demand. python restart_runner.py

The Node version (process.on("SIGUSR2"), then for each worker: disconnect it, wait for its exit, fork a
replacement, wait until it listens, go on to the next) written with clusterrun's Node calls. SIGUSR2 and SIGHUP
are clusterrun's own rolling restart (which forks the replacement first); here a worker asks with a message,
sent by GET /restart: a toy trigger, to keep the sample one file. The file is the app too: the workers import
it as restart_runner:app, and only ``python restart_runner.py`` runs the cluster.

While it runs, the other workers serve: with two workers or more, no request fails.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from typing import Any

import clusterrun
from clusterrun import Cluster, Worker


def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """The workers' WSGI app: / says which worker answered; /restart asks the primary to restart them all."""
    worker = clusterrun.current_worker()
    assert worker is not None
    if environ["PATH_INFO"] == "/restart":
        worker.send({"restart": True})
    body = json.dumps({"worker": worker.as_dict()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


class OneByOne:
    """The restart itself: the workers to replace, and the one being replaced now."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.queue: list[int] = []  # ids of the workers still to replace
        self.leaving: int | None = None  # disconnected: its exit forks the replacement
        self.coming: int | None = None  # forked: its listening moves on to the next worker
        cluster.on("message", self.message)
        cluster.on("exit", self.exited)
        cluster.on("listening", self.listening)

    def message(self, worker: Worker, message: Any) -> None:
        if message == {"restart": True}:
            if self.queue or self.leaving is not None or self.coming is not None:
                log.info("a restart is running already")
                return
            self.queue = sorted(self.cluster.workers)
            log.info("restarting workers %s one by one", self.queue)
            self.next()

    def next(self) -> None:
        while self.queue:
            worker = self.cluster.workers.get(self.queue.pop(0))
            if worker is not None:  # it may have crashed (and been respawned) since
                self.leaving = worker.id
                worker.disconnect()
                return
        log.info("every worker was restarted; serving: %s", sorted(self.cluster.workers))

    def exited(self, worker: Worker, code: int | None, signal: str | None) -> None:
        if worker.id != self.leaving:
            return  # a crash: clusterrun respawns it (a Node runner would fork here, if not exited_after_disconnect)
        self.leaving = None
        if not worker.exited_after_disconnect:
            log.warning("worker %d crashed while it drained; clusterrun respawns it", worker.id)
            self.next()
            return
        new = self.cluster.fork()  # into the slot the old worker left
        if new is None:
            log.error("could not fork a replacement for worker %d; restart stopped", worker.id)
            self.queue = []
            return
        self.coming = new.id
        log.info("worker %d left (exited_after_disconnect %s); worker %d replaces it", worker.id,
                 worker.exited_after_disconnect, new.id)

    def listening(self, worker: Worker) -> None:
        if worker.id == self.coming:
            self.coming = None
            self.next()


log = logging.getLogger("restart_runner")

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s [runner] %(levelname)s %(message)s")
    cluster = Cluster("restart_runner:app", workers=int(os.environ.get("WORKERS", "3")),
                      bind=os.environ.get("BIND", "127.0.0.1:8000"))
    OneByOne(cluster)
    sys.exit(cluster.run())
