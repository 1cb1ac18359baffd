"""What an engine is doing at one moment, as /metrics and /healthz show it (engine/server.py).

The engine takes it from its own memory (`Engine.snapshot`); the readers never see the engine
itself, so a scrape or a probe cannot touch the database, the jobs or the loop's state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.queue import Backlog


@dataclass(frozen=True)
class Snapshot:
    engine_id: str
    # The unfinished runs this engine holds, by (environment, stored status).
    held: dict[tuple[str, int], int] = field(default_factory=dict)
    # Each environment's queue as of the last heartbeat.
    backlogs: dict[str, Backlog] = field(default_factory=dict)
    last_turn: float = 0.0  # Unix time the loop last completed a turn
    database_ok: bool = False
    announced: bool = False  # every environment announced once: starts for them can pass

    @property
    def jobs(self) -> int:
        return sum(self.held.values())

    def running(self, namespace: str) -> int:
        return sum(count for (ns, _), count in self.held.items() if ns == namespace)
