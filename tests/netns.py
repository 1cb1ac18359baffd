"""Stand-in hosts for the egress tests: each a network namespace of the test's own, joined to
this machine by a veth pair, serving files over HTTP on its address. One in TEST-NET-3
(203.0.113.0/24) plays a server on the internet, one in 192.168.77.0/24 a private server; no
packet leaves this machine (the routes lead into these namespaces only)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

PORT = 8080
# http.server's own command looks its address up in DNS first, which no namespace here answers.
SERVER = f"""
import functools, http.server, socketserver, sys
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=sys.argv[2])
socketserver.ThreadingTCPServer((sys.argv[1], {PORT}), handler).serve_forever()
"""


@dataclass(frozen=True)
class Host:
    address: str  # where it serves
    gateway: str  # this machine's address on its link

    @property
    def url(self) -> str:
        return f"http://{self.address}:{PORT}"


@contextmanager
def standin_host(name: str, prefix: str) -> Iterator[Host]:
    """A host at <prefix>.10 (network namespace `name`), this machine at <prefix>.1 on its
    link; what it serves is the caller's (`ip netns exec <name> ...`)."""
    host = Host(address=f"{prefix}.10", gateway=f"{prefix}.1")
    _cleanup(name)
    commands = [
        ["ip", "netns", "add", name],
        ["ip", "link", "add", f"{name}-h", "type", "veth", "peer", "name", "eth0", "netns", name],
        ["ip", "addr", "add", f"{host.gateway}/24", "dev", f"{name}-h"],
        ["ip", "link", "set", f"{name}-h", "up"],
        ["ip", "-n", name, "addr", "add", f"{host.address}/24", "dev", "eth0"],
        ["ip", "-n", name, "link", "set", "eth0", "up"],
        ["ip", "-n", name, "link", "set", "lo", "up"],
        ["ip", "-n", name, "route", "add", "default", "via", host.gateway],
    ]
    try:
        for command in commands:
            subprocess.run(command, check=True, capture_output=True)
        yield host
    finally:
        _cleanup(name)


@contextmanager
def serving_host(name: str, prefix: str, files: dict[str, bytes]) -> Iterator[Host]:
    """A stand-in host at <prefix>.10 serving `files` over HTTP."""
    folder = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    for file_name, body in files.items():
        (folder / file_name).write_bytes(body)
    server = None
    try:
        with standin_host(name, prefix) as host:
            server = subprocess.Popen(
                [
                    "ip",
                    "netns",
                    "exec",
                    name,
                    sys.executable,
                    "-c",
                    SERVER,
                    host.address,
                    str(folder),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                _wait_serving(name, host)
                yield host
            finally:
                server.kill()
                server.wait()
    finally:
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()


def _wait_serving(name: str, host: Host) -> None:
    deadline = time.monotonic() + 10
    probe = ["ip", "netns", "exec", name, sys.executable, "-c"]
    probe.append(f"import urllib.request; urllib.request.urlopen('{host.url}/', timeout=1)")
    while time.monotonic() < deadline:
        if subprocess.run(probe, capture_output=True).returncode == 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"the stand-in host {host.address} did not serve")


def _cleanup(name: str) -> None:
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    subprocess.run(["ip", "link", "del", f"{name}-h"], capture_output=True, check=False)
