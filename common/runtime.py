"""The per-process bundle: settings, database and cluster, built once on the first request.

Nothing is built at import. `current()` builds the runtime from the environment the first time
it is asked, under a lock, and starts the thread that prunes old nonces; tests and the local
runner `install()` their own instead.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass

from common import store
from common.cluster import Cluster, build_cluster
from common.config import Settings, configure_logging
from common.db import Database
from common.errors import ServiceError

log = logging.getLogger(__name__)

PRUNE_SECONDS = 60


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
                if settings.signature_required:
                    threading.Thread(
                        target=_prune_nonces, args=(_current,), name="nonce-pruner", daemon=True
                    ).start()
    return _current


def _prune_nonces(rt: Runtime) -> None:
    """Nonces older than the window can never be accepted again: delete them every minute,
    off the request path. The cutoff is two windows back, for instances whose clocks lag."""
    while True:
        time.sleep(PRUNE_SECONDS)
        cutoff = time.time_ns() - 2 * rt.settings.nonce_window * 10**9
        try:
            deleted = store.prune_nonces(rt.db, cutoff)
        except ServiceError as exc:
            log.warning("pruning nonces failed: %s", exc.message)
            continue
        if deleted:
            log.debug("pruned %d nonces", deleted)


def install(runtime: Runtime | None) -> None:
    """Use this runtime from now on (None: build from the environment on the next request)."""
    global _current
    with _lock:
        _current = runtime
