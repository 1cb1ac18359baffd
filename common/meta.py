"""What the service says about itself: the root document, the OpenAPI spec, the Swagger UI
and its metrics.

The OpenAPI document is one file, `openapi.yaml`, the source of truth for the API's shape.
The Swagger UI's assets come from the swagger-ui-bundle package, so no page loads a CDN.
"""

from __future__ import annotations

import functools
import json
import mimetypes
from collections.abc import Callable
from importlib import metadata, resources
from pathlib import Path
from typing import Any

import yaml
from flask import Request, Response

from common import metrics, routes
from common.config import Settings
from common.errors import NotFound
from common.runtime import Runtime

SOFTWARE = "Operator service"


def serve(route: routes.Route, request: Request, runtime: Callable[[], Runtime]) -> Response:
    if route.path == "/":
        return _json(about(runtime().settings))
    if route.path == "/healthz":
        return _json(health(runtime()))
    if route.path == "/spec":
        return Response(spec_json(), mimetype="application/json")
    if route.path == "/metrics":
        return Response(metrics.exposition(), content_type=metrics.CONTENT_TYPE)
    if request.path == routes.DOCS_UNSLASHED:  # the page's relative asset links need the slash
        return Response(status=308, headers={"Location": routes.DOCS})
    return docs_asset(request.path.removeprefix(routes.DOCS))


def about(settings: Settings) -> dict[str, Any]:
    """The original's root document, plus what an operator must not miss."""
    return {
        "software": SOFTWARE,
        "version": version(),
        "address": settings.operator_address,
        # The original echoed these variables as strings; clients parse them.
        "algoTimeLimit": _text(settings.algo_pod_timeout),
        "storageExpiry": _text(settings.storage_expiry),
        "signatureRequired": settings.signature_required,
        "cluster": settings.cluster,
        "warnings": settings.warnings(),
    }


def health(rt: Runtime) -> dict[str, str]:
    """What a readiness probe asks: can this instance reach its database? Raises Unavailable
    (503) when it cannot, so the platform sends it no traffic until it can."""
    rt.db.query("SELECT 1")
    return {"database": "ok", "cluster": rt.cluster.mode}


@functools.cache
def version() -> str:
    try:
        return metadata.version("operator-service")
    except metadata.PackageNotFoundError:
        return "unknown"


@functools.cache
def spec() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(
        resources.files("common").joinpath("openapi.yaml").read_text()
    )
    document["info"]["version"] = version()
    return document


@functools.cache
def spec_json() -> str:
    return json.dumps(spec())


def docs_asset(name: str) -> Response:
    if name in ("", "index.html"):
        page = resources.files("common").joinpath("docs.html").read_text()
        return Response(page, mimetype="text/html")
    if name == "operator-init.js":
        script = resources.files("common").joinpath("docs.js").read_text()
        return Response(script, mimetype="text/javascript")
    # Only the files the bundle ships, by name: no path is built from what the caller sent.
    path = _swagger_assets().get(name)
    if path is None:
        raise NotFound("No such file")
    mimetype = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return Response(
        path.read_bytes(), mimetype=mimetype, headers={"Cache-Control": "public, max-age=86400"}
    )


@functools.cache
def _swagger_assets() -> dict[str, Path]:
    from swagger_ui_bundle import swagger_ui_path

    folder = Path(str(swagger_ui_path)).resolve()
    return {path.name: path for path in folder.iterdir() if path.is_file()}


def _json(body: Any) -> Response:
    return Response(json.dumps(body), mimetype="application/json")


def _text(value: int | None) -> str | None:
    return None if value is None else str(value)
