"""A Flask app for clusterrun: run it with `clusterrun flask_app:app --workers auto`."""

import os

from clusterrun.adapters.flask import ClusterrunFlask
from flask import Flask, g

app = Flask(__name__)
ClusterrunFlask(app, header=True)


@app.get("/")
def hello() -> dict[str, object]:
    worker = g.worker
    return {
        "message": "Hello from Flask on clusterrun",
        "worker": {"id": worker.id, "index": worker.index, "pid": worker.pid} if worker else None,
        "pid": os.getpid(),
    }


@app.get("/heavy")
def heavy() -> dict[str, object]:
    # About 10 ms of pure-Python CPU work: shows how policies spread slow requests.
    total = sum(i * i for i in range(100_000))
    return {"result": total, "worker": g.worker.id if g.worker else None}
