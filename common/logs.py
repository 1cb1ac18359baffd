"""Log lines: which request each came from, and the JSON form (LOG_FORMAT=json) that log
pipelines parse: one object a line, with the request id when there is one.

The request id is the caller's `X-Request-Id` when it is a plain token (so that a Provider's or
a proxy's id follows the request through), else one made here; `common.http` sets it for each
request and returns it in the response's `X-Request-Id`.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import uuid
from contextvars import ContextVar

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
# What a caller's id may be: printable, no spaces, short enough for every log line.
CALLER_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


def request_id(sent: str | None) -> str:
    """The id of a request whose `X-Request-Id` was `sent`."""
    return sent if sent is not None and CALLER_ID.fullmatch(sent) else uuid.uuid4().hex


class RequestIdFilter(logging.Filter):
    """Gives every record the id of the request being served (`-` outside one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line. An exception is named, never traced: its frames may hold
    values a log line must not carry."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", "-")
        if rid != "-":
            line["request_id"] = rid
        if record.exc_info and record.exc_info[0] is not None:
            line["exception"] = record.exc_info[0].__name__
        return json.dumps(line, ensure_ascii=False)
