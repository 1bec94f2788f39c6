"""Embedding leaves no trace, and the app's own logging set-up is the app's (issue 10, item 10).

``Cluster.run()`` once left SIGINT at SIG_DFL in the host program (its next Ctrl-C killed it outright)
and replaced the root logger's handlers; a worker's app could then not configure its own logging
(``logging.basicConfig`` does nothing when the root logger has a handler).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from helpers import FRESH, TEST_APPS, Cluster


@pytest.mark.parametrize("app", ["e2e_wsgi_raw:app", "e2e_asgi_raw:app"])
def test_cluster_run_gives_the_host_back_its_signal_handlers_and_logging(
    run_cli: Callable[..., Cluster], app: str
) -> None:
    cluster = run_cli(app, cwd=TEST_APPS, script=str(TEST_APPS / "embed_runner.py"))
    code = cluster.wait_exit()
    output = cluster.output()
    assert code == 0, output
    assert "run() returned 0" in output
    assert "host state unchanged" in output, output
    assert "host handler got ['SIGINT']" in output, output
    assert "HOST-FORMAT INFO host: the host logs as before" in output, output


@pytest.mark.parametrize("app", ["e2e_basicconfig:wsgi", "e2e_basicconfig:asgi"])
@pytest.mark.parametrize("preload", [False, True])
def test_an_apps_own_basicconfig_takes_effect_in_its_workers(
    run_cli: Callable[..., Cluster], app: str, preload: bool
) -> None:
    cluster = run_cli(app, "--port", "0", "--workers", "2", *(["--preload"] if preload else []), cwd=TEST_APPS)
    url = cluster.wait_ready()
    path = f"/{uuid.uuid4().hex}"
    assert FRESH.get(url + path).status_code == 200
    [line] = cluster.wait_for_line(rf"handled {path}$")
    assert line.string.startswith("APP-FORMAT DEBUG app pid="), line.string
    # clusterrun's own lines keep clusterrun's format, and are not repeated through the app's root handler.
    assert cluster.output().count("ready: 2 workers serving") == 1
    assert "APP-FORMAT INFO clusterrun" not in cluster.output()


@pytest.mark.parametrize("app", ["e2e_basicconfig:wsgi", "e2e_basicconfig:asgi"])
@pytest.mark.parametrize("access_log", [True, False])
def test_access_lines_keep_clusterrun_format_beside_the_apps_logging(
    run_cli: Callable[..., Cluster], app: str, access_log: bool
) -> None:
    cluster = run_cli(app, "--port", "0", "--workers", "1", *(["--access-log"] if access_log else []), cwd=TEST_APPS)
    url = cluster.wait_ready()
    path = f"/{uuid.uuid4().hex}"
    assert FRESH.get(url + path).status_code == 200
    cluster.wait_for_line(rf"handled {path}$")  # the app's line: the request was served and logged
    access = [line for line in cluster.output().splitlines() if f'"GET {path} HTTP/1.1" 200' in line]
    if access_log:
        cluster.wait_for_line(rf'\[worker 1 index 0 pid \d+\] INFO .* "GET {path} HTTP/1.1" 200')
        access = [line for line in cluster.output().splitlines() if f'"GET {path} HTTP/1.1" 200' in line]
        assert len(access) == 1, cluster.output()  # not repeated through the app's root handler
    else:
        assert access == [], cluster.output()
