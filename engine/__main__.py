"""python -m engine: run the engine with the environments of ENGINE_CONFIG until SIGTERM.

ENGINE_CONFIG=engine.yaml POSTGRES_HOST=... python -m engine [--work-root DIR] [--listen HOST:PORT]
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from common.cluster import api_client
from common.config import Settings, configure_logging
from common.db import Database
from common.errors import ConfigError
from engine.config import EngineConfig
from engine.engine import Engine
from engine.kube import KubeRunner
from engine.receipts import OperatorKey
from engine.runner import Runner
from engine.sandbox import SandboxRunner, SandboxUnavailable
from engine.server import StatusServer
from engine.workflows import WorkflowMirror

log = logging.getLogger("engine")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--work-root", type=Path, default=Path(".data/engine"), help="the jobs' folders"
    )
    parser.add_argument(
        "--listen",
        type=_address,
        metavar="HOST:PORT",
        help="serve GET /metrics and GET /healthz there (port 0: any free port, logged)",
    )
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(os.environ, serves_api=False)
        configure_logging(settings)
        if settings.postgres_pooler != "none":
            # It LISTENs for new jobs and stops, and a pooler in transaction mode drops a LISTEN.
            raise ConfigError("POSTGRES_POOLER: the engine connects to PostgreSQL directly")
        path = os.environ.get("ENGINE_CONFIG")
        if not path:
            raise ConfigError("ENGINE_CONFIG: required, the YAML file of the environments")
        config = EngineConfig.load(Path(path), settings, work_root=args.work_root.resolve())
        for root in (config.work_root, config.results_root):
            root.mkdir(parents=True, exist_ok=True)
            root.chmod(0o711)  # stages pass through, nobody lists other jobs
        runner = build_runner(config, settings)
        operator = operator_key(settings)
    except (ConfigError, SandboxUnavailable) as exc:
        print(f"engine: {exc}", file=sys.stderr)
        return 2
    db = Database(settings)
    workflows = None if settings.cluster == "off" else WorkflowMirror(api_client(settings))
    engine = Engine(config, db, runner, workflows=workflows, operator=operator)
    status = None
    if args.listen:
        host, port = args.listen
        status = StatusServer(engine.snapshot, host, port, stale_after=config.stale_after)
        status.start()

    def close(signum: int, frame: FrameType | None) -> None:
        engine.close()

    signal.signal(signal.SIGTERM, close)
    signal.signal(signal.SIGINT, close)
    engine.run()
    if status is not None:
        status.close()
    db.close()
    log.info("engine %s stopped", engine.id)
    return 0


def operator_key(settings: Settings) -> OperatorKey | None:
    """The key that signs receipts, whose address must be OPERATOR_ADDRESS when both are set."""
    if settings.operator_private_key is None:
        log.warning("OPERATOR_PRIVATE_KEY is not set: receipts are published unsigned")
        return None
    key = OperatorKey.from_hex(settings.operator_private_key)
    claimed = settings.operator_address
    if claimed and claimed.lower() != key.address.lower():
        raise ConfigError(
            f"OPERATOR_ADDRESS {claimed} is not the address of OPERATOR_PRIVATE_KEY ({key.address})"
        )
    log.info("receipts are signed by %s", key.address)
    return key


def build_runner(config: EngineConfig, settings: Settings) -> Runner[Any]:
    """Kubernetes Jobs when engine.kubernetes says so, else sandboxes on this machine."""
    kube = config.kubernetes
    if kube is None:
        sandbox = SandboxRunner(tool=config.sandbox)
        sandbox.check_reachable(config.work_root, config.results_root, *config.input_roots)
        if sandbox.cgroups is None:
            log.warning(
                "no control group can be made here (the engine is not root, or the cgroup "
                "controllers memory and pids are not writable): each sandbox process is "
                "bounded on its own, and several processes, tmpfs and shared memory together "
                "are not (docs/security.md)"
            )
        log.info("sandboxes: %s, %s", sandbox.tool, sandbox.bounds())
        return sandbox
    if settings.cluster == "off":
        raise ConfigError("engine.kubernetes: needs CLUSTER=in-cluster (or kubeconfig)")
    return KubeRunner(
        api_client(settings),
        namespaces=config.namespaces,
        image=kube.image,
        volumes={config.work_root: kube.jobs_claim, config.results_root: kube.results_claim},
        pending_seconds=kube.pending_seconds,
        ttl_seconds=kube.ttl_seconds,
        uid=kube.uid,
    )


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not port.isdecimal() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r}: expected HOST:PORT, e.g. 0.0.0.0:9090")
    return host or "0.0.0.0", int(port)  # noqa: S104 - a bare :PORT means every interface


if __name__ == "__main__":
    sys.exit(main())
