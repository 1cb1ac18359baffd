"""What every function answers: the root document, the OpenAPI spec, the Swagger UI, and
clear errors for routes that do not exist or belong to another function."""

from __future__ import annotations

from importlib import metadata

import pytest
from flask.testing import FlaskClient

from common import routes
from tests.conftest import function_client


def test_root_document(status: FlaskClient) -> None:
    response = status.get("/")
    assert response.status_code == 200
    assert response.json == {
        "software": "Operator service",
        "version": "0.1.0",
        "address": "0x0000000000000000000000000000000000000001",
        "algoTimeLimit": "3600",
        "storageExpiry": "604800",
        "signatureRequired": True,
        "cluster": "off",
        "warnings": ["no Kubernetes cluster configured: workflows are stored, not registered"],
    }


@pytest.mark.parametrize("name", routes.FUNCTIONS)
def test_every_function_answers_the_shared_routes(rt: object, name: str) -> None:
    client = function_client(name)
    assert client.get("/").json["software"] == "Operator service"
    spec = client.get("/spec").json
    assert spec["openapi"].startswith("3.")
    assert spec["info"]["version"] == metadata.version("operator-service")  # pyproject's
    unslashed = client.get("/api/v1/docs")
    assert (unslashed.status_code, unslashed.headers["Location"]) == (308, "/api/v1/docs/")
    page = client.get("/api/v1/docs/")
    assert page.status_code == 200 and b"swagger-ui-bundle.js" in page.data
    assert b"http" not in page.data.replace(b"http-equiv", b"")  # no CDN, no remote asset
    assert client.get("/api/v1/docs/swagger-ui-bundle.js").status_code == 200
    assert client.get("/api/v1/docs/operator-init.js").status_code == 200
    script = client.get("/api/v1/docs/operator-init.js").data
    assert b"validatorUrl: null" in script  # no badge from the validator's site


def test_health_reaches_the_database(status: FlaskClient) -> None:
    response = status.get("/healthz")
    assert (response.status_code, response.json) == (200, {"database": "ok", "cluster": "off"})


def test_the_spec_documents_exactly_the_route_table(status: FlaskClient) -> None:
    spec = status.get("/spec").json
    documented = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    assert documented == {(r.method, r.path) for r in routes.ROUTES}


def test_docs_assets_cannot_escape_their_folder(status: FlaskClient) -> None:
    for path in ("/api/v1/docs/../../etc/passwd", "/api/v1/docs/%2e%2e/x", "/api/v1/docs/nope.js"):
        assert status.get(path).status_code == 404


def test_unknown_routes_and_methods(status: FlaskClient) -> None:
    missing = status.get("/api/v1/operator/nothing")
    assert (missing.status_code, missing.json) == (
        404,
        {"error": "No such route: /api/v1/operator/nothing"},
    )
    wrong = status.patch("/api/v1/operator/compute")
    assert wrong.status_code == 405
    assert wrong.headers["Allow"] == "POST, PUT, DELETE, GET"


def test_a_route_of_another_function(status: FlaskClient) -> None:
    response = status.post("/api/v1/operator/compute", json={})
    assert (response.status_code, response.json) == (
        404,
        {"error": "POST /api/v1/operator/compute is served by the start function"},
    )


def test_a_misconfigured_service_says_so_without_details(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """No runtime installed: the first request reads the environment, which names no database."""
    from common import runtime

    runtime.install(None)
    for name in ("POSTGRES_HOST", "ALLOWED_PROVIDERS", "SIGNATURE_REQUIRED"):
        monkeypatch.delenv(name, raising=False)
    response = function_client("status").get("/healthz")
    assert (response.status_code, response.json) == (
        503,
        {"error": "The service is misconfigured; its log says how"},
    )
    assert "POSTGRES_HOST: required" in caplog.text
