"""GET /metrics on every function: scraped and parsed with prometheus-client's own parser.

The counts belong to the test process, which every earlier test added to: each test compares
a scrape after its calls with one before them.
"""

from __future__ import annotations

import time

import pytest
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from common import metrics, routes, runtime
from common.config import Settings
from common.runtime import Runtime
from tests.conftest import function_client
from tests.functions.test_unavailable import closed_port
from tests.provider import PROVIDER, STRANGER

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
COMPUTE = routes.PREFIX + "/compute"


def scrape(client: FlaskClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.get_data(as_text=True))
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.mark.parametrize("name", routes.FUNCTIONS)
def test_every_function_serves_its_metrics(rt: object, name: str) -> None:
    client = function_client(name)
    client.get("/")
    samples = scrape(client)
    names = {sample_name for sample_name, _ in samples}
    assert "operator_requests_total" in names
    assert "operator_request_duration_seconds_bucket" in names
    assert "process_cpu_seconds_total" in names  # the process's own, from prometheus-client
    for reason in ("signature_invalid", "nonce_reused", "admin_invalid"):
        assert ("operator_auth_rejections_total", frozenset({("reason", reason)})) in samples


def test_requests_are_counted_by_route_method_and_status(status: FlaskClient) -> None:
    before = scrape(status)
    status.get(COMPUTE, query_string=PROVIDER.signed(job_id="none-such"))
    status.get(COMPUTE, query_string=PROVIDER.signed(job_id="none-such"))
    status.get("/api/v1/operator/environments")
    status.post("/api/v1/operator/environments")
    after = scrape(status)

    def grew(route: str, method: str, code: str) -> float:
        labels = {"route": route, "method": method, "status": code}
        return value(after, "operator_requests_total", **labels) - value(
            before, "operator_requests_total", **labels
        )

    assert grew(COMPUTE, "GET", "200") == 2
    assert grew(routes.PREFIX + "/environments", "GET", "200") == 1
    # A method the path does not have is no route of the table: counted as unmatched.
    assert grew(metrics.UNMATCHED, "POST", "405") == 1
    latency = "operator_request_duration_seconds_count"
    labels = {"route": COMPUTE, "method": "GET"}
    assert value(after, latency, **labels) - value(before, latency, **labels) == 2


def test_what_a_caller_sends_cannot_make_new_series(status: FlaskClient) -> None:
    """Paths and methods come from strangers; the labels take a closed set of values."""
    before = scrape(status)
    for n in range(40):
        status.get(f"/no/such/path/{n}")
        status.open("/", method=f"BREW{n}")
    after = scrape(status)
    assert set(after) - set(before) <= {
        ("operator_requests_total", frozenset({("route", r), ("method", m), ("status", s)}))
        for r, m, s in [(metrics.UNMATCHED, "GET", "404"), (metrics.UNMATCHED, "other", "405")]
    } | {
        (name, labels)
        for name, labels in after
        if name.startswith("operator_request_duration_seconds")
        and ("route", metrics.UNMATCHED) in labels
    }
    labels = {"route": metrics.UNMATCHED, "method": "other", "status": "405"}
    assert (
        value(after, "operator_requests_total", **labels)
        - value(before, "operator_requests_total", **labels)
        == 40
    )


def test_authentication_refusals_are_counted_by_reason(
    status: FlaskClient, result: FlaskClient
) -> None:
    before = scrape(status)
    used = PROVIDER.signed(job_id="j")
    status.get(COMPUTE, query_string={k: v for k, v in used.items() if k != "providerSignature"})
    status.get(COMPUTE, query_string={**used, "providerSignature": "0x1234"})
    status.get(COMPUTE, query_string=STRANGER.signed(job_id="j"))
    status.get(COMPUTE, query_string=PROVIDER.signed(job_id="j", nonce=time.time_ns() - 10**15))
    status.get(COMPUTE, query_string=used)
    status.get(COMPUTE, query_string=used)  # the same nonce again
    status.get(routes.PREFIX + "/runningjobs")
    result.get(routes.PREFIX + "/logs", headers={"Admin": "wrong"}, query_string={"jobId": "j"})
    after = scrape(status)
    name = "operator_auth_rejections_total"
    grown = {
        reason: value(after, name, reason=reason) - value(before, name, reason=reason)
        for reason in metrics.AUTH_REASONS
    }
    assert grown == dict.fromkeys(grown, 1)


def test_database_failures_are_counted_and_a_scrape_needs_no_database(
    base_settings: Settings, db: object
) -> None:
    unreachable = base_settings.replace(postgres_host="127.0.0.1", postgres_port=closed_port())
    built = Runtime.build(unreachable)
    runtime.install(built)
    try:
        status = function_client("status")
        before = scrape(status)  # answered with the database out of reach
        assert status.get("/api/v1/operator/environments").status_code == 503
        after = scrape(status)
    finally:
        runtime.install(None)
    failures = "operator_dependency_errors_total"
    grown = value(after, failures, dependency="database") - value(
        before, failures, dependency="database"
    )
    assert grown >= 1  # a read is retried once on a fresh connection: one or two failures
    assert value(after, failures, dependency="cluster") == value(
        before, failures, dependency="cluster"
    )
