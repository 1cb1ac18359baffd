"""Clients that hold connections open, send slowly or send too much, against the local run's
real server: it keeps answering everyone else, drops them with a JSON 408 or 413, and does not
grow with what they send."""

from __future__ import annotations

import json
import selectors
import socket
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from tests.local.test_run import LocalRun

SLOW_CLIENTS = 256  # 32 times the local run's threads


def connect(run: LocalRun) -> socket.socket:
    host, port = run.url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=30)


def answer_of(conn: socket.socket) -> tuple[int, dict[str, str]]:
    """Read until the server closes; the status and JSON body of what it sent."""
    received = b""
    while chunk := conn.recv(65536):
        received += chunk
    return parsed(received)


def parsed(received: bytes) -> tuple[int, dict[str, str]]:
    head, _, body = received.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


def answers_of(conns: list[socket.socket]) -> list[tuple[int, dict[str, str]]]:
    """What each connection received before the server closed it, read as it arrives: a client
    still sending after the server's answer gets its connection reset, which may discard what it
    had not read yet."""
    received = {conn: b"" for conn in conns}
    with selectors.DefaultSelector() as selector:
        for conn in conns:
            selector.register(conn, selectors.EVENT_READ)
        while selector.get_map():
            events = selector.select(timeout=30)
            assert events, "a slow client was never answered"
            for key, _ in events:
                conn = key.fileobj
                assert isinstance(conn, socket.socket)
                try:
                    chunk = conn.recv(65536)
                except ConnectionResetError:
                    chunk = b""
                received[conn] += chunk
                if not chunk:
                    selector.unregister(conn)
    return [parsed(received[conn]) for conn in conns]


@contextmanager
def trickling(run: LocalRun, count: int) -> Iterator[list[socket.socket]]:
    """`count` connections that each send their request line one byte a second, for as long as
    the server keeps them (the slowloris attack)."""
    stop = threading.Event()
    with ExitStack() as stack:
        conns = [stack.enter_context(connect(run)) for _ in range(count)]
        for conn in conns:
            conn.sendall(b"G")

        def trickle() -> None:
            while not stop.wait(1.0):
                for conn in conns:
                    try:
                        conn.send(b"E")
                    except OSError:
                        pass  # dropped by the server: what the test wants

        sender = threading.Thread(target=trickle, daemon=True)
        sender.start()
        try:
            yield conns
        finally:
            stop.set()
            sender.join()


@pytest.mark.slow
def test_slow_clients_hold_no_thread_and_are_dropped_with_a_408(local_run: LocalRun) -> None:
    with trickling(local_run, SLOW_CLIENTS) as slow:
        # gunicorn's own worker gave each of them a thread, and stopped answering at the 8th.
        for _ in range(20):
            with urllib.request.urlopen(local_run.url + "/", timeout=10) as response:
                assert response.status == 200
        # They never stop sending: only the server's head deadline ends them.
        answers = answers_of(slow)
    assert all(answer == (408, {"error": answers[0][1]["error"]}) for answer in answers)
    assert "too slowly" in answers[0][1]["error"]


@pytest.mark.slow
def test_a_silent_client_and_stalled_bodies_are_dropped(local_run: LocalRun) -> None:
    head = (
        b"POST /api/v1/operator/compute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    )
    with connect(local_run) as silent, connect(local_run) as stalled, connect(local_run) as chunked:
        stalled.sendall(head + b"Content-Length: 100\r\n\r\n{}")
        # A chunked body is read by a thread, under the socket's receive timeout.
        chunked.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n64\r\n{}")
        assert answer_of(silent)[0] == 408
        assert answer_of(stalled)[0] == 408
        status, body = answer_of(chunked)
        assert (status, body["error"]) == (408, "The request body stopped before its end")


def test_pipelined_and_kept_alive_requests_are_all_answered(local_run: LocalRun) -> None:
    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    with connect(local_run) as conn:
        conn.sendall(request * 3)  # three at once, read whole by the event loop
        received = b""
        while received.count(b"HTTP/1.1 200") < 3:
            received += conn.recv(65536)
        conn.sendall(request + b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        while chunk := conn.recv(65536):
            received += chunk
    assert received.count(b"HTTP/1.1 200") == 5


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def server_workers(run: LocalRun) -> list[int]:
    """gunicorn's workers: the run's children with the run's own command line."""
    assert run.process is not None
    parent = run.process.pid
    own = Path(f"/proc/{parent}/cmdline").read_bytes()
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [int(c) for c in children if Path(f"/proc/{c}/cmdline").read_bytes() == own]


@pytest.mark.slow
def test_a_body_too_big_is_refused_while_it_streams_and_never_held(local_run: LocalRun) -> None:
    """300 MiB offered with a Content-Length and as one chunk that never ends: each gets its 413
    while the client is still sending, and no worker grows by what was sent."""
    size = 300 * 1024 * 1024
    before = {pid: rss_kib(pid) for pid in server_workers(local_run)}
    for framing in (
        b"Content-Length: %d\r\n\r\n" % size,
        b"Transfer-Encoding: chunked\r\n\r\n%x\r\n" % size,
    ):
        with connect(local_run) as conn:
            conn.sendall(
                b"POST /api/v1/operator/compute HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\n" + framing
            )
            sent, piece = 0, b"x" * (1024 * 1024)
            try:
                while sent < size:
                    conn.sendall(piece)
                    sent += len(piece)
            except OSError:
                pass  # the server closed after answering: the rest was never taken
            status, body = answer_of(conn)
        assert status == 413 and "larger than" in body["error"]
        assert sent < size / 4
    assert all(rss_kib(pid) - kib < 64 * 1024 for pid, kib in before.items())  # whichever read
