"""HTTP for every function: routing within a function, request data, responses, and errors.

`function(name, handlers)` makes a function's entry point. It answers the routes every
function shares (`/`, `/spec`, the Swagger UI), dispatches the function's own routes, and is
the one place where errors become responses: a `ServiceError` as `{"error": message}` with
its status, anything else as a generic 500 whose log line names the bug but shows no data.
"""

from __future__ import annotations

import io
import json
import logging
import re
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from flask import Request, Response

from common import logs, meta, metrics, routes, runtime
from common.config import Settings
from common.errors import (
    BadRequest,
    ConfigError,
    MethodNotAllowed,
    NotFound,
    PayloadTooLarge,
    RangeNotSatisfiable,
    RequestTimeout,
    ServiceError,
    Unavailable,
)
from common.runtime import Chore, Runtime

log = logging.getLogger(__name__)

Handler = Callable[[Request, Runtime], Response]
Entry = Callable[[Request], Response]
JSON_TYPES = ("application/json",)
# Far deeper than any real payload (a workflow is about ten levels), far shallower than what
# could exhaust a stack.
MAX_JSON_DEPTH = 64
# What the nesting scan looks at: an escape (two bytes, so an escaped quote is skipped whole),
# a quote, or a bracket.
JSON_STRUCTURE = re.compile(rb'\\.|["\[\]{}]', re.DOTALL)


def function(
    name: str, handlers: Mapping[tuple[str, str], Handler], chores: tuple[Chore, ...] = ()
) -> Entry:
    """The entry point of function `name`; `handlers` maps (method, path under the API prefix)
    to a handler, and must cover exactly this function's routes in the route table. Its
    `chores`, and the pruning of nonces every function does, start with its first request."""
    chores = (runtime.NONCE_PRUNING, *chores)
    own = {(route.method, route.path) for route in routes.of_function(name)}
    table = {
        (method, routes.PREFIX + path): handler for (method, path), handler in handlers.items()
    }
    if set(table) != own:
        raise ValueError(f"function {name!r} handlers do not match the route table")

    def entry(request: Request) -> Response:
        started = time.perf_counter()
        rid = logs.request_id(request.headers.get("X-Request-Id"))
        token = logs.REQUEST_ID.set(rid)
        route = routes.find(request.method, request.path)
        try:
            response = answer(request, route)  # an answer for every error, bugs included
        finally:
            logs.REQUEST_ID.reset(token)
        response.headers["X-Request-Id"] = rid
        metrics.observe_request(
            route.path if route else metrics.UNMATCHED,
            request.method,
            status=response.status_code,
            seconds=time.perf_counter() - started,
        )
        return response

    def answer(request: Request, route: routes.Route | None) -> Response:
        try:
            if route is None:
                raise _no_route(request)
            if route.everywhere:
                return meta.serve(route, request, _runtime)
            handler = table.get((route.method, route.path))
            if handler is None:
                raise NotFound(
                    f"{route.method} {route.path} is served by the {route.function} function"
                )
            rt = _runtime()
            runtime.start_chores(chores)
            return handler(request, rt)
        except ServiceError as exc:
            return error_response(exc)
        except Exception as exc:  # a bug: say where, never what (values may be private)
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            log.error(
                "unhandled %s at %s:%s in %s %s",
                type(exc).__name__,
                frame.filename,
                frame.lineno,
                request.method,
                request.path,
            )
            return json_response({"error": "Internal server error"}, status=500)
        finally:
            # functions-framework reads whatever body is left after every answer (its
            # `read_request`), into memory and without a limit: a refused gigabyte would be read
            # all the same. What this function did not read is left to the HTTP server, which
            # drains a little of it or closes the connection.
            request.stream = io.BytesIO()  # werkzeug's cached property, settable by design

    entry.__name__ = entry.__qualname__ = name
    return entry


def request_data(request: Request, settings: Settings) -> dict[str, Any]:
    """The query string when it has any parameter, otherwise the JSON body (contract 1)."""
    if request.args:
        return {key: request.args[key] for key in request.args}
    if request.content_length is not None and request.content_length > settings.max_request_bytes:
        raise _too_large(settings)
    try:
        body = request.stream.read(settings.max_request_bytes + 1)
    except OSError:  # the server's read timed out, or the client left
        raise RequestTimeout("The request body stopped before its end") from None
    if len(body) > settings.max_request_bytes:
        raise _too_large(settings)
    if not body.strip():
        return {}
    if request.mimetype not in JSON_TYPES and not request.mimetype.endswith("+json"):
        raise BadRequest("The request body must be JSON (Content-Type: application/json)")
    if nesting_exceeds(body, MAX_JSON_DEPTH):
        raise BadRequest(f"The request body is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        data = json.loads(body)
    except ValueError:  # also undecodable bytes
        raise BadRequest("The request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("The request body must be a JSON object")
    return data


def nesting_exceeds(body: bytes, limit: int) -> bool:
    """Whether the JSON text opens more than `limit` arrays or objects inside each other,
    found without parsing it: a parser recursing that deep can overflow the C stack and kill
    the whole process. Stops at the first level too deep."""
    if body.count(b"[") + body.count(b"{") <= limit:
        return False
    depth, in_string = 0, False
    for token in JSON_STRUCTURE.finditer(body):
        mark = token.group()
        if mark == b'"':
            in_string = not in_string
        elif in_string:
            continue  # brackets and escapes inside a string
        elif mark in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return True
        elif mark in (b"]", b"}"):
            depth -= 1
    return False


def json_response(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, mimetype="application/json")


def json_text_response(text: str) -> Response:
    """A 200 of JSON made elsewhere (by PostgreSQL), passed on as it is."""
    return Response(text, mimetype="application/json")


def error_response(exc: ServiceError) -> Response:
    response = json_response({"error": exc.message}, status=exc.status)
    if isinstance(exc, MethodNotAllowed):
        response.headers["Allow"] = ", ".join(exc.allowed)
    if isinstance(exc, RangeNotSatisfiable) and exc.size is not None:
        response.headers["Content-Range"] = f"bytes */{exc.size}"
    return response


def _runtime() -> Runtime:
    try:
        return runtime.current()
    except ConfigError as exc:
        log.error("%s", exc)  # names variables, never secret values
        raise Unavailable("The service is misconfigured; its log says how") from None


def _no_route(request: Request) -> ServiceError:
    allowed = routes.methods_at(request.path)
    if allowed:
        return MethodNotAllowed(
            f"Method {request.method} is not allowed on {request.path}", allowed=allowed
        )
    return NotFound(f"No such route: {request.path}")


def _too_large(settings: Settings) -> PayloadTooLarge:
    return PayloadTooLarge(f"The request body is larger than {settings.max_request_bytes} bytes")
