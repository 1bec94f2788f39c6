"""A sticky router on the Cluster API: python handles_runner.py APP WORKERS MODE [EXTRA_OPTION=VALUE ...]

Listens on a port of its own (logged as "routing on PORT") and passes each connection to a ready worker chosen by
a rule: a hash of the client's address and port (crc32 of "HOST:PORT") modulo the number of ready workers, in slot
order. MODE goes with the message: "serve" (the worker serves HTTP on it) or "raw" (the worker writes one line).
Once the first worker listens, the runner tries to send it what is no socket, and logs each refusal as "refused:
MESSAGE"; with MODE "listener" it then passes that worker a listener of its own ("passed a listener on PORT").
With MODE "close" it closes its listener once the second worker listens, and forks one more.
"""

from __future__ import annotations

import logging
import socket
import sys
import zlib
from typing import Any

from clusterrun import Cluster, MessageError, Worker

log = logging.getLogger("runner")
app, workers, mode = sys.argv[1:4]
extra = dict(arg.split("=", 1) for arg in sys.argv[4:])
cluster = Cluster(app, workers=workers, port=0, **extra)


kept: list[socket.socket] = []


def route(conn: socket.socket, address: Any) -> None:
    ready = sorted((w for w in cluster.workers.values() if w.state == "ready"), key=lambda w: w.index)
    if not ready:
        conn.close()
        return
    chosen = ready[zlib.crc32(f"{address[0]}:{address[1]}".encode()) % len(ready)]
    chosen.send({"mode": mode}, conn)
    log.warning("routed port %d to index %d", address[1], chosen.index)


@cluster.on("listening")
def try_bad_handles(worker: Worker) -> None:
    log.warning("worker %d listening", worker.id)
    if mode == "close" and worker.id == 2:  # the program closes its listener while the cluster runs, then forks
        listener.close()
        log.warning("closed the listener")
        cluster.fork()
    if worker.id != 1:
        return
    closed = socket.socket()
    closed.close()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    unconnected = socket.socket()
    try:
        for bad in ("not a socket", closed, udp, unconnected):
            try:
                worker.send({"mode": mode}, bad)
            except MessageError as exc:
                log.warning("refused: %s", exc)
    finally:
        udp.close()
        unconnected.close()
    worker.send({"plain": True})  # a message with no handle still reaches both kinds of callback
    if mode == "listener":  # a listener of the runner's own, passed to the worker, which accepts on it
        extra_listener = socket.create_server(("127.0.0.1", 0))
        kept.append(extra_listener)
        worker.send({"mode": "accept"}, extra_listener)
        log.warning("passed a listener on %d; open here still: %s", extra_listener.getsockname()[1],
                    extra_listener.fileno() >= 0)


listener = cluster.listen(("127.0.0.1", 0), route)
log.warning("routing on %d", listener.getsockname()[1])
code = cluster.run()
listener.close()
sys.exit(code)
