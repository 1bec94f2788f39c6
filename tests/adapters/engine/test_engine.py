"""The inline WSGI engine on its own (adapters/engine/), served by tests/apps/engine_runner.py.

Each test starts the runner as a subprocess (through ``run_cli``'s ``script``: always killed and reaped),
reads its port, and talks to it with httpx and raw sockets: keep-alive and pipelining, HTTP/1.0, HEAD, chunked
bodies both ways, Expect: 100-continue, write(), exc_info, close(), wsgi.file_wrapper, a slow reader that
must not hold up anyone else, the limits, malformed requests, app errors, drain, and adopted connections.
The apps are tests/apps/engine_app.py, fw_wsgi_errors.py and limits_app.py.
"""

from __future__ import annotations

import array
import contextlib
import gc
import hashlib
import json
import signal
import socket
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest

from helpers import DEADLINE, TEST_APPS, Cluster, read_all, wait_until

RUNNER = str(TEST_APPS / "engine_runner.py")
MiB = 1024 * 1024


def serve(run_cli: Callable[..., Cluster], app: str, *args: str) -> tuple[Cluster, str, int]:
    cluster = run_cli(app, *args, script=RUNNER, cwd=TEST_APPS)
    url = cluster.urls()[0]
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return cluster, host, int(port)


def read_response(sock: socket.socket, buffered: bytes = b"") -> tuple[bytes, bytes, bytes]:
    """One response with a Content-Length from ``sock``: (head, body, what came after it)."""
    sock.settimeout(DEADLINE)
    data = buffered
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before a whole head: {data!r}"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    length = next(int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length:"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed before the whole body"
        rest += chunk
    return head, rest[:length], rest[length:]


def exchange(host: str, port: int, request: bytes) -> bytes:
    with socket.create_connection((host, port), timeout=DEADLINE) as sock:
        sock.sendall(request)
        return read_all(sock)


# --- HTTP/1.x on the engine ---------------------------------------------------------------------------------


def test_keep_alive_pipelining_and_http10(run_cli: Callable[..., Cluster]) -> None:
    _, host, port = serve(run_cli, "engine_app:app")
    with httpx.Client(base_url=f"http://{host}:{port}", timeout=DEADLINE) as http:
        ports = {http.get("/environ").json()["REMOTE_PORT"] for _ in range(3)}
        assert len(ports) == 1  # one connection, kept alive
        response = http.get("/")
        assert response.text == "ok" and "date" in response.headers and response.headers["server"] == "clusterrun"
    with socket.create_connection((host, port), timeout=DEADLINE) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\nGET /write HTTP/1.1\r\nHost: t\r\n\r\n"
                     b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        answer = read_all(sock)
    assert answer.count(b"HTTP/1.1 200 OK") == 3 and answer.index(b"\r\n\r\nok") < answer.index(b"w1,w2,end")
    with socket.create_connection((host, port), timeout=DEADLINE) as sock:  # 204: no body, whatever the app said
        sock.sendall(b"GET /no-content HTTP/1.1\r\nHost: t\r\n\r\n"
                     b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        answer = read_all(sock)
    assert answer.startswith(b"HTTP/1.1 204 No Content\r\n") and b"must not" not in answer
    assert answer.count(b"HTTP/1.1 200 OK") == 1 and b"content-length" not in answer.split(b"HTTP/1.1 200")[0]
    answer = exchange(host, port, b"GET / HTTP/1.0\r\n\r\n")  # 1.0: closed after the answer, in 1.0 as gunicorn
    assert answer.startswith(b"HTTP/1.0 200 OK") and answer.endswith(b"\r\n\r\nok")
    answer = exchange(host, port, b"GET /stream HTTP/1.0\r\n\r\n")  # no length: no chunks on 1.0, the close ends it
    assert b"transfer-encoding" not in answer.lower() and answer.endswith(b"\r\n\r\none,two,three")
    with socket.create_connection((host, port), timeout=DEADLINE) as sock:  # 1.0 keep-alive when asked
        sock.sendall(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        head, body, _ = read_response(sock)
        assert b"connection: keep-alive" in head.lower() and body == b"ok"
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert read_all(sock).endswith(b"\r\n\r\nok")


def test_environ_and_no_event_loop(run_cli: Callable[..., Cluster]) -> None:
    _, host, port = serve(run_cli, "engine_app:app")
    with httpx.Client(base_url=f"http://{host}:{port}", timeout=DEADLINE) as http:
        environ = http.get("/environ", params={"a": "1"}, headers={"X-Two": "b", "Cookie": "c=1"}).json()
        assert http.get("/asyncio-run").json() == {"answer": 8}
        quoted = http.get("/environ%20x/%C3%A9").json()
    assert environ["SERVER_SOFTWARE"] == f"clusterrun/{version('clusterrun')}"
    assert environ["GATEWAY_INTERFACE"] == "CGI/1.1" and environ["wsgi.version"] == [1, 0]
    assert (environ["REQUEST_METHOD"], environ["SCRIPT_NAME"], environ["PATH_INFO"]) == ("GET", "", "/environ")
    assert environ["QUERY_STRING"] == "a=1" and environ["RAW_URI"] == "/environ?a=1"
    assert (environ["SERVER_NAME"], environ["SERVER_PORT"]) == ("127.0.0.1", str(port))
    assert environ["REMOTE_ADDR"] == "127.0.0.1" and environ["REMOTE_PORT"].isdigit()
    assert environ["SERVER_PROTOCOL"] == "HTTP/1.1" and environ["wsgi.url_scheme"] == "http"
    assert environ["HTTP_X_TWO"] == "b" and environ["HTTP_COOKIE"] == "c=1"
    assert environ["wsgi.multithread"] is False and environ["wsgi.multiprocess"] is True
    assert environ["wsgi.input_terminated"] is True and environ["has worker"] is True
    assert environ["loop running"] is False
    assert quoted["PATH_INFO"] == "/environ x/\u00c3\u00a9"  # the UTF-8 bytes seen as latin-1 (PEP 3333)


def test_head_streams_write_and_exc_info(run_cli: Callable[..., Cluster]) -> None:
    _, host, port = serve(run_cli, "engine_app:app")
    with httpx.Client(base_url=f"http://{host}:{port}", timeout=DEADLINE) as http:
        streamed = http.get("/stream")
        assert streamed.text == "one,two,three" and streamed.headers["transfer-encoding"] == "chunked"
        assert http.get("/write").text == "w1,w2,end"
        head = http.head("/")
        assert head.status_code == 200 and head.content == b"" and "content-length" not in head.headers
        assert http.head("/stream").content == b""
        late = http.get("/exc-info")
        assert (late.status_code, late.text) == (500, "reported")
        closes = int(http.get("/closes").text)
        assert closes >= 2  # /stream's close() ran, also after HEAD
        assert http.get("/").text == "ok"  # the same connection serves on


def test_an_iterable_that_declared_its_length_is_answered_whole_or_streamed(run_cli: Callable[..., Cluster]) -> None:
    # respond.call() asks such an iterable for its first chunk at once: the whole body there is one write with
    # no generator, less streams on. Either way the body is the declared bytes, close() runs once, and the
    # connection serves on; a first chunk that raises is a 500.
    cluster, host, port = serve(run_cli, "engine_app:app")
    with socket.create_connection((host, port), timeout=DEADLINE) as sock:
        closes = int(httpx.get(f"http://{host}:{port}/closes", timeout=DEADLINE).text)
        for query, body in [("5,hello", b"hello"), ("5,hello!!", b"hello"), ("11,hello,+,world", b"hello+world"),
                            ("0,", b""), ("5,,hel,lo", b"hello")]:
            sock.sendall(b"GET /sized?%s HTTP/1.1\r\nHost: t\r\n\r\n" % query.encode())
            head, got, rest = read_response(sock)
            assert head.startswith(b"HTTP/1.1 200 OK") and got == body and rest == b"", query
            assert b"content-length: %d" % len(body) in head.lower() and b"connection: close" not in head.lower()
        after = int(httpx.get(f"http://{host}:{port}/closes", timeout=DEADLINE).text)
        assert after == closes + 5
        sock.sendall(b"GET /sized?5,raise HTTP/1.1\r\nHost: t\r\n\r\n")
        failed = read_all(sock)
    assert failed.startswith(b"HTTP/1.1 500 ") and failed.endswith(b"Internal Server Error")
    cluster.wait_for_line(r"ERROR Exception in WSGI application, GET /sized: RuntimeError: the body failed")
    assert int(httpx.get(f"http://{host}:{port}/closes", timeout=DEADLINE).text) == after + 1


def test_chunked_and_large_uploads_and_expect_continue(run_cli: Callable[..., Cluster]) -> None:
    _, host, port = serve(run_cli, "engine_app:app")
    block = bytes(range(256)) * 4096
    with httpx.Client(base_url=f"http://{host}:{port}", timeout=DEADLINE) as http:
        for body in (b"small", iter([b"a" * 1000, b"b" * 1000]), block * 8, iter([block] * 8)):
            whole = body if isinstance(body, bytes) else None
            answer = http.post("/sha", content=body).json()
            if whole is not None:
                assert answer == {"length": len(whole), "sha256": hashlib.sha256(whole).hexdigest()}
        assert answer["length"] == 8 * MiB and answer["sha256"] == hashlib.sha256(block * 8).hexdigest()
        assert http.get("/").text == "ok"
    with socket.create_connection((host, port), timeout=DEADLINE) as sock:
        sock.sendall(b"POST /sha HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        interim = sock.recv(65536)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        _, body, _ = read_response(sock)
        assert json.loads(body)["sha256"] == hashlib.sha256(b"hello").hexdigest()
        sock.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")  # and the connection goes on
        assert read_all(sock).endswith(b"\r\n\r\nok")


def test_streamed_body_by_lines(run_cli: Callable[..., Cluster]) -> None:
    """readline(), readline(size) and iteration over a body that streams (sent only after 100 Continue, so
    that it cannot come with the head), with a Content-Length and chunked."""
    _, host, port = serve(run_cli, "engine_app:app")
    body = b"".join(b"line %d\n" % i for i in range(20000)) + b"no newline at the end"
    framings = [(b"Content-Length: %d\r\n" % len(body), body),
                (b"Transfer-Encoding: chunked\r\n", b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))]
    for framing, payload in framings:
        with socket.create_connection((host, port), timeout=DEADLINE) as sock:
            sock.sendall(b"POST /lines HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\n%s"
                         b"Connection: close\r\n\r\n" % framing)
            assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"
            sock.sendall(payload)
            answer = read_all(sock)
        assert json.loads(answer.partition(b"\r\n\r\n")[2]) == {
            "first": "line 0\n", "short": ["line ", "1\n"], "rest": 19999, "last": "no newline at the end"}


def test_file_wrapper(run_cli: Callable[..., Cluster]) -> None:
    _, host, port = serve(run_cli, "engine_app:app")
    size = 3 * MiB + 17
    expected = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
    with httpx.Client(base_url=f"http://{host}:{port}", timeout=DEADLINE) as http:
        for _ in range(2):
            response = http.get(f"/file?{size}")
            assert response.headers["content-length"] == str(size) and response.content == expected
        assert http.head(f"/file?{size}").content == b""
        assert http.get("/").text == "ok"


@pytest.mark.parametrize("path", ["/big", "/file"], ids=["iterable", "file_wrapper"])
def test_slow_reader_holds_up_no_one(run_cli: Callable[..., Cluster], path: str) -> None:
    """A client that does not read a 32 MiB answer (more than loopback's socket buffers hold), from the app's
    iterable or through sendfile: others are served meanwhile; it gets its answer whole when it reads."""
    _, host, port = serve(run_cli, "engine_app:app")
    size = 32 * MiB
    with socket.create_connection((host, port), timeout=DEADLINE) as slow:
        slow.sendall(b"GET %s?%d HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n" % (path.encode(), size))
        with httpx.Client(base_url=f"http://{host}:{port}", timeout=DEADLINE) as http:
            assert [http.get("/").text for _ in range(5)] == ["ok"] * 5
        answer = read_all(slow)
    head, _, body = answer.partition(b"\r\n\r\n")
    if path == "/big":
        assert b"transfer-encoding: chunked" in head.lower()
        assert body.endswith(b"0\r\n\r\n") and body.count(b"b") == size
    else:
        assert b"content-length: %d" % size in head.lower() and len(body) == size


def test_client_gone_mid_stream_closes_the_iterable(run_cli: Callable[..., Cluster]) -> None:
    _, host, port = serve(run_cli, "engine_app:app")
    before = int(httpx.get(f"http://{host}:{port}/closes", timeout=DEADLINE).text)
    with socket.create_connection((host, port), timeout=DEADLINE) as sock:
        sock.sendall(b"GET /endless HTTP/1.1\r\nHost: t\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
    wait_until(lambda: int(httpx.get(f"http://{host}:{port}/closes", timeout=DEADLINE).text) == before + 1,
               "the endless body's close()")


# --- errors ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "name", "value"), [
    ("crlf", "X-Injected", "a\r\nSet-Cookie: evil=1"),
    ("name", "X Injected\r\n", "v"),
])
def test_bad_header_from_the_app_is_answered_500(run_cli: Callable[..., Cluster], kind: str, name: str,
                                                  value: str) -> None:
    cluster, host, port = serve(run_cli, "fw_wsgi_errors:app")
    received = exchange(host, port, f"GET /bad-header?{kind} HTTP/1.1\r\nHost: t\r\n\r\n".encode())
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500 ") and b"connection: close" in head.lower()
    assert body == b"Internal Server Error" and b"evil" not in received
    (line,) = cluster.wait_for_line(r"ERROR Exception in WSGI application, GET /bad-header: ValueError: ")
    assert repr(name) in line.string and repr(value) in line.string


def test_app_errors_and_malformed_requests(run_cli: Callable[..., Cluster]) -> None:
    cluster, host, port = serve(run_cli, "fw_wsgi_errors:app")
    answer = exchange(host, port, b"GET /boom?token=secret HTTP/1.1\r\nHost: t\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 500 ") and answer.endswith(b"\r\n\r\nInternal Server Error")
    cluster.wait_for_line(r"ERROR Exception in WSGI application, GET /boom: ZeroDivisionError: the app divided")
    assert "secret" not in cluster.output() and "Traceback" in cluster.output()
    cut = exchange(host, port, b"GET /boom-later HTTP/1.1\r\nHost: t\r\n\r\n")
    assert cut.startswith(b"HTTP/1.1 200 OK") and b"first chunk" in cut and not cut.endswith(b"0\r\n\r\n")
    assert exchange(host, port, b"NOT HTTP AT ALL\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert exchange(host, port, b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n").startswith(
        b"HTTP/1.1 400 ")
    assert httpx.get(f"http://{host}:{port}/", timeout=DEADLINE).text == "ok"


# --- limits ---------------------------------------------------------------------------------------------------


def test_limits(run_cli: Callable[..., Cluster]) -> None:
    cluster, host, port = serve(run_cli, "limits_app:wsgi", "--limit-request-body", str(MiB))
    ok = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n"
    assert exchange(host, port, b"GET /" + b"a" * 5000 + b" HTTP/1.1\r\nHost: t\r\n\r\n").startswith(
        b"HTTP/1.1 414 ")
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(100))
    assert exchange(host, port, ok + fields + b"\r\n").startswith(b"HTTP/1.1 431 ")
    assert exchange(host, port, ok + b"X-Big: " + b"v" * 9 * 1024 + b"\r\n\r\n").startswith(b"HTTP/1.1 431 ")
    many = b"".join(b"X-F%d: %s\r\n" % (i, b"v" * 8000) for i in range(9))
    assert exchange(host, port, ok + many + b"\r\n").startswith(b"HTTP/1.1 431 ")
    answer = exchange(host, port, b"POST /sha HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % (MiB + 1))
    assert answer.startswith(b"HTTP/1.1 413 ") and b"connection: close" in answer.lower()
    with socket.create_connection((host, port), timeout=DEADLINE) as sock:  # chunked, growing past the limit
        sock.sendall(b"POST /sha HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        with contextlib.suppress(OSError):
            for _ in range(64):
                sock.sendall(b"10000\r\n" + b"x" * 65536 + b"\r\n")
        assert read_all(sock).startswith(b"HTTP/1.1 413 ")
    assert httpx.post(f"http://{host}:{port}/sha", content=b"y" * MiB, timeout=DEADLINE).json()["length"] == MiB
    assert "refused a request" in cluster.output()


def test_incomplete_head_gets_408_and_idle_connections_close(run_cli: Callable[..., Cluster]) -> None:
    _, host, port = serve(run_cli, "limits_app:wsgi", "--head-timeout", "1", "--timeout-keep-alive", "1")
    with socket.create_connection((host, port), timeout=DEADLINE) as partial, \
            socket.create_connection((host, port), timeout=DEADLINE) as silent, \
            socket.create_connection((host, port), timeout=DEADLINE) as kept:
        partial.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: ")
        kept.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        _, body, _ = read_response(kept)
        assert body == b"ok"
        assert read_all(partial).startswith(b"HTTP/1.1 408 ")
        assert read_all(silent) == b""
        assert read_all(kept) == b""  # idle past --timeout-keep-alive: closed


# --- drain and adoption ---------------------------------------------------------------------------------------


def test_drain_finishes_in_flight_and_closes_idle(run_cli: Callable[..., Cluster]) -> None:
    cluster, host, port = serve(run_cli, "engine_app:app")
    with socket.create_connection((host, port), timeout=DEADLINE) as idle, \
            socket.create_connection((host, port), timeout=DEADLINE) as busy:
        idle.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        read_response(idle)
        busy.sendall(b"GET /slow?1 HTTP/1.1\r\nHost: t\r\n\r\n")
        cluster.wait_for_line(r"slow request started")
        cluster.signal(signal.SIGTERM)
        answer = read_all(busy)  # whole, then closed (its head may have gone out before the drain began)
        assert answer.startswith(b"HTTP/1.1 200 OK") and answer.endswith(b"\r\n\r\nslow")
        assert read_all(idle) == b""
    assert cluster.wait_exit() == 0
    cluster.wait_for_line(r"drained: 2 requests, 2 closes")


def test_drain_with_linger_answers_with_connection_close(run_cli: Callable[..., Cluster]) -> None:
    cluster, host, port = serve(run_cli, "engine_app:app", "--linger", "30")
    with socket.create_connection((host, port), timeout=DEADLINE) as idle:
        idle.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        read_response(idle)
        cluster.signal(signal.SIGTERM)
        cluster.wait_for_line(r"^draining$")  # the drain runs; the idle connection stays open (linger)
        idle.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        answer = read_all(idle)
    assert answer.startswith(b"HTTP/1.1 200 OK") and b"connection: close" in answer.lower()
    assert cluster.wait_exit() == 0


def test_adopted_connections_are_served(run_cli: Callable[..., Cluster], tmp_path: Path) -> None:
    path = str(tmp_path / "pass.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen()
        cluster = run_cli("engine_app:app", "--adopt", path, script=RUNNER, cwd=TEST_APPS)
        channel, _ = server.accept()
        with channel, socket.create_server(("127.0.0.1", 0)) as listener:
            clients = []
            for _ in range(3):
                client = socket.create_connection(listener.getsockname(), timeout=DEADLINE)
                client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                clients.append(client)
            accepted = [listener.accept()[0] for _ in clients]
            fds = array.array("i", [sock.fileno() for sock in accepted])
            channel.sendmsg([b"x"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
            for sock in accepted:
                sock.close()
            for client in clients:
                with client:
                    assert read_all(client).endswith(b"\r\n\r\nok")
            cluster.signal(signal.SIGTERM)
            assert cluster.wait_exit() == 0
    cluster.wait_for_line(r"drained: 3 requests, 3 closes")


# --- accepting, in process: what one wake-up of the loop takes ----------------------------------------------


def hello(environ: dict[str, object], start_response: Callable[..., object]) -> list[bytes]:
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]


def test_a_closed_connection_is_freed_at_once() -> None:
    """Reference counting frees a closed connection (no cycle left for the garbage collector): with a new
    connection per request, cycles would pile up between collections and each collection would walk them."""
    from clusterrun.adapters.engine.connection import Connection
    from clusterrun.adapters.engine.reactor import SelectorLoop
    from clusterrun.adapters.engine.server import WSGIEngine

    loop = SelectorLoop()
    engine = WSGIEngine(loop, hello)
    gc.collect()
    gc.disable()
    try:
        with socket.create_server(("127.0.0.1", 0)) as listener:
            engine.listen(listener)
            for served in range(5):
                with socket.create_connection(listener.getsockname(), timeout=DEADLINE) as client:
                    client.sendall(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    loop.run_until(lambda n=served: engine.total_requests > n and not engine.connections)
                    assert read_all(client).endswith(b"\r\n\r\nok")
            assert [o for o in gc.get_objects() if isinstance(o, Connection)] == []
            engine.close_listeners()
    finally:
        gc.enable()
        loop.close()


def test_a_wake_up_takes_closed_connections_in_a_row_and_stops_at_one_kept_open() -> None:
    """Connections answered and closed at once are taken one after another in one wake-up (no loop round each);
    the first that stays open ends it, so that workers sharing a listener still share its keep-alive clients."""
    from clusterrun.adapters.engine.reactor import SelectorLoop
    from clusterrun.adapters.engine.server import WSGIEngine

    loop = SelectorLoop()
    engine = WSGIEngine(loop, hello)
    with socket.create_server(("127.0.0.1", 0)) as listener:
        engine.listen(listener)
        ask = {"close": b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
               "keep": b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"}
        clients = []
        for kind in ("close", "close", "keep", "close"):
            client = socket.create_connection(listener.getsockname(), timeout=DEADLINE)
            client.sendall(ask[kind])  # on loopback the request is in the server's buffer when this returns
            clients.append(client)
        try:
            loop.run_until(lambda: engine.total_requests > 0)  # one round: one wake-up of the listener
            assert engine.total_requests == 3 and len(engine.connections) == 1  # the kept one; the last waits
            loop.run_until(lambda: engine.total_requests > 3)
            closed = (clients[0], clients[1], clients[3])
            assert [read_all(client).endswith(b"\r\n\r\nok") for client in closed] == [True] * 3
        finally:
            for conn in list(engine.connections):
                conn.close()
            for client in clients:
                client.close()
            engine.close_listeners()
            loop.close()
