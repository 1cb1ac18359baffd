"""The engine's own small HTTP server: `GET /metrics` for Prometheus, `GET /healthz` for probes.

It runs in a daemon thread beside the engine's loop and reads only memory: a scrape or a probe
never touches the database or the jobs. `/healthz` answers 503 once the loop has not turned for
`stale_after` seconds (it turns at least every few seconds, paused by a database outage or not),
so a liveness probe restarts an engine whose loop is stuck, and only then.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, generate_latest

from common import metrics as common_metrics
from engine.metrics import EngineCollector
from engine.snapshot import Snapshot

log = logging.getLogger(__name__)


class StatusServer:
    def __init__(
        self, snapshot: Callable[[], Snapshot], host: str, port: int, *, stale_after: float
    ) -> None:
        """`snapshot`: the engine's `Engine.snapshot`."""
        self.snapshot = snapshot
        self.stale_after = stale_after
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(EngineCollector(snapshot))
        self.http = ThreadingHTTPServer((host, port), _handler(self))
        self.http.daemon_threads = True
        self._thread = threading.Thread(target=self.http.serve_forever, name="engine-status")

    @property
    def port(self) -> int:
        return int(self.http.server_address[1])

    def start(self) -> None:
        self._thread.daemon = True
        self._thread.start()
        log.info("engine status on port %d: /metrics, /healthz", self.port)

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self._thread.join()

    def metrics(self) -> bytes:
        """The process's counters (common.metrics's registry) and the engine's present."""
        return common_metrics.exposition() + generate_latest(self.registry)

    def health(self, *, readiness: bool = True) -> tuple[int, dict[str, object]]:
        """/healthz (readiness): the loop turns and every environment was announced; /livez
        (liveness): the loop turns, announced or not (a database down at start is no reason
        to restart the engine)."""
        now = self.snapshot()
        since = time.time() - now.last_turn
        alive = since <= self.stale_after
        # Ready once its environments are announced: before that a start for them is a 400.
        ready = alive and now.announced
        body: dict[str, object] = {
            "engine": now.engine_id,
            "loop": "turning" if alive else "stuck",
            "announced": now.announced,
            "secondsSinceTurn": round(since, 1),
            "database": "ok" if now.database_ok else "unavailable",
            "jobs": now.jobs,
        }
        return (200 if (ready if readiness else alive) else 503), body


def _handler(server: StatusServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, common_metrics.CONTENT_TYPE, server.metrics())
            elif self.path in ("/healthz", "/livez"):
                status, body = server.health(readiness=self.path == "/healthz")
                self._send(status, "application/json", json.dumps(body).encode())
            else:
                self._send(404, "application/json", b'{"error": "No such route"}')

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # a scrape every few seconds is not news

    return Handler
