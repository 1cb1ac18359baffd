"""The engine's configuration: the environments it serves, from the YAML file ENGINE_CONFIG.

`EngineConfig.load` parses and validates the file once into frozen dataclasses and raises one
`ConfigError` naming every bad key, and every key it does not know (a typo would otherwise
leave a limit at its default without a word). Defaults come from the service's own settings:
`maxJobDuration` from ALGO_POD_TIMEOUT, `storageExpiry` from STORAGE_EXPIRY.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from common.config import DEFAULT_STORAGE_EXPIRY, Settings
from common.errors import ConfigError
from engine.images import PULL_POLICIES, RUNTIMES

GIB = 1024**3
DEFAULT_DURATION = 3600  # seconds, when neither the file nor ALGO_POD_TIMEOUT says


@dataclass(frozen=True)
class Environment:
    """One compute environment: a namespace of jobs and the limits each of its jobs gets."""

    namespace: str
    max_jobs: int = 1
    cpu_number: int = 1
    ram_gb: float = 1.0
    disk_gb: float = 1.0
    max_files: int = 65536  # files and folders of a job's folder, where the runner bounds them
    max_job_duration: int = DEFAULT_DURATION
    storage_expiry: int = DEFAULT_STORAGE_EXPIRY
    price_min: float = 0.0
    consumer_address: str = ""
    description: str = ""
    network: bool = False  # whether algorithms may reach the network
    allowed_chain_ids: tuple[int, ...] = ()
    cpu_type: str = ""
    # Private networks its fetches may reach (on-premises data): none by default.
    allow_networks: tuple[str, ...] = ()
    # How algorithms' images run (engine/images.py). runtime None: in their image where the
    # runner can (podman, a cluster), else with the host's interpreters, said in the log.
    runtime: str | None = None
    pull_policy: str = "IfNotPresent"
    allowed_registries: tuple[str, ...] = ()  # registries (and paths) images may come from
    image_pull_secrets: tuple[str, ...] = ()  # a cluster's Secrets for private registries
    max_jobs_per_owner: int | None = None  # running jobs one owner may have; None: no limit

    def announcement(
        self, running: int, *, queued: int = 0, starvation_seconds: float = 0.0
    ) -> dict[str, Any]:
        """The status JSON announce() stores: the original engine's keys, then the queue's
        (`queuedJobs` as Ocean Node announces it, and what places a waiting job)."""
        status: dict[str, Any] = {
            "id": self.namespace,
            "cpuNumber": self.cpu_number,
            "cpuType": self.cpu_type,
            "gpuNumber": 0,
            "gpuType": "",
            "ramGB": self.ram_gb,
            "diskGB": self.disk_gb,
            "priceMin": self.price_min,
            "desc": self.description,
            "currentJobs": running,
            "maxJobs": self.max_jobs,
            "consumerAddress": self.consumer_address,
            "storageExpiry": self.storage_expiry,
            "maxJobDuration": self.max_job_duration,
        }
        if self.allowed_chain_ids:
            status["allowedChainId"] = list(self.allowed_chain_ids)
        status["queuedJobs"] = queued
        status["fairQueue"] = {
            "maxJobsPerOwner": self.max_jobs_per_owner,
            "starvationSeconds": starvation_seconds,
        }
        return status

    @property
    def ram_bytes(self) -> int:
        return int(self.ram_gb * GIB)

    @property
    def disk_bytes(self) -> int:
        return int(self.disk_gb * GIB)


@dataclass(frozen=True)
class KubernetesRunner:
    """`engine.kubernetes`: stages as batch Jobs (engine/kube.py) in the jobs' namespaces."""

    image: str  # the project's image: configure and publish run in it
    jobs_claim: str  # the claim mounted at workRoot, shared with every stage pod
    results_claim: str  # the claim mounted at resultsRoot, shared with publish and getResult
    pending_seconds: float = 300.0
    ttl_seconds: int = 3600
    uid: int = 65534


@dataclass(frozen=True)
class EngineConfig:
    environments: tuple[Environment, ...]
    work_root: Path  # one folder per job, its /data and its logs
    results_root: Path  # published outputs and logs, served by getResult as file:// URLs
    input_roots: tuple[Path, ...] = ()  # folders file:// inputs may come from
    max_input_bytes: int = GIB  # per job, algorithm and inputs together
    lease_seconds: float = 15.0
    heartbeat_seconds: float = 5.0
    poll_seconds: float = 2.0  # the fallback when a notification is missed
    sweep_seconds: float = 60.0
    stage_seconds: int = 600  # the limit of configure and publish, which run our own code
    fetch_seconds: float = 300.0  # the limit of one download
    fetch_min_rate: float = 16384.0  # bytes a second, on average, past a download's first 10 s
    log_bytes: int = 10 * 1024 * 1024  # what each stage's log keeps of the stage's output
    max_outputs: int = 1000  # output files a job publishes, at most
    pull_seconds: float = 600.0  # the limit of one image pull, within configure's stageSeconds
    max_image_bytes: int = 10 * GIB  # an image larger than this is removed and refused
    insecure_registries: tuple[str, ...] = ()  # pulled over plain HTTP or unverified TLS
    # The fair queue (docs/queues.md): how fast an owner's past job seconds stop counting, and
    # how long a job waits at most before it goes first, whatever its owner's usage.
    half_life_seconds: float = 3600.0
    starvation_seconds: float = 6 * 3600.0
    sandbox: str | None = None  # "bwrap" or "unshare"; None: bubblewrap when installed
    kubernetes: KubernetesRunner | None = None  # run stages as Jobs instead of sandboxes

    @property
    def stale_after(self) -> float:
        """How long the loop may go without a turn before /healthz calls it stuck: it turns
        at least once per lease third or heartbeat, and a database outage pauses it 2 s."""
        return max(30.0, 4 * max(self.heartbeat_seconds, self.lease_seconds / 3))

    @property
    def namespaces(self) -> list[str]:
        return [env.namespace for env in self.environments]

    @classmethod
    def load(cls, path: Path, settings: Settings, *, work_root: Path) -> EngineConfig:
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"ENGINE_CONFIG {path}: {exc}") from None
        return cls.parse(raw, settings, work_root=work_root, source=str(path))

    @classmethod
    def parse(
        cls, raw: Any, settings: Settings, *, work_root: Path, source: str = "config"
    ) -> EngineConfig:
        problems: list[str] = []
        if not isinstance(raw, Mapping):
            raise ConfigError(f"{source}: must be a mapping with `environments`")
        reader = _Reader(problems)
        raw = reader.checked(raw, "")
        defaults = {
            "maxJobDuration": settings.algo_pod_timeout or DEFAULT_DURATION,
            "storageExpiry": settings.storage_expiry or DEFAULT_STORAGE_EXPIRY,
        }
        envs = [
            _environment(reader, item, position, defaults)
            for position, item in enumerate(_list(raw.get("environments"), problems))
        ]
        if not envs:
            problems.append("environments: name at least one environment")
        names = [env.namespace for env in envs]
        if len(set(names)) != len(names):
            problems.append("environments: each id may appear once")
        engine = raw.get("engine") or {}
        if not isinstance(engine, Mapping):
            problems.append("engine: must be a mapping")
            engine = {}
        engine = reader.checked(engine, "engine.")
        results = engine.get("resultsRoot") or settings.results_root
        if results is None:
            problems.append("engine.resultsRoot (or RESULTS_ROOT): where results are published")
        config = cls(
            environments=tuple(envs),
            work_root=Path(engine.get("workRoot") or work_root),
            results_root=Path(results or "."),
            input_roots=tuple(Path(p) for p in _list(engine.get("inputRoots"), problems)),
            max_input_bytes=int(reader.number(engine, "maxInputGB", 1.0, "engine") * GIB),
            lease_seconds=reader.number(engine, "leaseSeconds", 15.0, "engine"),
            heartbeat_seconds=reader.number(engine, "heartbeatSeconds", 5.0, "engine"),
            poll_seconds=reader.number(engine, "pollSeconds", 2.0, "engine"),
            sweep_seconds=reader.number(engine, "sweepSeconds", 60.0, "engine"),
            stage_seconds=int(reader.number(engine, "stageSeconds", 600, "engine")),
            fetch_seconds=reader.number(engine, "fetchSeconds", 300.0, "engine"),
            fetch_min_rate=reader.number(engine, "fetchMinRate", 16384.0, "engine"),
            log_bytes=int(reader.number(engine, "logBytes", 10 * 1024 * 1024, "engine")),
            max_outputs=int(reader.number(engine, "maxOutputs", 1000, "engine")),
            pull_seconds=reader.number(engine, "pullSeconds", 600.0, "engine"),
            max_image_bytes=int(reader.number(engine, "maxImageGB", 10.0, "engine") * GIB),
            half_life_seconds=reader.number(engine, "halfLifeSeconds", 3600.0, "engine"),
            starvation_seconds=reader.number(engine, "starvationSeconds", 21600.0, "engine"),
            insecure_registries=_texts(
                engine.get("insecureRegistries"), "engine.insecureRegistries", problems
            ),
            sandbox=_sandbox(engine.get("sandbox"), problems),
            kubernetes=_kubernetes(reader, engine.get("kubernetes")),
        )
        problems += reader.unknown_keys()
        if problems:
            raise ConfigError(f"{source}: " + "; ".join(problems))
        return config


class _Reader:
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        self.mappings: list[_Checked] = []

    def checked(self, raw: Mapping[str, Any], where: str) -> Mapping[str, Any]:
        """`raw`, noting the keys the parser reads of it (`where`: its path, with a dot)."""
        mapping = _Checked(raw, where)
        self.mappings.append(mapping)
        return mapping

    def unknown_keys(self) -> list[str]:
        """A problem for each key of the file that the parser never read."""
        return [
            f"{mapping.where}{key}: unknown key"
            for mapping in self.mappings
            for key in mapping
            if key not in mapping.read
        ]

    def number(self, raw: Mapping[str, Any], key: str, default: float, where: str) -> float:
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            self.problems.append(f"{where}.{key}: must be a positive number")
            return default
        return float(value)


class _Checked(Mapping[str, Any]):
    def __init__(self, raw: Mapping[str, Any], where: str) -> None:
        self.raw, self.where = raw, where
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:  # Mapping.get comes through here too
        self.read.add(key)
        return self.raw[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.raw)

    def __len__(self) -> int:
        return len(self.raw)


def _sandbox(value: Any, problems: list[str]) -> str | None:
    if value is None or value in ("bwrap", "unshare"):
        return None if value is None else str(value)
    problems.append("engine.sandbox: must be bwrap or unshare")
    return None


def _kubernetes(reader: _Reader, raw: Any) -> KubernetesRunner | None:
    if raw is None:
        return None
    where = "engine.kubernetes"
    if not isinstance(raw, Mapping):
        reader.problems.append(f"{where}: must be a mapping (image, jobsClaim, resultsClaim)")
        return None
    raw = reader.checked(raw, f"{where}.")
    texts = {}
    for key in ("image", "jobsClaim", "resultsClaim"):
        value = raw.get(key)
        if not isinstance(value, str) or not value:
            reader.problems.append(f"{where}.{key}: required")
        texts[key] = str(value or "")
    return KubernetesRunner(
        image=texts["image"],
        jobs_claim=texts["jobsClaim"],
        results_claim=texts["resultsClaim"],
        pending_seconds=reader.number(raw, "pendingSeconds", 300, where),
        ttl_seconds=int(reader.number(raw, "ttlSeconds", 3600, where)),
        uid=int(reader.number(raw, "uid", 65534, where)),
    )


def _list(value: Any, problems: list[str]) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        problems.append(f"expected a list, got {type(value).__name__}")
        return []
    return value


def _environment(
    reader: _Reader, raw: Any, position: int, defaults: Mapping[str, int]
) -> Environment:
    where = f"environments[{position}]"
    if not isinstance(raw, Mapping) or not isinstance(raw.get("id"), str) or not raw["id"]:
        reader.problems.append(f"{where}: needs an `id` (the namespace of its jobs)")
        return Environment(namespace=f"invalid-{position}")
    raw = reader.checked(raw, f"{where}.")
    chains = raw.get("allowedChainId") or []
    if not isinstance(chains, list) or not all(isinstance(c, int) for c in chains):
        reader.problems.append(f"{where}.allowedChainId: must be a list of integers")
        chains = []
    networks = _networks(raw.get("allowNetworks"), f"{where}.allowNetworks", reader.problems)
    network = raw.get("network", False)
    if not isinstance(network, bool):
        reader.problems.append(f"{where}.network: must be true or false")
        network = False
    runtime = raw.get("runtime")
    if runtime is not None and runtime not in RUNTIMES:
        reader.problems.append(f"{where}.runtime: must be one of {', '.join(RUNTIMES)}")
        runtime = None
    pull_policy = raw.get("pullPolicy", "IfNotPresent")
    if pull_policy not in PULL_POLICIES:
        reader.problems.append(f"{where}.pullPolicy: must be one of {', '.join(PULL_POLICIES)}")
        pull_policy = "IfNotPresent"
    return Environment(
        namespace=raw["id"],
        max_jobs=int(reader.number(raw, "maxJobs", 1, where)),
        cpu_number=int(reader.number(raw, "cpuNumber", 1, where)),
        ram_gb=reader.number(raw, "ramGB", 1.0, where),
        disk_gb=reader.number(raw, "diskGB", 1.0, where),
        max_files=int(reader.number(raw, "maxFiles", 65536, where)),
        max_job_duration=int(
            reader.number(raw, "maxJobDuration", defaults["maxJobDuration"], where)
        ),
        storage_expiry=int(reader.number(raw, "storageExpiry", defaults["storageExpiry"], where)),
        price_min=float(raw.get("priceMin", 0) or 0),
        consumer_address=str(raw.get("consumerAddress", "") or ""),
        description=str(raw.get("description", "") or ""),
        network=network,
        allowed_chain_ids=tuple(chains),
        cpu_type=str(raw.get("cpuType", "") or ""),
        allow_networks=networks,
        runtime=runtime,
        pull_policy=pull_policy,
        allowed_registries=_texts(
            raw.get("allowedRegistries"), f"{where}.allowedRegistries", reader.problems
        ),
        max_jobs_per_owner=(
            int(reader.number(raw, "maxJobsPerOwner", 1, where))
            if raw.get("maxJobsPerOwner") is not None
            else None
        ),
        image_pull_secrets=_texts(
            raw.get("imagePullSecrets"), f"{where}.imagePullSecrets", reader.problems
        ),
    )


def _texts(value: Any, where: str, problems: list[str]) -> tuple[str, ...]:
    items = _list(value, problems)
    if not all(isinstance(item, str) and item for item in items):
        problems.append(f"{where}: must be a list of names")
        return ()
    return tuple(items)


def _networks(value: Any, where: str, problems: list[str]) -> tuple[str, ...]:
    """CIDR networks, each checked and written in its canonical form."""
    found = []
    for item in _list(value, problems):
        try:
            found.append(str(ipaddress.ip_network(str(item), strict=False)))
        except ValueError:
            problems.append(f"{where}: {item!r} is not a network such as 10.1.0.0/16")
    return tuple(found)
