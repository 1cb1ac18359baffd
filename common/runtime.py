"""The per-process bundle: settings, database and cluster, built once on the first request.

Nothing is built at import. `current()` builds the runtime from the environment the first time
it is asked, under a lock; tests install their own instead. A function's chores (work beside
its requests: pruning nonces, sweeping WorkFlows) run in threads of their own, each started once
per process, and only on the runtime built from the environment, never on an installed one.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
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


@dataclass(frozen=True)
class Chore:
    """Work done every `every` seconds beside the requests; its errors are logged, not fatal."""

    name: str
    every: float
    run: Callable[[Runtime], None]


_current: Runtime | None = None
_from_env = False
_started: set[str] = set()
_lock = threading.Lock()


def current() -> Runtime:
    global _current, _from_env
    if _current is None:
        with _lock:
            if _current is None:
                settings = Settings.from_env(os.environ)
                configure_logging(settings)
                for warning in settings.warnings():
                    log.warning("%s", warning)
                _current = Runtime.build(settings)
                _from_env = True
    return _current


def start_chores(chores: tuple[Chore, ...]) -> None:
    """Start each chore not yet running in this process (cheap when all are)."""
    if not _from_env or all(chore.name in _started for chore in chores):
        return
    with _lock:
        for chore in chores:
            if chore.name not in _started and _current is not None:
                _started.add(chore.name)
                threading.Thread(
                    target=_every, args=(chore, _current), name=chore.name, daemon=True
                ).start()


def _every(chore: Chore, rt: Runtime) -> None:
    while True:
        time.sleep(chore.every)
        try:
            chore.run(rt)
        except ServiceError as exc:
            log.warning("%s failed: %s", chore.name, exc.message)


def prune_nonces(rt: Runtime) -> None:
    """Nonces older than the window can never be accepted again: delete them, off the request
    path. The cutoff is two windows back, for instances whose clocks lag."""
    if not rt.settings.signature_required:
        return
    cutoff = time.time_ns() - 2 * rt.settings.nonce_window * 10**9
    deleted = store.prune_nonces(rt.db, cutoff)
    if deleted:
        log.debug("pruned %d nonces", deleted)


NONCE_PRUNING = Chore("nonce-pruner", PRUNE_SECONDS, prune_nonces)


def install(runtime: Runtime | None) -> None:
    """Use this runtime from now on (None: build from the environment on the next request)."""
    global _current, _from_env
    with _lock:
        _current = runtime
        _from_env = False
