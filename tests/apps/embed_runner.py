"""A host program that embeds Cluster.run(): python embed_runner.py APP

It installs its own SIGINT and SIGHUP handlers, its own signal wake-up fd and its own root logging handler,
runs a one-worker cluster until the worker serves, stops it, and then prints what Cluster.run() left changed
("host state unchanged" when nothing), whether its SIGINT handler still runs, and a line through its own
root handler.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from typing import Any

from clusterrun import Cluster, Worker

HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU,
           signal.SIGCHLD, signal.SIGQUIT, signal.SIGUSR1)
got: list[int] = []


def host_handler(signum: int, frame: Any) -> None:
    got.append(signum)


signal.signal(signal.SIGINT, host_handler)
signal.signal(signal.SIGHUP, host_handler)
wake_r, wake_w = socket.socketpair()
wake_w.setblocking(False)
signal.set_wakeup_fd(wake_w.fileno())
logging.basicConfig(level=logging.INFO, format="HOST-FORMAT %(levelname)s %(name)s: %(message)s", stream=sys.stdout)
log = logging.getLogger("host")


def snapshot() -> dict[str, Any]:
    wakeup_fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(wakeup_fd)
    loggers = {name: (logging.getLogger(name).handlers[:], logging.getLogger(name).level,
                      logging.getLogger(name).propagate, logging.getLogger(name).disabled)
               for name in ("", "clusterrun", "uvicorn", "uvicorn.error", "uvicorn.access")}
    return {"signals": {signal.Signals(s).name: signal.getsignal(s) for s in HANDLED}, "wakeup_fd": wakeup_fd,
            "loggers": loggers, "last_resort": logging.lastResort}


before = snapshot()
cluster = Cluster(sys.argv[1], workers=1, port=0)


def serving(worker: Worker) -> None:
    cluster.stop()


cluster.on("listening", serving)


code = cluster.run()
after = snapshot()
changed = {key: (before[key], after[key]) for key in before if before[key] != after[key]}
print(f"run() returned {code}")
print("host state unchanged" if not changed else f"host state changed: {changed}")
os.kill(os.getpid(), signal.SIGINT)  # the host's handler runs (with SIG_DFL left behind, this would kill us)
print(f"host handler got {[signal.Signals(s).name for s in got]}")
log.info("the host logs as before")
sys.exit(code)
