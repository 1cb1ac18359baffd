"""A result store on loopback for getResult tests: serves bytes with Range, records headers.

It stands in for the S3/IPFS gateway the engine publishes to, which is out of reach here; it is
a plain HTTP server, so getResult's real HTTP client is what gets tested.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Storage:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.seen_headers: list[dict[str, str]] = []
        self.url = ""


@contextmanager
def serve(files: dict[str, bytes]) -> Iterator[Storage]:
    storage = Storage(files)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            storage.seen_headers.append(dict(self.headers.items()))
            body = storage.files.get(self.path.partition("?")[0].lstrip("/"))
            if body is None:
                self.send_response(404)
                self.end_headers()
                return
            start, end, status = 0, len(body) - 1, 200
            wanted = self.headers.get("Range")
            if wanted:
                first, _, last = wanted.removeprefix("bytes=").partition("-")
                start, end, status = int(first), min(int(last or end), end), 206
            self.send_response(status)
            self.send_header("Content-Type", "text/csv")
            self.send_header("Content-Length", str(end - start + 1))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{end}/{len(body)}")
            self.end_headers()
            self.wfile.write(body[start : end + 1])

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    storage.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield storage
    finally:
        server.shutdown()
        server.server_close()
