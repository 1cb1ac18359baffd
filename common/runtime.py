"""The per-process bundle: settings, database and cluster, built once on the first request.

Nothing is built at import. `current()` builds the runtime from the environment the first time
it is asked, under a lock; tests and the local runner `install()` their own instead.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

from common.cluster import Cluster, build_cluster
from common.config import Settings, configure_logging
from common.db import Database

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    db: Database
    cluster: Cluster

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        return cls(settings=settings, db=Database(settings), cluster=build_cluster(settings))


_current: Runtime | None = None
_lock = threading.Lock()


def current() -> Runtime:
    global _current
    if _current is None:
        with _lock:
            if _current is None:
                settings = Settings.from_env(os.environ)
                configure_logging(settings)
                for warning in settings.warnings():
                    log.warning("%s", warning)
                _current = Runtime.build(settings)
    return _current


def install(runtime: Runtime | None) -> None:
    """Use this runtime from now on (None: build from the environment on the next request)."""
    global _current
    with _lock:
        _current = runtime
