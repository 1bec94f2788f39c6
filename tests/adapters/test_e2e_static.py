"""--static PREFIX=DIR: files served by the worker before the app, on the inline engine and on the stack.

Each test runs on a WSGI app (the inline engine: sendfile), an ASGI app (clusterrun's own HTTP/1.1 protocol), an
ASGI app on uvicorn's h11 protocol and a WSGI app with --threads 2 (the stack). Traversal attempts go as raw bytes
on a socket: HTTP clients normalise ``..`` and percent-escapes before they send a path.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from helpers import DEADLINE, FRESH, TEST_APPS, Cluster, assert_config_error, read_all, run_to_exit, start

ENGINES = {
    "inline": ("sup_app:wsgi",),
    "asgi": ("sup_app:asgi",),  # uvloop where installed: the file read in blocks
    "asgi-asyncio": ("sup_app:asgi", "--loop", "asyncio"),  # http.response.zerocopysend: loop.sendfile
    "h11": ("sup_app:asgi", "--http", "h11"),
    "threads": ("sup_app:wsgi", "--threads", "2"),  # a WSGI app on the stack: the ASGI layer in front of the bridge
}
SECRET = b"top secret, outside the folder"
TEXT = b"hello, static world\n"
SCRIPT = b"console.log('hello from a script that compresses well'.repeat(40));\n" * 20


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """tmp_path/pub served at /assets; tmp_path/secret.txt beside it must never be reached."""
    (tmp_path / "secret.txt").write_bytes(SECRET)
    pub = tmp_path / "pub"
    (pub / "sub").mkdir(parents=True)
    (pub / "hello.txt").write_bytes(TEXT)
    (pub / "sub" / "deep.txt").write_bytes(TEXT)
    (pub / "app.js").write_bytes(SCRIPT)
    (pub / "app.js.gz").write_bytes(gzip.compress(SCRIPT))
    (pub / "out.txt").symlink_to(tmp_path / "secret.txt")  # a symlink whose real path leaves the folder
    (pub / "outdir").symlink_to(tmp_path)
    os.mkfifo(pub / "pipe")  # opening it for reading would wait for a writer: the worker must not
    return pub


def serve(run_cli: Callable[..., Cluster], engine: str, folder: Path, *args: str) -> str:
    cluster = start(run_cli, *ENGINES[engine], "--workers", "1", "--static", f"/assets={folder}", *args)
    return cluster.wait_ready()


def raw(url: str, target: bytes, method: bytes = b"GET") -> bytes:
    """One request with ``target`` sent as it is; the whole answer."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=DEADLINE) as sock:
        sock.sendall(method + b" " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        return read_all(sock)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize("engine", ENGINES)
def test_a_file_with_its_validators_and_conditional_requests(run_cli: Callable[..., Cluster], engine: str,
                                                             folder: Path) -> None:
    url = serve(run_cli, engine, folder, "--static-max-age", "600")
    response = FRESH.get(url + "/assets/hello.txt")
    assert response.status_code == 200
    assert response.content == TEXT
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["content-length"] == str(len(TEXT))
    assert response.headers["cache-control"] == "public, max-age=600"
    assert response.headers["accept-ranges"] == "bytes"
    etag, modified = response.headers["etag"], response.headers["last-modified"]
    assert etag.startswith('"') and modified.endswith("GMT")
    assert FRESH.get(url + "/assets/sub/deep.txt").content == TEXT

    again = FRESH.get(url + "/assets/hello.txt", headers={"If-None-Match": etag})
    assert (again.status_code, again.content, again.headers["etag"]) == (304, b"", etag)
    assert FRESH.get(url + "/assets/hello.txt", headers={"If-None-Match": '"other"'}).status_code == 200
    assert FRESH.get(url + "/assets/hello.txt", headers={"If-Modified-Since": modified}).status_code == 304
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert FRESH.get(url + "/assets/hello.txt", headers={"If-Modified-Since": old}).status_code == 200

    head = FRESH.head(url + "/assets/hello.txt")
    assert (head.status_code, head.content, head.headers["content-length"]) == (200, b"", str(len(TEXT)))
    assert head.headers["etag"] == etag


@pytest.mark.parametrize("engine", ENGINES)
def test_ranges(run_cli: Callable[..., Cluster], engine: str, folder: Path) -> None:
    url = serve(run_cli, engine, folder)
    size = len(TEXT)
    part = FRESH.get(url + "/assets/hello.txt", headers={"Range": "bytes=7-12"})
    assert (part.status_code, part.content) == (206, TEXT[7:13])
    assert part.headers["content-range"] == f"bytes 7-12/{size}"
    assert part.headers["content-length"] == "6"
    suffix = FRESH.get(url + "/assets/hello.txt", headers={"Range": "bytes=-6"})
    assert (suffix.status_code, suffix.content) == (206, TEXT[-6:])
    open_ended = FRESH.get(url + "/assets/hello.txt", headers={"Range": "bytes=15-"})
    assert (open_ended.status_code, open_ended.content) == (206, TEXT[15:])

    refused = FRESH.get(url + "/assets/hello.txt", headers={"Range": f"bytes={size}-"})
    assert refused.status_code == 416
    assert refused.headers["content-range"] == f"bytes */{size}"
    # Several ranges: the whole file (documented), as a multipart answer is not built.
    several = FRESH.get(url + "/assets/hello.txt", headers={"Range": "bytes=0-1,4-5"})
    assert (several.status_code, several.content) == (200, TEXT)

    etag = part.headers["etag"]
    kept = FRESH.get(url + "/assets/hello.txt", headers={"Range": "bytes=0-4", "If-Range": etag})
    assert (kept.status_code, kept.content) == (206, TEXT[:5])
    changed = FRESH.get(url + "/assets/hello.txt", headers={"Range": "bytes=0-4", "If-Range": '"stale"'})
    assert (changed.status_code, changed.content) == (200, TEXT)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_precompressed_sibling_when_the_client_takes_it(run_cli: Callable[..., Cluster], engine: str,
                                                          folder: Path) -> None:
    url = serve(run_cli, engine, folder)
    packed = FRESH.get(url + "/assets/app.js", headers={"Accept-Encoding": "br;q=0.5, gzip"})
    assert packed.headers["content-encoding"] == "gzip"
    assert packed.headers["vary"] == "Accept-Encoding"
    assert packed.headers["content-type"] == "text/javascript; charset=utf-8"
    assert packed.content == SCRIPT  # httpx decodes it
    assert int(packed.headers["content-length"]) == len(gzip.compress(SCRIPT))
    plain = FRESH.get(url + "/assets/app.js", headers={"Accept-Encoding": "gzip;q=0, identity"})
    assert "content-encoding" not in plain.headers
    assert plain.headers["vary"] == "Accept-Encoding"
    assert plain.content == SCRIPT
    assert plain.headers["etag"] != packed.headers["etag"]


# (target, the status it gets): every attempt to leave the folder, or to name something that is not a file in it.
ESCAPES = [
    (b"/assets/../secret.txt", 404),
    (b"/assets/sub/../../secret.txt", 404),
    (b"/assets/%2e%2e/secret.txt", 404),
    (b"/assets/%2E%2E/secret.txt", 404),
    (b"/assets/.%2e/secret.txt", 404),
    (b"/assets/..%2fsecret.txt", 404),
    (b"/assets/sub%2f..%2f..%2fsecret.txt", 404),
    (b"/assets/%2fetc%2fpasswd", 404),
    (b"/assets/..\\secret.txt", 404),
    (b"/assets/..%5csecret.txt", 404),
    (b"/assets/out.txt", 404),  # a symlink out of the folder
    (b"/assets/outdir/secret.txt", 404),  # through a symlinked folder out of it
    (b"/assets/sub", 404),  # a folder: no listing
    (b"/assets/pipe", 404),  # no regular file
    (b"/assets/", 404),
    (b"/assets//hello.txt", 404),
    (b"/assets/hello.txt%00", 400),
    (b"/assets/hello.txt%00.png", 400),
    (b"/assets/%zz", 400),
]


@pytest.mark.parametrize("engine", ENGINES)
def test_no_path_leaves_the_folder(run_cli: Callable[..., Cluster], engine: str, folder: Path) -> None:
    url = serve(run_cli, engine, folder)
    assert status_of(raw(url, b"/assets/hello.txt")) == 200  # the same way in, for a file that is there
    for target, expected in ESCAPES:
        answer = raw(url, target)
        assert SECRET not in answer, target
        assert b"pid" not in answer.partition(b"\r\n\r\n")[2], f"{target!r} reached the app"
        assert status_of(answer) == expected, (target, answer)
    # A raw NUL byte in the target: refused before anything opens a file (the parser's 400, or the layer's).
    answer = raw(url, b"/assets/hello.txt\x00")
    assert status_of(answer) == 400 and TEXT not in answer


@pytest.mark.parametrize("engine", ENGINES)
def test_a_missing_file_never_reaches_the_app(run_cli: Callable[..., Cluster], engine: str, folder: Path) -> None:
    url = serve(run_cli, engine, folder)
    missing = FRESH.get(url + "/assets/nothing.txt")
    assert missing.status_code == 404 and b"pid" not in missing.content
    post = FRESH.post(url + "/assets/hello.txt", content=b"x")
    assert (post.status_code, post.headers["allow"]) == (405, "GET, HEAD")
    assert "pid" in FRESH.get(url + "/elsewhere").json()  # outside the prefix: the app
    assert "pid" in FRESH.get(url + "/assetsx/hello.txt").json()  # a prefix counts as whole segments


@pytest.mark.parametrize("engine", ENGINES)
def test_fallthrough_hands_what_is_not_a_file_to_the_app(run_cli: Callable[..., Cluster], engine: str,
                                                         folder: Path) -> None:
    url = serve(run_cli, engine, folder, "--static-fallthrough")
    assert "pid" in FRESH.get(url + "/assets/nothing.txt").json()
    assert "pid" in FRESH.post(url + "/assets/hello.txt", content=b"x").json()
    assert FRESH.get(url + "/assets/hello.txt").content == TEXT
    escape = raw(url, b"/assets/%2e%2e/secret.txt")  # the app may answer it, the file never goes out
    assert SECRET not in escape


@pytest.mark.parametrize("engine", ENGINES)
def test_a_big_file_arrives_intact(run_cli: Callable[..., Cluster], engine: str, folder: Path) -> None:
    data = os.urandom(20 * 1024 * 1024)
    (folder / "big.bin").write_bytes(data)
    url = serve(run_cli, engine, folder)
    with httpx.Client(timeout=DEADLINE) as client:  # keep-alive: the next request follows on the connection
        whole = client.get(url + "/assets/big.bin")
        assert whole.headers["content-type"] == "application/octet-stream"
        assert hashlib.sha256(whole.content).digest() == hashlib.sha256(data).digest()
        first, last = 5_000_000, 15_000_000
        middle = client.get(url + "/assets/big.bin", headers={"Range": f"bytes={first}-{last}"})
        assert middle.status_code == 206
        assert middle.content == data[first:last + 1]
        assert client.get(url + "/assets/hello.txt").content == TEXT


@pytest.mark.parametrize("engine", ["inline", "asgi", "asgi-asyncio"])
def test_the_access_log_counts_static_answers(run_cli: Callable[..., Cluster], engine: str, folder: Path) -> None:
    cluster = start(run_cli, *ENGINES[engine], "--workers", "1", "--static", f"/assets={folder}", "--access-log")
    url = cluster.wait_ready()
    FRESH.get(url + "/assets/hello.txt")
    FRESH.get(url + "/assets/nothing.txt")
    cluster.wait_for_line(rf'"GET /assets/hello\.txt HTTP/1\.1" 200 {len(TEXT)} ')  # the bytes sent, sendfile too
    cluster.wait_for_line(r'"GET /assets/nothing\.txt HTTP/1\.1" 404')


@pytest.mark.parametrize(("value", "named"), [
    ("/assets=/no/such/folder", "no such directory"),
    ("assets=.", "starting with /"),
    ("/a/../b=.", "dot segments"),
    ("/assets", "PREFIX=DIR"),
])
def test_a_bad_static_value_is_named(value: str, named: str) -> None:
    result = run_to_exit("sup_app:wsgi", "--static", value, cwd=TEST_APPS)
    assert_config_error(result, 2, "bad --static value", repr(value), named)


def test_mounts_from_the_config_file_relative_to_chdir(run_cli: Callable[..., Cluster], tmp_path: Path,
                                                       folder: Path) -> None:
    """A list in clusterrun.toml; a relative DIR is taken from --chdir's folder, as --app-dir is."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "note.txt").write_bytes(b"note\n")
    (tmp_path / "clusterrun.toml").write_text('static = ["/assets=pub", "/more/=other"]\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cluster = run_cli("sup_app:wsgi", "--chdir", str(tmp_path), "--app-dir", str(TEST_APPS), "--port", "0",
                      "--workers", "1", "--config", str(tmp_path / "clusterrun.toml"), cwd=elsewhere)
    url = cluster.wait_ready()
    assert FRESH.get(url + "/assets/hello.txt").content == TEXT
    assert FRESH.get(url + "/more/note.txt").content == b"note\n"


@pytest.mark.parametrize("engine", ["inline", "asgi-asyncio"])
def test_over_tls_the_file_is_read_not_sent_with_sendfile(run_cli: Callable[..., Cluster], engine: str,
                                                          folder: Path, tmp_path: Path) -> None:
    """Under TLS the bytes must pass the encryption: a range of a big file arrives exact, not the file's rest."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-subj", "/CN=localhost", "-days", "1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=DEADLINE)
    data = os.urandom(3 * 1024 * 1024)
    (folder / "big.bin").write_bytes(data)
    url = serve(run_cli, engine, folder, "--ssl-certfile", str(cert), "--ssl-keyfile", str(key))
    assert url.startswith("https://")
    with httpx.Client(timeout=DEADLINE, verify=False) as client:
        middle = client.get(url + "/assets/big.bin", headers={"Range": "bytes=1000000-2500000"})
        assert (middle.status_code, middle.content) == (206, data[1_000_000:2_500_001])
        assert client.get(url + "/assets/big.bin").content == data
        assert client.get(url + "/assets/hello.txt").content == TEXT


@pytest.mark.parametrize("engine", ENGINES)
def test_the_prefix_is_matched_against_the_path_the_client_sent(run_cli: Callable[..., Cluster], engine: str,
                                                                 folder: Path) -> None:
    """With --root-path (a proxy took /api off), the mount sees the path as it arrived, on every engine."""
    url = serve(run_cli, engine, folder, "--root-path", "/api")
    assert FRESH.get(url + "/assets/hello.txt").content == TEXT
