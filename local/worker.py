"""gunicorn's thread worker, made to hold up in front of clients nobody vouches for.

- The event loop reads each request whole before a thread takes it (`local.intake`), and drops a
  client whose head is not in within `HEAD_SECONDS` or whose request is not within
  `REQUEST_SECONDS`: gunicorn's own worker gives a thread to a connection at its first byte, so
  as many slow clients as threads stopped the server answering anyone.
- What a thread still reads from a client (a chunked body, or what arrives while the requests
  being read hold `BUFFER_BUDGET` already) times out after `READ_SECONDS`.
- Closing a connection lingers for the client's last bytes in the event loop, where gunicorn's
  blocked the loop for up to two seconds per connection.
- The errors gunicorn answers itself (a malformed request line, oversized headers, a crash
  outside the application) are the API's JSON `{"error": ...}` instead of its HTML page, so that
  every answer of the local run is JSON (contract section 1). gunicorn decides the status and the
  message; this worker only changes how they are written.
"""

from __future__ import annotations

import errno
import html
import json
import re
import selectors
import socket
import struct
import time
from collections import deque
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from gunicorn import util
from gunicorn.workers.gthread import TConn, ThreadWorker

from local import intake

HEAD_SECONDS = 5.0
REQUEST_SECONDS = 10.0
READ_SECONDS = 10
LINGER_SECONDS = 2.0
LINGER_BYTES = 64 * 1024
# What the requests being read may hold in memory together (1,000 connections could otherwise
# hold 8 MiB each); past it, a request goes to a thread, which reads on under READ_SECONDS.
BUFFER_BUDGET = 64 * 1024 * 1024
# gunicorn's page: "HTTP/1.1 <code> <reason>" ... "</h1>" <message> "</body>".
STATUS_LINE = re.compile(rb"^HTTP/1\.1 (\d{3}) ([^\r\n]*)")
MESSAGE = re.compile(rb"</h1>\s*(.*?)\s*</body>", re.DOTALL)
TIMED_OUT_BODY = json.dumps({"error": "Request Timeout: the request came too slowly"}).encode()
TIMED_OUT = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: application/json\r\n"
    b"Content-Length: %d\r\n\r\n%s" % (len(TIMED_OUT_BODY), TIMED_OUT_BODY)
)


@dataclass(eq=False)
class _Arriving:
    """A request the event loop is reading."""

    conn: TConn
    head_by: float
    whole_by: float
    received: bytearray = field(default_factory=bytearray)
    gone: bool = False  # handed to a thread or dropped; the deadline queue forgets it lazily


@dataclass(eq=False)
class _Lingering:
    sock: socket.socket
    until: float
    drained: int = 0
    gone: bool = False


class _Conn(TConn):  # type: ignore[misc]
    """gunicorn's connection, whose graceful close lingers in the event loop."""

    def __init__(self, *args: Any, linger: Any) -> None:
        super().__init__(*args)
        self._linger = linger

    def close(self, graceful: bool = False) -> None:
        if graceful:
            self._linger(self.sock)
        else:
            util.close(self.sock)


class ServiceWorker(ThreadWorker):  # type: ignore[misc]
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.arriving: deque[_Arriving] = deque()  # in deadline order: one timeout for all
        self.lingering: deque[_Lingering] = deque()
        self.buffered = 0  # bytes held by the requests in `arriving`

    def accept(self, listener: socket.socket) -> None:
        try:
            sock, client = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        # The kernel's receive timeout holds whatever Python's blocking mode says: a thread's
        # read of a stalled chunked body fails after READ_SECONDS instead of waiting forever.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("ll", READ_SECONDS, 0))
        conn = _Conn(self.cfg, sock, client, listener.getsockname(), linger=self._start_lingering)
        self._read_request(conn)

    def on_client_socket_readable(self, conn: TConn, client: socket.socket) -> None:
        """A kept-alive connection's next request is starting."""
        self.poller.unregister(client)
        self.keepalived_conns.remove(conn)
        self._read_request(conn)

    def _read_request(self, conn: TConn) -> None:
        now = time.monotonic()
        request = _Arriving(conn, head_by=now + HEAD_SECONDS, whole_by=now + REQUEST_SECONDS)
        conn.sock.setblocking(False)
        self.arriving.append(request)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_bytes, request))

    def _on_bytes(self, request: _Arriving, sock: socket.socket) -> None:
        data = _received(sock)
        if data is None:
            return
        if not data:  # the client left
            self._forget(request)
            return
        request.received += data
        self.buffered += len(data)
        if intake.complete(request.received) or self.buffered > BUFFER_BUDGET:
            request.gone = True
            self.buffered -= len(request.received)
            self.poller.unregister(sock)
            conn = request.conn
            conn.init()  # the parser, once per connection; the local run speaks plain HTTP/1
            conn.parser.unreader.unread(bytes(request.received))
            conn.data_ready = True
            self.enqueue_req(conn)

    def _forget(self, request: _Arriving, answer: bytes = b"") -> None:
        request.gone = True
        self.buffered -= len(request.received)
        self.poller.unregister(request.conn.sock)
        self.nr_conns -= 1
        if answer:
            try:  # a few hundred bytes: the socket's buffer takes them at once
                request.conn.sock.send(answer)
            except OSError:
                pass
            self._start_lingering(request.conn.sock)
        else:
            util.close(request.conn.sock)

    def _start_lingering(self, sock: socket.socket) -> None:
        """RFC 9112 9.6: half-close, then read what the client still sends until it closes, so
        the kernel does not reset the connection under the answer's last bytes."""
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
        except OSError:
            util.close(sock)
            return
        lingering = _Lingering(sock, until=time.monotonic() + LINGER_SECONDS)
        self.lingering.append(lingering)
        self.poller.register(sock, selectors.EVENT_READ, partial(self._on_linger, lingering))

    def _on_linger(self, lingering: _Lingering, sock: socket.socket) -> None:
        data = _received(sock)
        if data is None:
            return
        lingering.drained += len(data)
        if not data or lingering.drained > LINGER_BYTES:
            self._stop_lingering(lingering)

    def _stop_lingering(self, lingering: _Lingering) -> None:
        lingering.gone = True
        self.poller.unregister(lingering.sock)
        util.close(lingering.sock)

    def murder_pending(self) -> None:
        """Runs about once a second in gunicorn's loop, beside its own timeouts."""
        super().murder_pending()
        now = time.monotonic()
        while self.arriving and (self.arriving[0].gone or self.arriving[0].whole_by <= now):
            request = self.arriving.popleft()
            if not request.gone:
                self._forget(request, TIMED_OUT)
        for request in self.arriving:  # the heads due by now, in the same order
            if request.head_by > now:
                break
            if not request.gone and intake.HEAD_END not in request.received:
                self._forget(request, TIMED_OUT)
        while self.lingering and (self.lingering[0].gone or self.lingering[0].until <= now):
            lingering = self.lingering.popleft()
            if not lingering.gone:
                self._stop_lingering(lingering)

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


def _received(sock: socket.socket) -> bytes | None:
    """What a readable non-blocking socket holds: None when nothing after all, b"" when the
    client closed or the connection broke."""
    try:
        return sock.recv(65536)
    except BlockingIOError:
        return None
    except OSError:
        return b""


class _Page:
    """Stands in for the client's socket while gunicorn writes its error page."""

    def __init__(self) -> None:
        self.written = b""

    def gettimeout(self) -> float:
        return 0.0  # "non-blocking": gunicorn then writes straight through sendall

    def sendall(self, data: bytes) -> None:
        self.written += data
