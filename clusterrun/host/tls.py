"""TLS: the server's ``ssl.SSLContext``, built from the --ssl-* files.

Each worker builds its own context from the files when it starts (clusterrun.worker.runtime), so that a rolling
restart serves renewed certificate files; the handshake happens in the worker, on its own connections (also
those the primary passes under rr, least-conn and sticky: the primary moves raw TCP connections only). The
primary builds one context at configuration time too (clusterrun.config.options), only to check the files: a missing
file, a key that does not belong to the certificate or a wrong password is then a one-line configuration
error (exit 2), never a worker that fails to boot again and again.

OpenSSL says "PEM lib" for nearly every problem with these files, so the messages come from what this module
checks step by step: the certificate alone, then whether the key asked for a password, then the pair.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

from clusterrun.errors import BootError, ConfigError

__all__ = ["CERT_REQS", "TLSSettings", "parse_cert_reqs", "server_context", "worker_context"]

# --ssl-cert-reqs by name, as the ssl module's CERT_NONE, CERT_OPTIONAL, CERT_REQUIRED (uvicorn takes 0, 1, 2).
CERT_REQS = {"none": ssl.CERT_NONE, "optional": ssl.CERT_OPTIONAL, "required": ssl.CERT_REQUIRED}


@dataclass(frozen=True)
class TLSSettings:
    """What the --ssl-* options say; ``keyfile`` "" means the key is in ``certfile``."""

    certfile: str
    keyfile: str = ""
    password: str = ""
    ca_certs: str = ""
    cert_reqs: int = ssl.CERT_NONE
    ciphers: str = ""  # "" leaves Python's default cipher list (as uvicorn since 0.48, gunicorn since 20.0)


def parse_cert_reqs(value: Any) -> int:
    """--ssl-cert-reqs: 0, 1, 2 (as uvicorn) or none, optional, required."""
    text = str(value).strip().lower().removeprefix("cert_")
    if text in CERT_REQS:
        return int(CERT_REQS[text])
    if text in ("0", "1", "2"):
        return int(text)
    raise ConfigError(f"bad --ssl-cert-reqs value {value!r}: give none (0, the default), optional (1: ask for a "
                      "client certificate) or required (2: refuse clients without one)")


def server_context(tls: TLSSettings) -> ssl.SSLContext:
    """The server's context for ``tls``; a file that does not work is a ConfigError naming the flag and fix."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    _check_certificate(tls.certfile)
    _load_pair(context, tls)
    if tls.cert_reqs != ssl.CERT_NONE and not tls.ca_certs:
        raise ConfigError(f"--ssl-cert-reqs {_REQS_NAMES[tls.cert_reqs]} checks client certificates against "
                          "--ssl-ca-certs: give that file (the CA certificates that sign your clients')")
    context.verify_mode = ssl.VerifyMode(tls.cert_reqs)
    if tls.ca_certs:
        try:
            context.load_verify_locations(cafile=tls.ca_certs)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"bad --ssl-ca-certs value {tls.ca_certs!r}: no PEM certificate could be read from it "
                              f"({_why(exc)}); give a file of CA certificates in PEM format") from None
    if tls.ciphers:
        try:
            context.set_ciphers(tls.ciphers)
        except ssl.SSLError:
            raise ConfigError(f"bad --ssl-ciphers value {tls.ciphers!r}: OpenSSL knows no cipher by it; give an "
                              "OpenSSL cipher list like 'ECDHE+AESGCM:ECDHE+CHACHA20', or leave the option out for "
                              "Python's safe defaults") from None
    return context


_REQS_NAMES = {int(number): name for name, number in CERT_REQS.items()}


def _check_certificate(certfile: str) -> None:
    """The certificate file holds at least one certificate OpenSSL can read."""
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        probe.load_verify_locations(cafile=certfile)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"bad --ssl-certfile value {certfile!r}: no PEM certificate could be read from it "
                          f"({_why(exc)}); give the server's certificate (and its chain) in PEM format") from None


def _load_pair(context: ssl.SSLContext, tls: TLSSettings) -> None:
    """Load the certificate with its key; tell a wrong password, a missing one and a key of another cert apart."""
    keyfile = tls.keyfile or tls.certfile
    flag = "--ssl-keyfile" if tls.keyfile else "--ssl-certfile"
    asked = False

    def password() -> str:
        # Always a callable: with none, OpenSSL would prompt for the pass phrase on the terminal.
        nonlocal asked
        asked = True
        if not tls.password:
            raise ConfigError(f"the private key in {flag} {keyfile!r} is encrypted: give its password with "
                              "--ssl-keyfile-password (or the environment variable CLUSTERRUN_SSL_KEYFILE_PASSWORD)")
        return tls.password

    try:
        context.load_cert_chain(tls.certfile, tls.keyfile or None, password)
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":  # the key was read (and decrypted, if it asked for a password)
            raise ConfigError(f"bad {flag} value {keyfile!r}: this private key does not belong to the certificate "
                              f"in --ssl-certfile {tls.certfile!r}; give the key the certificate was made "
                              "for") from None
        if asked:
            raise ConfigError(f"bad --ssl-keyfile-password: it does not decrypt the private key in {flag} "
                              f"{keyfile!r}; give the password the key was encrypted with") from None
        fix = "give the certificate's private key in PEM format" if tls.keyfile else (
            "give the key with --ssl-keyfile, or put it in this file after the certificate")
        raise ConfigError(f"bad {flag} value {keyfile!r}: no PEM private key could be read from it; {fix}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {flag} {keyfile!r} or --ssl-certfile {tls.certfile!r}: {_why(exc)}; check "
                          "the paths and their permissions") from None


def _why(exc: OSError) -> str:
    """OpenSSL's reason in words ("no certificate or crl found"), or the system's."""
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason).lower().replace("_", " ")
    return exc.strerror or str(exc)


def worker_context(tls: TLSSettings | None) -> ssl.SSLContext | None:
    """A worker's context, read from the files as the worker starts: a rolling restart serves renewed ones.

    The primary checked the files at start; one replaced by a broken file since then fails this worker's boot,
    and a rolling restart then stops with the old workers still serving (clusterrun.primary.rollout).
    """
    if tls is None:
        return None
    try:
        return server_context(tls)
    except ConfigError as exc:
        raise BootError(f"TLS: {exc}") from None
