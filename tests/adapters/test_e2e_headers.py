"""The headers the server adds to every response: Server, Date, and --header's; on both engines."""

from __future__ import annotations

from collections.abc import Callable
from email.utils import parsedate_to_datetime

import pytest

from helpers import FRESH, TEST_APPS, Cluster, assert_config_error, run_to_exit, start

APPS = ["sup_app:wsgi", "sup_app:asgi"]  # the inline engine, and uvicorn's stack


@pytest.mark.parametrize("app", APPS)
def test_server_and_date_by_default(run_cli: Callable[..., Cluster], app: str) -> None:
    response = FRESH.get(start(run_cli, app, "--workers", "1").wait_ready())
    assert response.headers["server"] == "clusterrun"
    assert parsedate_to_datetime(response.headers["date"]).tzinfo is not None


@pytest.mark.parametrize("app", APPS)
def test_headers_dropped_and_added(run_cli: Callable[..., Cluster], app: str) -> None:
    cluster = start(run_cli, app, "--workers", "1", "--no-server-header", "--no-date-header",
                    "--header", "X-Frame-Options: DENY", "--header", "Strict-Transport-Security:max-age=60")
    response = FRESH.get(cluster.wait_ready())
    assert response.status_code == 200
    assert "server" not in response.headers and "date" not in response.headers
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["strict-transport-security"] == "max-age=60"


@pytest.mark.parametrize("value", ["no colon", "Bad Name: x", "X-Evil: a\rb"])
def test_a_bad_header_is_named(value: str) -> None:
    assert_config_error(run_to_exit("sup_app:wsgi", "--header", value, cwd=TEST_APPS), 2, "bad --header value")
