"""Settings.from_env: every variable parsed once, every problem named at once, no secret shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from common.config import Settings
from common.errors import ConfigError

PROVIDER = "0xe17D2A07EFD5b112F4d675ea2d122ddb145d117B"
BASE = {"POSTGRES_HOST": "db", "ALLOWED_PROVIDERS": f'["{PROVIDER}"]'}


def test_defaults() -> None:
    settings = Settings.from_env(BASE)
    assert settings.signature_required is True
    assert settings.allowed_providers == frozenset({PROVIDER.lower()})
    assert (settings.postgres_port, settings.postgres_db, settings.postgres_user) == (
        5432,
        "postgres",
        "postgres",
    )
    assert settings.postgres_password == ""
    assert settings.postgres_pooler == "none"
    assert settings.cluster == "off"
    assert settings.default_namespace == "ocean-compute"


def test_every_variable_is_read(tmp_path: Path) -> None:
    (tmp_path / "log.yaml").write_text("version: 1\n")
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\n")
    settings = Settings.from_env(
        {
            **BASE,
            "POSTGRES_PORT": "6543",
            "POSTGRES_DB": "ops",
            "POSTGRES_USER": "op",
            "POSTGRES_PASSWORD": "pw-value",
            "POSTGRES_POOLER": "transaction",
            "ALLOWED_ADMINS": '["admin-value"]',
            "OPERATOR_ADDRESS": "0xop",
            "DEFAULT_NAMESPACE": "jobs",
            "ALGO_POD_TIMEOUT": "900",
            "STORAGE_EXPIRY": "60",
            "X-API-KEY": "ipfs-key",
            "CLIENT-ID": "ipfs-client",
            "RESULTS_ROOT": str(tmp_path),
            "CLUSTER": "kubeconfig",
            "KUBECONFIG": str(kubeconfig),
            "MAX_REQUEST_BYTES": "1000",
            "LOG_LEVEL": "debug",
            "LOG_CFG": str(tmp_path / "log.yaml"),
        }
    )
    assert (settings.postgres_port, settings.postgres_db, settings.postgres_user) == (
        6543,
        "ops",
        "op",
    )
    assert settings.postgres_pooler == "transaction"
    assert settings.allowed_admins == ("admin-value",)
    assert (settings.algo_pod_timeout, settings.storage_expiry) == (900, 60)
    assert (settings.ipfs_api_key, settings.ipfs_client_id) == ("ipfs-key", "ipfs-client")
    assert (settings.cluster, settings.kubeconfig) == ("kubeconfig", kubeconfig)
    assert (settings.results_root, settings.max_request_bytes) == (tmp_path.resolve(), 1000)
    assert settings.log_level == "DEBUG"
    shown = repr(settings)
    for secret in ("pw-value", "admin-value", "ipfs-key", "ipfs-client"):
        assert secret not in shown


def test_one_error_names_every_bad_variable() -> None:
    with pytest.raises(ConfigError) as error:
        Settings.from_env(
            {
                "POSTGRES_PORT": "70000",
                "SIGNATURE_REQUIRED": "yes",
                "ALLOWED_PROVIDERS": '["nope"]',
                "ALLOWED_ADMINS": '"secret-value"',
                "ALGO_POD_TIMEOUT": "-1",
                "CLUSTER": "maybe",
                "LOG_LEVEL": "LOUD",
                "DEFAULT_NAMESPACE": "Not_A_Name",
                "NONCE_WINDOW": "0",
                "POSTGRES_POOLER": "session",
            }
        )
    message = str(error.value)
    for name in (
        "POSTGRES_HOST",
        "POSTGRES_PORT",
        "SIGNATURE_REQUIRED",
        "ALLOWED_PROVIDERS",
        "ALLOWED_ADMINS",
        "ALGO_POD_TIMEOUT",
        "CLUSTER",
        "LOG_LEVEL",
        "DEFAULT_NAMESPACE",
        "NONCE_WINDOW",
        "POSTGRES_POOLER",
    ):
        assert f"{name}:" in message
    assert "secret-value" not in message


def test_signatures_required_with_no_provider_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="ALLOWED_PROVIDERS: must name at least one provider"):
        Settings.from_env({"POSTGRES_HOST": "db"})
    legacy = Settings.from_env({"POSTGRES_HOST": "db", "SIGNATURE_REQUIRED": "0"})
    assert legacy.signature_required is False
    assert "SIGNATURE_REQUIRED=0" in legacy.warnings()[0]


def test_cluster_auto(tmp_path: Path) -> None:
    assert (
        Settings.from_env({**BASE, "KUBERNETES_SERVICE_HOST": "10.0.0.1"}).cluster == "in-cluster"
    )
    kubeconfig = tmp_path / "k"
    kubeconfig.write_text("")
    assert Settings.from_env({**BASE, "KUBECONFIG": str(kubeconfig)}).cluster == "kubeconfig"
