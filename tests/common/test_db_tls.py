"""POSTGRES_SSLMODE against a real PostgreSQL serving TLS on loopback, with a certificate
authority and a server certificate this test makes (for `localhost` only)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from common.config import Settings
from common.db import Database
from common.errors import Unavailable
from tests import debian_postgres


@dataclass(frozen=True)
class TlsServer:
    port: int
    ca: Path
    other_ca: Path  # signed nothing this server shows

    def settings(self, host: str, mode: str, rootcert: Path | None = None) -> Settings:
        env = {
            "POSTGRES_HOST": host,
            "POSTGRES_PORT": str(self.port),
            "POSTGRES_SSLMODE": mode,
            "SIGNATURE_REQUIRED": "0",
        }
        if rootcert:
            env["POSTGRES_SSLROOTCERT"] = str(rootcert)
        return Settings.from_env(env)


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(folder: Path) -> None:
    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                f"/CN=test {ca}", "-keyout", f"{ca}.key", "-out", f"{ca}.crt", cwd=folder)  # fmt: skip
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=localhost", "-addext", "subjectAltName=DNS:localhost", "-CA", "ca.crt",
            "-CAkey", "ca.key", "-keyout", "server.key", "-out", "server.crt", cwd=folder)  # fmt: skip


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsServer]:
    """A PostgreSQL of its own serving TLS with `ssl=on` (tests/debian_postgres)."""
    folder = tmp_path_factory.mktemp("tls")
    server = debian_postgres.initdb(folder, tier="REQUIRE_TLS_TIER")
    make_certificates(folder)
    for name in ("server.key", "server.crt"):
        server.copy_in(folder / name, name)
    (server.data / "server.key").chmod(0o600)
    with server.serving("-c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key") as port:
        yield TlsServer(port=port, ca=folder / "ca.crt", other_ca=folder / "other-ca.crt")


def encrypted(settings: Settings) -> bool:
    db = Database(settings)
    try:
        ((ssl,),) = db.query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        return bool(ssl)
    finally:
        db.close()


def test_verify_full_checks_the_authority_and_the_host_name(tls_server: TlsServer) -> None:
    assert encrypted(tls_server.settings("localhost", "verify-full", tls_server.ca))


@pytest.mark.parametrize(
    ("host", "authority"),
    [
        ("127.0.0.1", "ca"),  # the certificate names localhost only
        ("localhost", "other_ca"),  # signed by an authority the service was not told to trust
        ("localhost", None),  # the system's authorities never signed it either
    ],
)
def test_verify_full_refuses_a_server_it_cannot_verify(
    tls_server: TlsServer, host: str, authority: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    rootcert = getattr(tls_server, authority) if authority else None
    with pytest.raises(Unavailable):
        encrypted(tls_server.settings(host, "verify-full", rootcert))
    assert "CERTIFICATE_VERIFY_FAILED" in caplog.text  # the operator learns why


def test_require_and_prefer_encrypt_without_verifying_and_disable_does_not(
    tls_server: TlsServer,
) -> None:
    assert encrypted(tls_server.settings("127.0.0.1", "require"))
    assert encrypted(tls_server.settings("127.0.0.1", "prefer"))
    assert not encrypted(tls_server.settings("127.0.0.1", "disable"))


def test_an_unknown_mode_is_a_configuration_error() -> None:
    with pytest.raises(Exception, match="POSTGRES_SSLMODE: 'verify-ca' is not one of"):
        Settings.from_env(
            {"POSTGRES_HOST": "db", "SIGNATURE_REQUIRED": "0", "POSTGRES_SSLMODE": "verify-ca"}
        )
