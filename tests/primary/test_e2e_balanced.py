"""--policy balanced end to end: workers accept on the shared listener, each only while it holds no more
connections than the least-loaded one (clusterrun.wire.loads); a stopped, killed or new worker is handled.

Each test holds keep-alive clients: the worker that answers a client's first request holds its connection, and
names itself in every answer (tests/apps/sup_app.py).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from helpers import DEADLINE, SUP_APP_PAIR, Cluster, connections_held, start, wait_until


class Clients:
    """Keep-alive clients, each with the worker id that answered it (its connection stays on that worker)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.clients: list[httpx.Client] = []
        self.owners: list[int | str] = []

    def add(self, path: str = "/") -> int | str:
        """A new client and its first request; the worker that answered it (or the error, as text)."""
        http = httpx.Client(timeout=DEADLINE)
        self.clients.append(http)
        try:
            owner: int | str = http.get(self.url + path).json()["id"]
        except httpx.HTTPError as exc:
            owner = repr(exc)
        self.owners.append(owner)
        return owner

    def add_at_once(self, count: int) -> None:
        """``count`` clients connecting at the same time."""
        threads = [threading.Thread(target=self.add) for _ in range(count)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(DEADLINE * 2)

    def held(self) -> Counter[int | str]:
        return Counter(self.owners)

    def close(self) -> None:
        for http in self.clients:
            http.close()


def listens(pid: int) -> bool:
    """The process holds a listening TCP socket (/proc); False once it exited."""
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
        tables = [Path(f"/proc/{pid}/net/{name}").read_text() for name in ("tcp", "tcp6")]
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):  # closed meanwhile
            inodes.add(os.readlink(f"/proc/{pid}/fd/{fd}")[len("socket:["):-1])
    rows = (line.split() for table in tables for line in table.splitlines()[1:])
    return any(fields[3] == "0A" and fields[9] in inodes for fields in rows)  # 0A: LISTEN


def balanced(run_cli: Callable[..., Cluster], app: str, *args: str, env: dict[str, str] | None = None) -> Cluster:
    # Nothing else frees a worker that stopped accepting within a test: no idle keep-alive connection is closed
    # (which would lower its count), and no stopped worker is killed by the watchdog (which would release its
    # cell), before every client's deadline.
    return start(run_cli, app, "--workers", "2", "--policy", "balanced", "--timeout-keep-alive", "300",
                 "--timeout", "300", *args, env=env)


def assert_spread(held: Counter[int | str], workers: int, each: int) -> None:
    assert len(held) == workers and all(each - 1 <= count <= each + 1 for count in held.values()), held


@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_keep_alive_clients_arriving_while_a_worker_is_busy_are_spread(
    run_cli: Callable[..., Cluster], app: str
) -> None:
    cluster = balanced(run_cli, app)
    url = cluster.wait_ready()
    assert "policy balanced" in cluster.output()
    clients = Clients(url)
    try:
        # One client keeps a worker's loop busy for half a second, and seven more connect meanwhile. Under shared
        # the free worker takes all seven (1 to 7); here it stops at its share, and the busy one takes the rest
        # once its loop turns again (4 to 4, or 5 to 3 where a worker took one while the other's count moved).
        blocker = threading.Thread(target=clients.add, args=("/block?s=0.5",))
        blocker.start()
        cluster.wait_for_line(r"blocking the loop")
        clients.add_at_once(7)
        blocker.join(DEADLINE)
        assert_spread(clients.held(), workers=2, each=4)
    finally:
        clients.close()


@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_the_worker_whose_clients_left_takes_the_newcomers(run_cli: Callable[..., Cluster], app: str) -> None:
    cluster = balanced(run_cli, app)
    url = cluster.wait_ready()
    workers = {w["id"]: w for w in cluster.serving().values()}
    clients = Clients(url)
    try:
        for _ in range(12):
            clients.add()
        held = clients.held()
        freed = max(workers, key=lambda id_: held.get(id_, 0))  # it held 6 or more
        kept = 12 - held[freed]
        for http, owner in zip(clients.clients, clients.owners, strict=True):
            if owner == freed:
                http.close()
        wait_until(lambda: connections_held(workers[freed]["pid"]) == 0, "the freed worker to see its clients leave")
        # The workers end within 2 of each other (a worker stops once it holds more than the least loaded; it
        # may take one more while the other's count moves), so the freed one takes at least (kept + 6 - 2) / 2
        # of 6 newcomers. Were its closes not counted, it would still count its 6 or more old clients and take
        # at most (kept + 6 - 6 + 2) / 2.
        newcomers = [clients.add() for _ in range(6)]
        assert 2 * newcomers.count(freed) >= kept + 6 - 2, (newcomers, held)
    finally:
        clients.close()


@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_a_stopped_worker_does_not_keep_the_others_from_accepting(run_cli: Callable[..., Cluster], app: str) -> None:
    cluster = balanced(run_cli, app)
    url = cluster.wait_ready()
    workers = cluster.serving()
    victim, survivor = workers[0], workers[1]
    clients = Clients(url)
    os.kill(victim["pid"], signal.SIGSTOP)
    try:
        # The stopped worker holds no connection and accepts none. While it counted as the least loaded, the
        # other would stop at 1 and every later client would wait: its stamp goes stale, and it counts no more.
        for _ in range(6):
            clients.add()
        assert clients.held() == {survivor["id"]: 6}
    finally:
        os.kill(victim["pid"], signal.SIGCONT)
        clients.close()


@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_a_killed_worker_does_not_keep_the_others_from_accepting(
    run_cli: Callable[..., Cluster], app: str, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    cluster = balanced(run_cli, app, env={"SUP_BREAK_FILE": str(broken)})
    url = cluster.wait_ready()
    workers = {w["id"]: w for w in cluster.serving().values()}
    clients = Clients(url)
    try:
        for _ in range(4):
            clients.add()
        held = clients.held()
        # The least loaded dies, and its slot's respawns fail to start (a broken deploy): nothing of it accepts
        # again. Counted still, it would make the survivor stop one client past it.
        victim = min(workers, key=lambda id_: held.get(id_, 0))
        survivor = next(id_ for id_ in workers if id_ != victim)
        broken.touch()
        os.kill(workers[victim]["pid"], signal.SIGKILL)
        cluster.wait_for_line(rf"worker {victim} .*died")
        for _ in range(4):
            assert clients.add() == survivor
    finally:
        clients.close()


@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_a_draining_worker_does_not_keep_the_others_from_accepting(run_cli: Callable[..., Cluster], app: str) -> None:
    cluster = balanced(run_cli, app)
    url = cluster.wait_ready()
    workers = cluster.serving()
    clients = Clients(url)
    try:
        for _ in range(4):
            clients.add()
        assert clients.held()[workers[1]["id"]] >= 1, clients.held()
        # TTOU retires slot 1: it drains, keeping its idle keep-alive clients up to --timeout-keep-alive (other
        # workers take over), and accepts nothing more. Counted still, it would make slot 0 stop past it.
        cluster.signal(signal.SIGTTOU)
        cluster.wait_for_line(r"scaled to 1 worker")
        wait_until(lambda: not listens(workers[1]["pid"]), "the draining worker to close its listener")
        for _ in range(4):
            assert clients.add() == workers[0]["id"]
    finally:
        clients.close()


@pytest.mark.parametrize("app", SUP_APP_PAIR)
def test_a_worker_added_by_ttin_takes_its_share(run_cli: Callable[..., Cluster], app: str) -> None:
    cluster = balanced(run_cli, app)
    url = cluster.wait_ready()
    clients = Clients(url)
    try:
        for _ in range(6):
            clients.add()
        cluster.signal(signal.SIGTTIN)
        cluster.wait_for_line(r"worker 3 .*is serving")
        # The first two hold 3 each: they stop accepting while the newcomer holds fewer.
        for _ in range(6):
            clients.add()
        assert_spread(clients.held(), workers=3, each=4)
    finally:
        clients.close()
