"""gunicorn's thread worker, with the errors gunicorn answers itself (a malformed request line,
oversized headers, a crash outside the application) in the API's JSON `{"error": ...}` instead of
its HTML page, so that every answer of the local run is JSON (contract section 1).

gunicorn decides the status and the message; this worker only changes how they are written.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

# gunicorn's page: "HTTP/1.1 <code> <reason>" ... "</h1>" <message> "</body>".
STATUS_LINE = re.compile(rb"^HTTP/1\.1 (\d{3}) ([^\r\n]*)")
MESSAGE = re.compile(rb"</h1>\s*(.*?)\s*</body>", re.DOTALL)


class JsonErrorWorker(ThreadWorker):  # type: ignore[misc]
    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        page = _Page()
        super().handle_error(req, page, addr, exc)
        status = STATUS_LINE.match(page.written)
        if status is None:  # not the page we know: send it as gunicorn wrote it
            util.write_nonblock(client, page.written)
            return
        code, reason = status.group(1).decode(), status.group(2).decode("latin-1")
        found = MESSAGE.search(page.written)
        message = html.unescape(found.group(1).decode("latin-1")) if found else ""
        body = json.dumps({"error": f"{reason}: {message}" if message else reason}).encode()
        head = (
            f"HTTP/1.1 {code} {reason}\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        util.write_nonblock(client, head.encode("latin-1") + body)


class _Page:
    """Stands in for the client's socket while gunicorn writes its error page."""

    def __init__(self) -> None:
        self.written = b""

    def gettimeout(self) -> float:
        return 0.0  # "non-blocking": gunicorn then writes straight through sendall

    def sendall(self, data: bytes) -> None:
        self.written += data
