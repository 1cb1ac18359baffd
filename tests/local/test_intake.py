"""When the event loop hands a request to a thread (`local.intake`)."""

from __future__ import annotations

import pytest

from local import intake


@pytest.mark.parametrize(
    ("received", "ready"),
    [
        (b"", False),
        (b"GET / HTTP/1.1\r\nHost: x\r\n", False),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", True),
        (b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\n{}", False),
        (b"POST / HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}", True),
        (b"POST / HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}GET / HTTP/1.1\r\n", True),
        # Read by a thread: a chunked body, a body too big to keep, a head gunicorn refuses.
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", True),
        (b"POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % (intake.MAX_BODY + 1), True),
        (b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n", True),
        (b"POST / HTTP/1.1\r\nContent-Length: \xd9\xa2\r\n\r\n", True),
        (b"POST / HTTP/1.1\r\nno colon\r\n\r\n", True),
        (b"GET /" + b"a" * intake.MAX_HEAD, True),
    ],
)
def test_a_request_is_handed_over_when_it_is_in_or_only_a_thread_can_tell(
    received: bytes, ready: bool
) -> None:
    assert intake.complete(received) is ready
