"""Flask hello: a typical small WSGI framework app, with no clusterrun integration."""

from __future__ import annotations

from flask import Flask

app = Flask(__name__)


@app.get("/")
def hello() -> str:
    return "Hello, world!"
