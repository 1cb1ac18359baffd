"""Free TCP ports on loopback, for the servers the local run, the tests and the bench start."""

from __future__ import annotations

import socket


def free_ports(count: int) -> list[int]:
    """Ports free right now; held open together so that the `count` of them differ."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def free_port() -> int:
    return free_ports(1)[0]
