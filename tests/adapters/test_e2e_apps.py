"""End-to-end: the forms APP can take and how its interface is found (issue #2, points 2 and 10).

The test apps live in tests/apps (e2e_*.py and the e2e_pkg package); each answers ``/`` with JSON
saying which interface served it (``interface``) and which app object it is (``kind``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from helpers import (
    HEAVY_RESULT,
    SAMPLE_APP_PAIR,
    SAMPLE_APPS,
    TEST_APPS,
    Cluster,
    answers_from_every_worker,
    get,
    ready_line,
)


def serve_and_ask(run_cli: Callable[..., Cluster], *args: str, cwd: Path = TEST_APPS) -> tuple[str, dict[str, Any]]:
    """Start APP with 1 worker, wait until ready; the interface from the ready line and the answer to ``/``."""
    cluster = run_cli(*args, "--workers", "1", "--port", "0", cwd=cwd)
    url = cluster.wait_ready()
    ready = ready_line(cluster)
    assert ready.pids == cluster.worker_pids()
    response = get(url)
    assert response.status_code == 200, response.text
    return ready.interface, response.json()


@pytest.mark.parametrize(("spec", "kind", "interface"), [
    ("e2e_pkg.web:wsgi", "package-wsgi", "wsgi"),
    ("e2e_pkg.web:asgi", "package-asgi", "asgi"),
])
def test_package_module_attr(run_cli: Callable[..., Cluster], spec: str, kind: str, interface: str) -> None:
    detected, body = serve_and_ask(run_cli, spec)
    assert (detected, body["interface"], body["kind"], body["module"]) == (interface, interface, kind, "e2e_pkg.web")


@pytest.mark.parametrize(("spec", "kind", "interface"), [
    ("e2e_dotted:site.wsgi", "dotted-wsgi", "wsgi"),
    ("e2e_dotted:site.asgi", "dotted-asgi", "asgi"),
])
def test_dotted_attribute(run_cli: Callable[..., Cluster], spec: str, kind: str, interface: str) -> None:
    detected, body = serve_and_ask(run_cli, spec)
    assert (detected, body["interface"], body["kind"]) == (interface, interface, kind)


@pytest.mark.parametrize(("spec", "kind", "interface"), [
    ("e2e_factory:create_wsgi", "factory-wsgi", "wsgi"),
    ("e2e_factory:create_asgi", "factory-asgi", "asgi"),
])
def test_factory_builds_the_app(run_cli: Callable[..., Cluster], spec: str, kind: str, interface: str) -> None:
    detected, body = serve_and_ask(run_cli, spec, "--factory")
    assert (detected, body["interface"], body["kind"]) == (interface, interface, kind)


@pytest.mark.parametrize("app", SAMPLE_APP_PAIR)
def test_app_dir_from_another_cwd(run_cli: Callable[..., Cluster], app: str, tmp_path: Path) -> None:
    """Started from an unrelated folder, --app-dir finds the sample app; / and /heavy answer (point 10)."""
    cluster = run_cli(app, "--app-dir", str(SAMPLE_APPS), "--workers", "2", "--port", "0", cwd=tmp_path)
    url = cluster.wait_ready()
    answers_from_every_worker(url, ready_line(cluster).pids)
    heavy = get(url, "/heavy")
    assert heavy.status_code == 200, heavy.text
    assert heavy.json()["result"] == HEAVY_RESULT


@pytest.mark.parametrize(("spec", "interface"), [("e2e_wsgi_raw:app", "wsgi"), ("e2e_asgi_raw:app", "asgi")])
def test_relative_app_dir(run_cli: Callable[..., Cluster], spec: str, interface: str) -> None:
    detected, body = serve_and_ask(run_cli, spec, "--app-dir", "apps", cwd=TEST_APPS.parent)
    assert (detected, body["interface"]) == (interface, interface)


@pytest.mark.parametrize("interface", ["wsgi", "asgi"])
def test_interface_forced(run_cli: Callable[..., Cluster], interface: str) -> None:
    """e2e_dual:app speaks both; auto-detection picks WSGI, --interface decides."""
    detected, body = serve_and_ask(run_cli, "e2e_dual:app", "--interface", interface)
    assert (detected, body["interface"], body["kind"]) == (interface, interface, "dual")


@pytest.mark.parametrize(("spec", "interface", "cwd"), [
    ("e2e_asgi_raw:app", "asgi", TEST_APPS),  # a raw ASGI coroutine function
    ("e2e_asgi_class:app", "asgi", TEST_APPS),  # a class instance with an async __call__
    ("e2e_wsgi_raw:app", "wsgi", TEST_APPS),  # a raw WSGI function
    ("e2e_dual:app", "wsgi", TEST_APPS),  # a class instance with a plain __call__
    ("flask_app:app", "wsgi", SAMPLE_APPS),  # Flask
    ("starlette_app:app", "asgi", SAMPLE_APPS),  # Starlette
], ids=["asgi-coroutine-function", "asgi-class-instance", "wsgi-function", "plain-callable-object", "flask",
        "starlette"])
def test_interface_auto_detection(run_cli: Callable[..., Cluster], spec: str, interface: str, cwd: Path) -> None:
    detected, body = serve_and_ask(run_cli, spec, cwd=cwd)
    assert detected == interface
    if "interface" in body:  # the test apps also say how they were called
        assert body["interface"] == interface
    else:
        assert body["message"].startswith("Hello from")
    if "lifespan_ran" in body:  # e2e_asgi_class speaks lifespan: its startup ran before it served
        assert body["lifespan_ran"] is True

