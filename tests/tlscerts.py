"""Certificates made at test time with the ``openssl`` command (installed by scripts/ensure-redis).

Two kinds, as a Redis user meets them: a self-signed certificate naming some other host (what
Heroku Key-Value Store serves), and a certificate signed by a private CA for ``127.0.0.1`` (an
operator's own CA, given to callstate with ``REDIS_TLS_CA_FILE``).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServerCert:
    """A server's certificate and key; ``ca`` is the certificate a client must trust for it."""

    cert: Path
    key: Path
    ca: Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def self_signed(directory: Path, common_name: str = "ec2-192-0-2-1.compute-1.amazonaws.com") -> ServerCert:
    """A self-signed certificate for ``common_name`` (not 127.0.0.1), like Heroku's."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "self-signed.crt", directory / "self-signed.key"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", str(key), "-out", str(cert), "-subj", f"/CN={common_name}",
    )  # fmt: skip
    return ServerCert(cert, key, cert)


def ca_signed(directory: Path) -> ServerCert:
    """A private CA, and a certificate it signed for ``127.0.0.1`` and ``localhost``."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.crt", directory / "ca.key"
    cert, key, request = directory / "server.crt", directory / "server.key", directory / "server.csr"
    extensions = directory / "server.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-keyout", str(ca_key), "-out", str(ca), "-subj", "/CN=callstate test CA",
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(request),
        "-subj", "/CN=localhost",
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(request), "-CA", str(ca), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "2", "-out", str(cert), "-extfile", str(extensions),
    )  # fmt: skip
    return ServerCert(cert, key, ca)
