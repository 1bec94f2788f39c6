"""--policy reuseport never shares a port that another program serves (issue 10, item 11).

SO_REUSEPORT lets any socket of the same user join a port where others listen. A second cluster with
--policy reuseport on a port already served (by another cluster, or any program that set SO_REUSEPORT)
once started without a word and took half of the first one's connections. It must refuse, as every other
policy does: exit 2, one line naming the address and the fix.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

import pytest

from helpers import TEST_APPS, Cluster, start, wait_until, who


@pytest.mark.parametrize("first_policy", ["reuseport", "shared", "rr"])
def test_a_second_app_cannot_join_a_served_port_with_reuseport(
    run_cli: Callable[..., Cluster], first_policy: str
) -> None:
    first = start(run_cli, "sup_app:wsgi", "--workers", "2", "--policy", first_policy)
    url = first.wait_ready()
    port = urlsplit(url).port
    second = run_cli("sup_app:asgi", "--bind", f"127.0.0.1:{port}", "--workers", "2", "--policy", "reuseport",
                     "--name", "second", cwd=TEST_APPS)
    wait_until(lambda: second.proc.poll() is not None or "ready:" in second.output(),
               "the second cluster to fail, or to serve")
    assert second.proc.poll() is not None, f"the second cluster serves the same port:\n{second.output()}"
    code = second.wait_exit()
    output = second.output()
    assert code == 2, output
    lines = output.strip().splitlines()
    assert len(lines) == 1, f"expected a one-line message:\n{output}"
    assert lines[0].startswith(f"clusterrun: error: cannot bind 127.0.0.1:{port}: address already in use"), lines[0]
    assert "choose another --bind/--port" in lines[0], lines[0]
    # Every connection still reaches the first cluster's workers.
    workers = set(first.worker_pids())
    assert len(workers) == 2
    answered_by = {who(url + "/")["pid"] for _ in range(40)}
    assert answered_by <= workers, (answered_by, workers)
