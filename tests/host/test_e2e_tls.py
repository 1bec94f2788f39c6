"""End-to-end: HTTPS with --ssl-certfile and friends (issue 14, point 3), against the real CLI.

The certificates are made here: a test CA and server certificates it signs for localhost and 127.0.0.1 (a
renewal is another certificate from the same CA). Each engine serves HTTPS under primary-side and worker-side
policies: the WSGI inline engine, WSGI on uvicorn's stack (``--threads 2``) and ASGI; the app sees the scheme
https. Plain HTTP sent to the TLS port, or a client that never starts its handshake, costs that connection
only. A bad file or password is a one-line configuration error. A rolling restart serves renewed files, and
keeps the old workers serving when the new files are broken.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import shutil
import signal
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from helpers import DEADLINE, TEST_APPS, Cluster, assert_config_error, read_all, run_to_exit, wait_until

PASSWORD = "correct horse"


@dataclass(frozen=True)
class Pair:
    cert: Path
    key: Path
    fingerprint: str  # sha256 of the certificate (DER), as the client sees it


@dataclass(frozen=True)
class PKI:
    ca: Path
    first: Pair
    renewed: Pair  # the same names, a new certificate and key from the same CA
    encrypted_key: Path  # first's key, encrypted with PASSWORD
    client: Pair  # a client certificate from the same CA


def _name(text: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, text)])


def _certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: str, signer: ec.EllipticCurvePrivateKey,
                 ca: bool, usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.SERVER_AUTH) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False)
    )
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
            decipher_only=False), critical=True)
    else:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=False, crl_sign=False, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
            decipher_only=False), critical=True)
    return builder.sign(signer, hashes.SHA256())


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _key_pem(key: ec.EllipticCurvePrivateKey, password: str | None = None) -> bytes:
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password.encode()) if password else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    folder = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("clusterrun test CA", ca_key, "clusterrun test CA", ca_key, ca=True)
    pairs = []
    for name in ("first", "renewed", "client"):
        key = ec.generate_private_key(ec.SECP256R1())
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if name == "client" else ExtendedKeyUsageOID.SERVER_AUTH
        cert = _certificate("localhost", key, "clusterrun test CA", ca_key, ca=False, usage=usage)
        pairs.append(Pair(_write(folder / f"{name}.crt", cert.public_bytes(serialization.Encoding.PEM)),
                          _write(folder / f"{name}.key", _key_pem(key)),
                          cert.fingerprint(hashes.SHA256()).hex()))
        if name == "first":
            encrypted = _write(folder / "first-encrypted.key", _key_pem(key, PASSWORD))
    return PKI(_write(folder / "ca.crt", ca.public_bytes(serialization.Encoding.PEM)), pairs[0], pairs[1],
               encrypted, pairs[2])


def client_context(pki: PKI) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki.ca))


def start_tls(run_cli: Callable[..., Cluster], app: str, *args: str, env: dict[str, str] | None = None
              ) -> tuple[Cluster, str]:
    cluster = run_cli(app, "--port", "0", "--log-level", "debug", *args, cwd=TEST_APPS, env=env)
    url = cluster.wait_ready()
    assert url.startswith("https://127.0.0.1:"), url  # the listening line says https
    return cluster, url


def get_json(pki: PKI, url: str) -> dict[str, object]:
    """One GET on a new connection (under rr: the next worker), checked against the test CA."""
    with httpx.Client(verify=client_context(pki), timeout=DEADLINE) as http:
        response = http.get(url)
    assert response.status_code == 200, response.text
    answer: dict[str, object] = response.json()
    return answer


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("https://").rsplit(":", 1)
    return host, int(port)


def peer_fingerprint(pki: PKI, url: str) -> str:
    """The sha256 of the certificate the server shows on a new connection (which also answers a request)."""
    with socket.create_connection(address(url), timeout=DEADLINE) as raw, \
            client_context(pki).wrap_socket(raw, server_hostname="localhost") as sock:
        der = sock.getpeercert(binary_form=True)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert read_all(sock).startswith(b"HTTP/1.1 200 "), "no answer over TLS"
    assert der is not None
    return hashlib.sha256(der).hexdigest()


def plain_http_to(url: str) -> bytes:
    """Plain HTTP sent to the TLS port: whatever comes back until the server closes."""
    with socket.create_connection(address(url), timeout=DEADLINE) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        return read_all(sock)


# Each engine under a primary-side and a worker-side policy: the inline WSGI engine (adapters.tls_conn), WSGI
# on uvicorn's stack (--threads 2: the bridge) and ASGI (asyncio's TLS transports).
ENGINES = [
    pytest.param("tls_app:wsgi", "rr", (), id="wsgi-inline-rr"),
    pytest.param("tls_app:wsgi", "shared", (), id="wsgi-inline-shared"),
    pytest.param("tls_app:wsgi", "least-conn", ("--threads", "2"), id="wsgi-threads-least-conn"),
    pytest.param("tls_app:asgi", "rr", (), id="asgi-rr"),
    pytest.param("tls_app:asgi", "reuseport", (), id="asgi-reuseport"),
    pytest.param("tls_app:wsgi", "balanced", (), id="wsgi-inline-balanced"),
    pytest.param("tls_app:asgi", "balanced", (), id="asgi-balanced"),  # accepts itself, serves as passed ones
]


@pytest.mark.parametrize(("app", "policy", "extra"), ENGINES)
def test_https_survives_plain_http_and_the_app_sees_https(
    run_cli: Callable[..., Cluster], pki: PKI, app: str, policy: str, extra: tuple[str, ...]
) -> None:
    cluster, url = start_tls(run_cli, app, "--workers", "1", "--policy", policy, "--ssl-certfile",
                             str(pki.first.cert), "--ssl-keyfile", str(pki.first.key), "--timeout-request-head",
                             "1", *extra)
    first = get_json(pki, url)
    assert first["scheme"] == "https", first
    if app.endswith("wsgi"):
        assert first["https"] is None, first  # no HTTPS=on in the environ: gunicorn sets none either
    # Plain HTTP to the TLS port fails that connection only: the same worker answers HTTPS next.
    assert not plain_http_to(url).startswith(b"HTTP/"), "a plain HTTP answer from the TLS port"
    assert get_json(pki, url)["pid"] == first["pid"]
    if app.endswith("asgi") and policy in ("rr", "balanced"):
        # A passed connection that never starts its handshake is closed after --timeout-request-head (the
        # inline engine's own sweep: test_inline_engine_over_tls).
        with socket.create_connection(address(url), timeout=DEADLINE) as silent:
            assert read_all(silent) == b""
        assert get_json(pki, url)["pid"] == first["pid"]
    assert "Traceback" not in cluster.output()


def test_inline_engine_over_tls(run_cli: Callable[..., Cluster], pki: PKI) -> None:
    """What the inline engine sends or reads its own way goes through TLS too: wsgi.file_wrapper (sendfile
    without TLS), a response larger than the socket buffer, an upload streamed to an upload thread."""
    cluster, url = start_tls(run_cli, "engine_app:app", "--workers", "1", "--ssl-certfile", str(pki.first.cert),
                             "--ssl-keyfile", str(pki.first.key), "--timeout-request-head", "1")
    size = 3 * 1024 * 1024 + 17
    pattern = bytes(range(256)) * (size // 256) + b"z" * (size % 256)  # what engine_app's /file serves
    upload = bytes(reversed(range(256))) * 8192  # 2 MiB: more than the engine reads before calling the app
    with httpx.Client(verify=client_context(pki), timeout=DEADLINE) as http:
        environ = http.get(url + "/environ").json()
        assert environ["wsgi.url_scheme"] == "https", environ
        assert environ["SERVER_PORT"] == str(address(url)[1])
        file = http.get(url + f"/file?{size}")
        assert file.status_code == 200 and file.content == pattern
        sha = http.post(url + "/sha", content=upload).json()
        assert sha == {"length": len(upload), "sha256": hashlib.sha256(upload).hexdigest()}
    # More than the socket buffers hold (Linux lets a send buffer grow to 4 MiB), to a client with a small
    # receive window: the worker's writes meet a full socket, and what OpenSSL could not write yet goes out
    # later, in order.
    huge = 12 * 1024 * 1024
    with socket.socket() as raw:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        raw.settimeout(DEADLINE)
        raw.connect(address(url))
        with client_context(pki).wrap_socket(raw, server_hostname="localhost") as sock:
            sock.sendall(b"GET /big?%d HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" % huge)
            answer = bytearray()
            while data := sock.recv(1024 * 1024):
                answer += data
    chunk = b"%x\r\n%s\r\n0\r\n\r\n" % (huge, b"b" * huge)  # /big sends one chunk
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"\r\n\r\n" + chunk), answer[:300]
    # A client that connects and never starts its handshake is closed after --timeout-request-head.
    with socket.create_connection(address(url), timeout=DEADLINE) as silent:
        assert read_all(silent) == b""
    assert get_json(pki, url + "/environ")["wsgi.url_scheme"] == "https"
    assert "Traceback" not in cluster.output()


@pytest.mark.parametrize("app", ["tls_app:wsgi", "tls_app:asgi"])
def test_client_certificates_required(run_cli: Callable[..., Cluster], pki: PKI, app: str) -> None:
    cluster, url = start_tls(run_cli, app, "--workers", "1", "--ssl-certfile", str(pki.first.cert), "--ssl-keyfile",
                             str(pki.first.key), "--ssl-cert-reqs", "required", "--ssl-ca-certs", str(pki.ca))
    with pytest.raises(httpx.TransportError):  # no client certificate: the handshake fails
        get_json(pki, url)
    with_certificate = client_context(pki)
    with_certificate.load_cert_chain(pki.client.cert, pki.client.key)
    with httpx.Client(verify=with_certificate, timeout=DEADLINE) as http:
        assert http.get(url).json()["scheme"] == "https"
    assert "Traceback" not in cluster.output()


BAD = [
    pytest.param(lambda p: ["--ssl-certfile", str(p.first.cert.with_name("missing.crt"))],
                 ["bad --ssl-certfile value", "missing.crt", "no such file"], id="missing-cert"),
    pytest.param(lambda p: ["--ssl-certfile", str(p.first.key), "--ssl-keyfile", str(p.first.key)],
                 ["bad --ssl-certfile value", "first.key", "no PEM certificate"], id="key-as-cert"),
    pytest.param(lambda p: ["--ssl-certfile", str(p.first.cert), "--ssl-keyfile", str(p.renewed.key)],
                 ["bad --ssl-keyfile value", "renewed.key", "does not belong to the certificate"], id="other-key"),
    pytest.param(lambda p: ["--ssl-certfile", str(p.first.cert), "--ssl-keyfile", str(p.encrypted_key),
                            "--ssl-keyfile-password", "wrong"],
                 ["bad --ssl-keyfile-password", "first-encrypted.key", "give the password"], id="wrong-password"),
    pytest.param(lambda p: ["--ssl-certfile", str(p.first.cert), "--ssl-keyfile", str(p.encrypted_key)],
                 ["is encrypted", "--ssl-keyfile-password"], id="no-password"),
    pytest.param(lambda p: ["--ssl-keyfile", str(p.first.key)], ["--ssl-keyfile needs --ssl-certfile"],
                 id="key-alone"),
    pytest.param(lambda p: ["--ssl-certfile", str(p.first.cert), "--ssl-keyfile", str(p.first.key),
                            "--ssl-cert-reqs", "required"], ["--ssl-ca-certs"], id="cert-reqs-without-ca"),
]


@pytest.mark.parametrize(("args", "expected"), BAD)
def test_a_bad_tls_option_is_a_one_line_config_error(
    pki: PKI, args: Callable[[PKI], list[str]], expected: list[str]
) -> None:
    result = run_to_exit("tls_app:wsgi", "--port", "0", *args(pki), cwd=TEST_APPS)
    assert_config_error(result, 2, *expected)


def test_the_password_can_come_from_the_environment_and_is_never_shown(pki: PKI) -> None:
    env = {"CLUSTERRUN_SSL_KEYFILE_PASSWORD": PASSWORD}
    result = run_to_exit("config", "tls_app:wsgi", "--ssl-certfile", str(pki.first.cert), "--ssl-keyfile",
                         str(pki.encrypted_key), "--ssl-cert-reqs", "optional", "--ssl-ca-certs", str(pki.ca),
                         cwd=TEST_APPS, env={**os.environ, **env})
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout
    assert "CLUSTERRUN_SSL_KEYFILE_PASSWORD" in result.stdout  # where it came from is shown, not what it is


def test_a_rolling_restart_serves_renewed_certificate_files(run_cli: Callable[..., Cluster], pki: PKI,
                                                            tmp_path: Path) -> None:
    cert, key = tmp_path / "server.crt", tmp_path / "server.key"
    shutil.copy(pki.encrypted_key, key)
    shutil.copy(pki.first.cert, cert)
    cluster, url = start_tls(run_cli, "tls_app:wsgi", "--workers", "2", "--ssl-certfile", str(cert),
                             "--ssl-keyfile", str(key), env={"CLUSTERRUN_SSL_KEYFILE_PASSWORD": PASSWORD})
    assert {peer_fingerprint(pki, url) for _ in range(4)} == {pki.first.fingerprint}  # both workers (rr)

    # A renewal gone wrong (a key that is not the certificate's). SIGHUP reads the configuration again and
    # checks the files as a start does: nothing changes, no worker is replaced. A plain rolling restart (USR2)
    # finds it in its first new worker, which fails to boot: the restart stops there. Either way the old
    # workers keep serving the old certificate.
    shutil.copy(pki.renewed.cert, cert)
    cluster.signal(signal.SIGHUP)
    cluster.wait_for_line(r"the configuration was not re-read: bad --ssl-keyfile value .*does not belong")
    cluster.signal(signal.SIGUSR2)
    cluster.wait_for_line(r"rolling restart aborted: .*TLS: bad --ssl-keyfile value .*does not belong")
    assert {peer_fingerprint(pki, url) for _ in range(4)} == {pki.first.fingerprint}

    shutil.copy(pki.renewed.key, key)  # the renewal done right: the new key is not encrypted
    cluster.signal(signal.SIGHUP)
    cluster.wait_for_line(r"rolling restart complete")
    wait_until(lambda: {peer_fingerprint(pki, url) for _ in range(4)} == {pki.renewed.fingerprint},
               "every worker to show the renewed certificate")
    assert get_json(pki, url)["scheme"] == "https"


@pytest.mark.parametrize("app", ["sup_app:wsgi", "sup_app:asgi"])
def test_the_ssl_context_hook_makes_the_workers_context(run_cli: Callable[..., Cluster], pki: PKI, app: str,
                                                        tmp_path: Path) -> None:
    """gunicorn's ssl_context(config, default_ssl_context_factory): here it refuses anything older than TLS 1.3."""
    log = tmp_path / "hooks.log"
    _cluster, url = start_tls(run_cli, app, "--workers", "1", "--ssl-certfile", str(pki.first.cert),
                              "--ssl-keyfile", str(pki.first.key), "--hooks", "gunicorn_hooks",
                              env={"HOOK_LOG": str(log), "HOOK_TLS13": "1"})
    pid = get_json(pki, url)["pid"]  # a TLS 1.3 client is served
    assert [line for line in log.read_text().splitlines() if line.startswith("ssl_context")] == [f"ssl_context {pid}"]
    old = client_context(pki)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(address(url), timeout=DEADLINE) as raw, pytest.raises(ssl.SSLError):
        old.wrap_socket(raw, server_hostname="localhost")
    assert get_json(pki, url)["pid"] == pid  # the worker serves on
