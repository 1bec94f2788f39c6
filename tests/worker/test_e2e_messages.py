"""Messages that point the right way (issue 10, item 12): flags of other servers, file names, bare hosts, and
options that do not apply to the app."""

from __future__ import annotations

import signal
from collections.abc import Callable

import pytest

from helpers import SAMPLE_APP_PAIR, TEST_APPS, Cluster, assert_config_error, run_to_exit


@pytest.mark.parametrize("typed, meant", [("--relaod", "--reload"), ("--reloda", "--reload"),
                                          ("--prelaod", "--preload")])
def test_a_mistyped_reload_never_suggests_preload(typed: str, meant: str) -> None:
    line = assert_config_error(run_to_exit("flask_app:app", typed), 2, "did you mean")
    # Exactly the one meant: --preload freezes the code that --reload reloads, the opposite is never offered.
    assert line.split("did you mean ")[1].split("?")[0] == meant


@pytest.mark.parametrize("app", SAMPLE_APP_PAIR)
def test_a_py_file_name_as_app_hints_to_drop_the_extension(app: str) -> None:
    module, attr = app.split(":")
    assert_config_error(run_to_exit(f"{module}.py:{attr}", "--port", "0"), 2, f"'{module}.py:{attr}'",
                        "drop the .py", f": {module}:{attr}")


@pytest.mark.parametrize("host", ["localhost", "0.0.0.0"])
def test_a_bind_without_port_hints_host_port(host: str) -> None:
    assert_config_error(run_to_exit("flask_app:app", "--bind", host), 2, f"--bind value '{host}'", "no port",
                        "HOST:PORT", f"{host}:8000")


@pytest.mark.parametrize("app, warned", [("e2e_asgi_raw:app", True), ("e2e_wsgi_raw:app", False)])
def test_threads_on_an_asgi_app_is_warned_about_once(run_cli: Callable[..., Cluster], app: str, warned: bool) -> None:
    cluster = run_cli(app, "--port", "0", "--workers", "2", "--threads", "4", cwd=TEST_APPS)
    cluster.wait_ready()  # the warning, if any, is logged right after the ready line
    warning = "WARNING --threads 4 is ignored: e2e_asgi_raw:app is an ASGI app"
    if not warned:
        assert "--threads 4 is ignored" not in cluster.output()
        return
    cluster.wait_for_line(warning)
    cluster.signal(signal.SIGHUP)  # new workers come up: the warning is not repeated
    cluster.wait_for_line("rolling restart complete")
    assert cluster.output().count("--threads 4 is ignored") == 1, cluster.output()
