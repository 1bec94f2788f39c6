"""Flask and Starlette apps that answer what they make of the request: the client, the URL they would build
links with, the mount prefix. Behind a proxy these are what the proxy headers and --root-path must get right."""

from __future__ import annotations

from flask import Flask, jsonify, request, url_for
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

wsgi = Flask(__name__)


@wsgi.route("/where")
def where() -> object:
    return jsonify(client=request.remote_addr, url=request.url, link=url_for("where", _external=True),
                   script_name=request.environ["SCRIPT_NAME"], path_info=request.environ["PATH_INFO"])


async def asgi_where(req: Request) -> JSONResponse:
    client = req.client
    return JSONResponse({"client": client.host if client else None, "url": str(req.url),
                         "link": str(req.url_for("where")), "root_path": req.scope.get("root_path", "")})


asgi = Starlette(routes=[Route("/where", asgi_where, name="where")])
