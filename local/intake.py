"""When a request's bytes are all in: the event loop reads each request this far before a thread
takes it, so a client that sends slowly holds a buffer, not one of the few threads.

A thread still reads what this cannot delimit cheaply (a chunked body, a declared body too big to
keep, a malformed head): gunicorn and the application refuse those or read them under a socket
timeout.
"""

from __future__ import annotations

# The whole head, request line included, kept in memory at most; beyond it a thread reads on and
# gunicorn's own limits answer.
MAX_HEAD = 1024 * 1024
# Declared bodies up to this are read by the event loop (the API's default limit is 4 MiB);
# a larger one goes to a thread, where the application answers 413 before reading it.
MAX_BODY = 8 * 1024 * 1024

HEAD_END = b"\r\n\r\n"


def complete(received: bytes | bytearray) -> bool:
    """Whether a thread can take the request now: all of it is in, or it is one the thread
    must read or refuse itself."""
    end = received.find(HEAD_END)
    if end < 0:
        return len(received) > MAX_HEAD
    length = declared_length(bytes(received[:end]))
    if length is None or length > MAX_BODY:
        return True
    return len(received) >= end + len(HEAD_END) + length


def declared_length(head: bytes) -> int | None:
    """The body length a head declares: 0 without a body, None when only reading can tell
    (Transfer-Encoding) or the head is malformed (gunicorn refuses it)."""
    lengths = []
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            return None
        name = name.strip().lower()
        if name == b"transfer-encoding":
            return None
        if name == b"content-length":
            lengths.append(value.strip())
    if not lengths:
        return 0
    if len(lengths) > 1 or not lengths[0].isdigit():  # bytes: ASCII digits only
        return None
    return int(lengths[0])
