"""python -m engine: run the engine with the environments of ENGINE_CONFIG until SIGTERM.

ENGINE_CONFIG=engine.yaml POSTGRES_HOST=... python -m engine [--work-root DIR]
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from common.config import Settings, configure_logging
from common.db import Database
from common.errors import ConfigError
from engine.config import EngineConfig
from engine.engine import Engine
from engine.sandbox import SandboxRunner, SandboxUnavailable

log = logging.getLogger("engine")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--work-root", type=Path, default=Path(".data/engine"), help="the jobs' folders"
    )
    args = parser.parse_args(argv)
    try:
        settings = Settings.from_env(os.environ, serves_api=False)
        path = os.environ.get("ENGINE_CONFIG")
        if not path:
            raise ConfigError("ENGINE_CONFIG: required, the YAML file of the environments")
        config = EngineConfig.load(Path(path), settings, work_root=args.work_root.resolve())
        runner = SandboxRunner(tool=config.sandbox)
        for root in (config.work_root, config.results_root):
            root.mkdir(parents=True, exist_ok=True)
            root.chmod(0o711)  # sandboxes pass through, nobody lists other jobs
        runner.check_reachable(config.work_root, config.results_root, *config.input_roots)
    except (ConfigError, SandboxUnavailable) as exc:
        print(f"engine: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    db = Database(settings)
    engine = Engine(config, db, runner)

    def close(signum: int, frame: FrameType | None) -> None:
        engine.close()

    signal.signal(signal.SIGTERM, close)
    signal.signal(signal.SIGINT, close)
    engine.run()
    db.close()
    log.info("engine %s stopped", engine.id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
