"""The Go load generator (bench/loadgen), against a loopback server that records what it is
sent: each prepared request goes out once, whole, and every kind of answer is read to its end
(a length, chunks, a closed connection), so that the next request on the connection is parsed
right. No speed is asserted here (bench/RESULTS.md)."""

from __future__ import annotations

import json
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from bench import load


class Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive unless an answer says otherwise
    seen: ClassVar[list[tuple[str, str, str | None, str | None]]] = []
    lock = threading.Lock()

    def do_GET(self) -> None:
        self._answer(None)

    def do_POST(self) -> None:
        self._answer(self.rfile.read(int(self.headers["Content-Length"])).decode())

    def _answer(self, body: str | None) -> None:
        with self.lock:
            self.seen.append((self.command, self.path, self.headers.get("Admin"), body))
        kind = self.path.split("?")[0].strip("/")
        if kind == "chunked":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
        elif kind == "close":
            self.send_response(503)
            self.send_header("Connection", "close")
            self.send_header("Content-Length", "4")
            self.end_headers()
            self.wfile.write(b"gone")
            self.close_connection = True
        else:
            payload = json.dumps({"path": self.path}).encode()
            self.send_response(200 if kind == "ok" else 404)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Recorder.seen = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_each_request_goes_out_once_and_every_answer_is_read_whole(server: str) -> None:
    kinds = ("ok", "chunked", "close", "missing")
    requests = [
        load.Request("GET", f"/{kinds[i % 4]}", params={"n": str(i), "owner": "0x a&b"})
        for i in range(200)
    ]
    requests += [
        load.Request("POST", "/ok", body={"n": i, "text": 'é\n"q"'}, headers={"Admin": "s"})
        for i in range(100)
    ]
    result = load.run(server, "check", requests, concurrency=4, seconds=60)

    assert len(result.latencies_ms) == 300  # the pool ran dry long before the clock
    assert result.statuses == Counter({200: 50 + 50 + 100, 503: 50, 404: 50})
    sent = Counter(Recorder.seen)
    assert len(sent) == 300 and set(sent.values()) == {1}
    assert ("GET", "/close?n=2&owner=0x+a%26b", None, None) in sent
    assert ("POST", "/ok", "s", json.dumps({"n": 7, "text": 'é\n"q"'})) in sent
    assert result.generator_cpu_s is not None and result.generator_cpu_s > 0


def test_it_targets_loopback_only() -> None:
    argv = [str(load.loadgen()), "-addr", "192.0.2.1:80", "-d", "1"]
    refused = subprocess.run(argv, input="", capture_output=True, text=True)
    assert refused.returncode == 2
    assert "loopback" in refused.stderr
