"""Hooks for `clusterrun APP --hooks msg_hooks`: functions named after cluster events."""

import logging

log = logging.getLogger("hooks")


def fork(worker):  # type: ignore[no-untyped-def]
    log.warning("hook fork %d", worker.id)


def listening(worker):  # type: ignore[no-untyped-def]
    log.warning("hook listening %d", worker.id)


def message(worker, message):  # type: ignore[no-untyped-def]
    log.warning("hook message %d %s", worker.id, message["text"])
    worker.send({"echo": message["text"]})
