"""Settings: every environment variable the service reads, parsed and validated once.

`Settings.from_env(os.environ)` is the only place that reads the environment. It raises one
`ConfigError` naming every bad variable, lower-cases the provider allowlist once, and keeps
secrets out of its repr so that logging a Settings object leaks nothing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import logging.config
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from common import logs
from common.errors import ConfigError

ClusterMode = Literal["off", "in-cluster", "kubeconfig"]
# libpq's names and meanings, over TCP (a Unix socket never uses TLS): `prefer` encrypts when the
# server offers it, `require` always, and `verify-full` also checks the certificate against
# POSTGRES_SSLROOTCERT (or the system's CAs) and the host name against POSTGRES_HOST.
SslMode = Literal["disable", "prefer", "require", "verify-full"]
SSL_MODES: tuple[SslMode, ...] = ("disable", "prefer", "require", "verify-full")
# `transaction`: the connection goes through a pooler in transaction mode (PgBouncer's
# pool_mode=transaction), which may hand each transaction to another server connection.
Pooler = Literal["none", "transaction"]
POOLERS: tuple[Pooler, ...] = ("none", "transaction")
LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
LOG_LEVELS = ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG")
# Seconds results are kept when STORAGE_EXPIRY is unset: the original engine's deployments'.
DEFAULT_STORAGE_EXPIRY = 7 * 24 * 3600
T = TypeVar("T")
NO_SECRETS: tuple[str, ...] = ()


@dataclass(frozen=True)
class Settings:
    postgres_host: str
    postgres_port: int = 5432
    postgres_db: str = "postgres"
    postgres_user: str = "postgres"
    postgres_password: str = field(default="", repr=False)
    postgres_sslmode: SslMode = "prefer"
    postgres_sslrootcert: Path | None = None
    postgres_pooler: Pooler = "none"
    signature_required: bool = True
    allowed_providers: frozenset[str] = frozenset()
    # Providers that are Ocean Node (v0.2.x): their calls are verified in its message formats.
    ocean_node_signers: frozenset[str] = frozenset()
    allowed_admins: tuple[str, ...] = field(default=(), repr=False)
    operator_address: str | None = None
    operator_private_key: str | None = field(default=None, repr=False)  # signs receipts
    default_namespace: str = "ocean-compute"
    algo_pod_timeout: int | None = None
    storage_expiry: int | None = None
    ipfs_api_key: str | None = field(default=None, repr=False)
    ipfs_client_id: str | None = field(default=None, repr=False)
    results_root: Path | None = None
    cluster: ClusterMode = "off"
    kubeconfig: Path | None = None
    max_request_bytes: int = 4 * 1024 * 1024
    nonce_window: int = 300  # seconds either side of the service's clock
    log_cfg: Path | None = None
    log_level: str = "INFO"
    log_format: LogFormat = "text"

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, serves_api: bool = True) -> Settings:
        """Parse every variable; collect all problems before failing, so one run shows them all.
        The engine (`serves_api=False`) authenticates nobody, so it needs no allowlist."""
        problems: list[str] = []

        def read(name: str, parse: Callable[[str], T], default: T) -> T:
            raw = env.get(name)
            if raw is None or raw == "":
                return default
            try:
                return parse(raw)
            except ValueError as exc:
                problems.append(f"{name}: {exc}")
                return default

        host = env.get("POSTGRES_HOST", "")
        if not host:
            problems.append("POSTGRES_HOST: required (a host name, or a socket directory)")
        signature_required = read("SIGNATURE_REQUIRED", _flag, True)
        providers = read("ALLOWED_PROVIDERS", _address_list, frozenset[str]())
        if serves_api and signature_required and not providers:
            problems.append(
                "ALLOWED_PROVIDERS: must name at least one provider while SIGNATURE_REQUIRED=1"
            )
        ocean_nodes = read("OCEAN_NODE_SIGNERS", _address_list, frozenset[str]())
        if ocean_nodes - providers:
            problems.append("OCEAN_NODE_SIGNERS: each must be in ALLOWED_PROVIDERS too")
        cluster, kubeconfig = _cluster_mode(env, problems)
        settings = dict(
            postgres_host=host,
            postgres_port=read("POSTGRES_PORT", _port, 5432),
            postgres_db=env.get("POSTGRES_DB") or "postgres",
            postgres_user=env.get("POSTGRES_USER") or "postgres",
            # Empty is valid: trust and peer authentication need no password.
            postgres_password=env.get("POSTGRES_PASSWORD", ""),
            postgres_sslmode=read("POSTGRES_SSLMODE", _one_of(SSL_MODES), "prefer"),
            postgres_sslrootcert=read("POSTGRES_SSLROOTCERT", _file, None),
            postgres_pooler=read("POSTGRES_POOLER", _one_of(POOLERS), "none"),
            signature_required=signature_required,
            allowed_providers=providers,
            ocean_node_signers=ocean_nodes,
            allowed_admins=read("ALLOWED_ADMINS", _secret_list, NO_SECRETS),
            operator_address=env.get("OPERATOR_ADDRESS") or None,
            operator_private_key=read("OPERATOR_PRIVATE_KEY", _private_key, None),
            default_namespace=read("DEFAULT_NAMESPACE", _dns_label, "ocean-compute"),
            algo_pod_timeout=read("ALGO_POD_TIMEOUT", _seconds, None),
            storage_expiry=read("STORAGE_EXPIRY", _seconds, None),
            ipfs_api_key=env.get("X-API-KEY") or None,
            ipfs_client_id=env.get("CLIENT-ID") or None,
            results_root=read("RESULTS_ROOT", _directory, None),
            cluster=cluster,
            kubeconfig=kubeconfig,
            max_request_bytes=read("MAX_REQUEST_BYTES", _positive, 4 * 1024 * 1024),
            nonce_window=read("NONCE_WINDOW", _positive, 300),
            log_cfg=read("LOG_CFG", _file, None),
            log_level=read("LOG_LEVEL", _log_level, "INFO"),
            log_format=read("LOG_FORMAT", _one_of(LOG_FORMATS), "text"),
        )
        if problems:
            raise ConfigError("invalid configuration: " + "; ".join(problems))
        return cls(**settings)  # type: ignore[arg-type]

    def warnings(self) -> list[str]:
        """What an operator must see at start-up and in `GET /`: nothing here degrades silently."""
        notes = []
        if not self.signature_required:
            notes.append("SIGNATURE_REQUIRED=0: requests are not authenticated and replays pass")
        if not self.allowed_admins:
            notes.append("ALLOWED_ADMINS is empty: every admin route answers 401")
        if self.cluster == "off":
            notes.append("no Kubernetes cluster configured: workflows are stored, not registered")
        return notes


def _private_key(raw: str) -> str:
    if not re.fullmatch(r"(0x)?[0-9a-fA-F]{64}", raw):
        raise ValueError("must be 32 bytes in hex (0x and 64 hex digits)")  # never echoed
    return "0x" + raw.removeprefix("0x").lower()


def _flag(raw: str) -> bool:
    if raw not in ("0", "1"):
        raise ValueError("must be 0 or 1")
    return raw == "1"


def _json_strings(raw: str) -> list[str]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        raise ValueError("must be a JSON list of strings") from None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("must be a JSON list of strings")
    return value


def _address_list(raw: str) -> frozenset[str]:
    addresses = _json_strings(raw)
    bad = [a for a in addresses if not _is_address(a)]
    if bad:
        raise ValueError(f"not Ethereum addresses: {', '.join(bad)}")
    return frozenset(a.lower() for a in addresses)


def _is_address(value: str) -> bool:
    hexpart = value[2:]
    return (
        value[:2].lower() == "0x"
        and len(hexpart) == 40
        and all(c in "0123456789abcdefABCDEF" for c in hexpart)
    )


def _secret_list(raw: str) -> tuple[str, ...]:
    # The message must not echo the value: it holds secrets.
    try:
        return tuple(_json_strings(raw))
    except ValueError:
        raise ValueError("must be a JSON list of non-empty strings (value not shown)") from None


def _port(raw: str) -> int:
    port = _positive(raw)
    if port > 65535:
        raise ValueError(f"{raw!r} is not a TCP port")
    return port


def _positive(raw: str) -> int:
    if not raw.isdigit() or int(raw) == 0:
        raise ValueError(f"{raw!r} is not a positive integer")
    return int(raw)


def _seconds(raw: str) -> int:
    if not raw.isdigit():
        raise ValueError(f"{raw!r} is not a whole number of seconds")
    return int(raw)


def _dns_label(raw: str) -> str:
    ok = len(raw) <= 63 and raw[0].isalnum() and raw[-1].isalnum()
    if not ok or not all(c.isdigit() or c == "-" or ("a" <= c <= "z") for c in raw):
        raise ValueError(f"{raw!r} is not a Kubernetes namespace name")
    return raw


def _directory(raw: str) -> Path:
    path = Path(raw)
    if not path.is_dir():
        raise ValueError(f"{raw!r} is not a directory")
    return path.resolve()


def _file(raw: str) -> Path:
    path = Path(raw)
    if not path.is_file():
        raise ValueError(f"{raw!r} is not a file")
    return path


def _one_of(choices: tuple[T, ...]) -> Callable[[str], T]:
    """A parser that accepts exactly one of `choices`."""

    def parse(raw: str) -> T:
        for choice in choices:
            if raw == choice:
                return choice
        raise ValueError(f"{raw!r} is not one of {', '.join(map(str, choices))}")

    return parse


def _log_level(raw: str) -> str:
    level = raw.upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"{raw!r} is not one of {', '.join(LOG_LEVELS)}")
    return level


def _cluster_mode(env: Mapping[str, str], problems: list[str]) -> tuple[ClusterMode, Path | None]:
    """CLUSTER=auto (default) uses the pod's service account in a pod, else $KUBECONFIG if set."""
    mode = env.get("CLUSTER") or "auto"
    kubeconfig = env.get("KUBECONFIG") or None
    if mode == "auto":
        if env.get("KUBERNETES_SERVICE_HOST"):
            return "in-cluster", None
        mode = "kubeconfig" if kubeconfig else "off"
    if mode == "kubeconfig":
        if not kubeconfig or not Path(kubeconfig).is_file():
            problems.append("KUBECONFIG: must name a kubeconfig file when CLUSTER=kubeconfig")
            return "off", None
        return "kubeconfig", Path(kubeconfig)
    if mode in ("off", "in-cluster"):
        return mode, None  # type: ignore[return-value]
    problems.append(f"CLUSTER: {mode!r} is not one of auto, off, in-cluster, kubeconfig")
    return "off", None


def configure_logging(settings: Settings) -> None:
    """LOG_CFG names a YAML dictConfig; without it, LOG_LEVEL on a stderr handler, readable
    lines or LOG_FORMAT=json. Every record carries its request's id (`request_id`)."""
    if settings.log_cfg is not None:
        import yaml

        logging.config.dictConfig(yaml.safe_load(settings.log_cfg.read_text()))
    else:
        stderr = logging.StreamHandler()
        stderr.setFormatter(
            logs.JsonFormatter()
            if settings.log_format == "json"
            else logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
        )
        logging.basicConfig(level=settings.log_level, handlers=[stderr])
    for handler in logging.getLogger().handlers:
        handler.addFilter(logs.RequestIdFilter())
