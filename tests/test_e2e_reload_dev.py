"""--reload as a developer uses it: edit a file, the workers serve the new code; break it, the old code serves on."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from helpers import FRESH, wait_until

APP = '''VERSION = "{version}"


def wsgi(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [VERSION.encode()]


async def asgi(scope, receive, send):
    if scope["type"] == "http":
        await send({{"type": "http.response.start", "status": 200, "headers": []}})
        await send({{"type": "http.response.body", "body": VERSION.encode()}})
'''


def answers(url: str) -> set[str]:
    """What four new connections get: under rr, both workers answer."""
    return {FRESH.get(url).text for _ in range(4)}


@pytest.mark.parametrize("interface", ["wsgi", "asgi"])
def test_an_edit_is_served_and_broken_code_never_replaces_the_old(run_cli: Any, tmp_path: Path,
                                                                 interface: str) -> None:
    module = tmp_path / "devapp.py"
    module.write_text(APP.format(version="v1"))
    cluster = run_cli(f"devapp:{interface}", "--port", "0", "--workers", "2", "--reload", cwd=tmp_path)
    url = cluster.wait_ready()
    cluster.wait_for_line(r"--reload: watching")
    assert answers(url) == {"v1"}

    edited = time.monotonic()
    module.write_text(APP.format(version="v2"))
    wait_until(lambda: answers(url) == {"v2"}, "both workers serving v2")
    print(f"edit served after {time.monotonic() - edited:.2f}s")  # measured, not asserted (see the README)

    module.write_text(APP.format(version="v3").replace("VERSION =", "VERSION ="[:-1]))  # a syntax error
    cluster.wait_for_line(r"rolling restart aborted: .* failed to boot: .*SyntaxError")
    assert answers(url) == {"v2"}  # the old workers keep serving
    assert cluster.output().count("rolling restart aborted") == 1

    module.write_text(APP.format(version="v3"))
    wait_until(lambda: answers(url) == {"v3"}, "both workers serving v3 once the code imports again")
