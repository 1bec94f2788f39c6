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


def version(number: int) -> str:
    """The same length each time, as a one-character fix is: Python trusts a cached .pyc whose source has the
    same size and mtime second, so the reloader must drop the stale one (this failed in CI before it did)."""
    return f"v{number}"


def answers(url: str) -> set[str]:
    """What four new connections get: under rr, both workers answer."""
    return {FRESH.get(url).text for _ in range(4)}


@pytest.mark.parametrize("interface", ["wsgi", "asgi"])
def test_an_edit_is_served_and_broken_code_never_replaces_the_old(run_cli: Any, tmp_path: Path,
                                                                 interface: str) -> None:
    module = tmp_path / "devapp.py"
    module.write_text(APP.format(version=version(1)))
    cluster = run_cli(f"devapp:{interface}", "--port", "0", "--workers", "2", "--reload", cwd=tmp_path)
    url = cluster.wait_ready()
    cluster.wait_for_line(r"--reload: watching")
    assert answers(url) == {version(1)}

    edited = time.monotonic()
    module.write_text(APP.format(version=version(2)))
    try:
        wait_until(lambda: answers(url) == {version(2)}, "both workers serving the edit")
    finally:
        print(cluster.output())  # shown by pytest only when the test fails
    print(f"edit served after {time.monotonic() - edited:.2f}s")  # measured, not asserted (see the README)

    module.write_text(APP.format(version=version(3)).replace("VERSION =", "VERSION ="[:-1]))  # a syntax error
    cluster.wait_for_line(r"rolling restart aborted: .* failed to boot: .*SyntaxError")
    assert answers(url) == {version(2)}  # the old workers keep serving
    assert cluster.output().count("rolling restart aborted") == 1

    module.write_text(APP.format(version=version(4)))
    wait_until(lambda: answers(url) == {version(4)}, "both workers serving the fix once the code imports again")
