"""Result files: streamed from where the publishing stage put them, never buffered whole.

HTTP(S) URLs are fetched with the caller's Range passed through and the IPFS credentials
(`X-API-KEY`, `CLIENT-ID`) added to the outgoing request only. `file://` URLs are served only
from inside RESULTS_ROOT, after resolving links, so a stored URL cannot reach other files.
"""

from __future__ import annotations

import codecs
import functools
import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import urllib3
from flask import Request, Response, send_file
from werkzeug.datastructures import Range
from werkzeug.http import parse_range_header

from common import layout, metrics
from common.config import Settings
from common.errors import NotFound, RangeNotSatisfiable, Unavailable

log = logging.getLogger(__name__)

CHUNK_BYTES = 64 * 1024
PASSED_THROUGH = (
    "Content-Type",
    "Content-Length",
    "Content-Range",
    "Accept-Ranges",
    "ETag",
    "Last-Modified",
)
UNSAFE_IN_FILENAME = re.compile(r"[^A-Za-z0-9._+-]")


def stream(settings: Settings, request: Request, entry: dict[str, Any]) -> Response:
    url: str = entry["url"]
    parsed = urlparse(url)
    name = attachment_name(entry.get("filename"), parsed.path)
    if parsed.scheme == "file":
        response = _local_file(settings, request, Path(unquote(parsed.path)))
    elif parsed.scheme in ("http", "https"):
        response = _remote_file(settings, request, url)
    else:
        log.warning("result URL with unsupported scheme %r", parsed.scheme)
        raise NotFound("This result cannot be downloaded")
    response.headers["Content-Disposition"] = f"attachment;filename={name}"
    response.headers["Access-Control-Expose-Headers"] = "Content-Disposition"
    return response


def stage_log(settings: Settings, job_id: str, component: str) -> Iterator[str] | None:
    """A stage's log as an engine on this machine keeps it (common/layout.py), read
    in blocks with its control characters escaped; None when there is none here (the job runs
    in a cluster, or not yet)."""
    root = settings.results_root
    if root is None:
        return None
    try:
        path = layout.log_path(root, job_id, component).resolve()
        found = path.is_relative_to(root) and path.is_file()
    except (OSError, ValueError):  # a name no file can have (a NUL in it)
        return None
    return _escaped_blocks(path) if found else None


def escape_controls(text: str) -> str:
    """`text` with every control character but newline and tab written as `\\xNN`: a log
    is the stage's output, and an escape sequence must not reach an admin's terminal."""
    return text.translate(_CONTROLS)


_CONTROLS = {
    code: f"\\x{code:02x}" for code in (*range(32), *range(127, 160)) if code not in (9, 10)
}


def _escaped_blocks(path: Path) -> Iterator[str]:
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    with path.open("rb") as source:
        while block := source.read(CHUNK_BYTES):
            yield escape_controls(decoder.decode(block))
        yield escape_controls(decoder.decode(b"", final=True))


def attachment_name(filename: Any, url_path: str) -> str:
    """The file's stored name (or the URL's last segment), reduced to characters that cannot
    break out of the header."""
    raw = filename if isinstance(filename, str) and filename else url_path.rsplit("/", 1)[-1]
    safe = UNSAFE_IN_FILENAME.sub("_", raw.rsplit("/", 1)[-1])
    return safe or "result"


def honoured_range(request: Request) -> Range | None:
    """The one byte range the caller asked for, or None to send the whole file: no Range, or
    one RFC 9110 lets a server ignore (malformed, another unit, several ranges, which would
    need a multipart answer)."""
    raw = request.headers.get("Range")
    parsed = parse_range_header(raw) if raw else None
    if parsed is None or parsed.units != "bytes" or len(parsed.ranges) != 1:
        return None
    return parsed


def _local_file(settings: Settings, request: Request, path: Path) -> Response:
    root = settings.results_root
    try:
        resolved = path.resolve()
        found = root is not None and resolved.is_relative_to(root) and resolved.is_file()
    except (OSError, ValueError):  # a stored URL no file can have (a NUL in it)
        found = False
    if not found:
        log.warning("refused a file:// result outside RESULTS_ROOT or missing")
        raise NotFound("Result file not found")
    wanted = honoured_range(request)
    if wanted is None:
        request.environ.pop("HTTP_RANGE", None)  # ignored, as RFC 9110 allows: the whole file
    else:
        size = resolved.stat().st_size
        if wanted.range_for_length(size) is None:
            raise RangeNotSatisfiable("Requested range not satisfiable", size=size)
    # werkzeug answers Range and conditional requests itself and streams in blocks. The type
    # is the API document's: a result is a download, whatever its name suggests.
    return send_file(resolved, mimetype="application/octet-stream", conditional=True)


def _remote_file(settings: Settings, request: Request, url: str) -> Response:
    headers = {}
    if honoured_range(request) is not None:
        headers["Range"] = request.headers["Range"]
    if settings.ipfs_api_key:
        headers["X-API-KEY"] = settings.ipfs_api_key
    if settings.ipfs_client_id:
        headers["CLIENT-ID"] = settings.ipfs_client_id
    try:
        upstream = _pool().request(
            "GET",
            url,
            headers=headers,
            preload_content=False,
            redirect=True,
            timeout=urllib3.Timeout(connect=5, read=60),
            retries=urllib3.Retry(0, redirect=5),
        )
    except urllib3.exceptions.HTTPError as exc:
        log.warning("result storage unreachable: %s", type(exc).__name__)
        raise _unavailable() from None
    if upstream.status not in (200, 206):
        upstream.release_conn()
        if upstream.status == 404:
            raise NotFound("Result file not found in storage")
        if upstream.status == 416:
            total = upstream.headers.get("Content-Range", "").rpartition("/")[2]
            raise RangeNotSatisfiable(
                "Requested range not satisfiable", size=int(total) if total.isdecimal() else None
            )
        log.warning("result storage answered %s", upstream.status)
        raise _unavailable()
    response = Response(_chunks(upstream), status=upstream.status, direct_passthrough=True)
    for header in PASSED_THROUGH:
        if header in upstream.headers:
            response.headers[header] = upstream.headers[header]
    return response


def _chunks(upstream: urllib3.BaseHTTPResponse) -> Iterator[bytes]:
    try:
        yield from upstream.stream(CHUNK_BYTES)
    finally:
        upstream.release_conn()


@functools.cache
def _pool() -> urllib3.PoolManager:
    return urllib3.PoolManager(num_pools=8, maxsize=16)


def _unavailable() -> Unavailable:
    metrics.dependency_failed("storage")
    return Unavailable("Result storage unavailable")
