"""What the service counts, for Prometheus: `GET /metrics` reads it.

Counters live in the process's memory and a scrape only formats them: it never queries the
database, so its cost does not grow with the jobs. Every label takes its values from a closed
set (the route table's paths, a handful of methods, fixed reasons), so no caller can make the
number of series grow by sending odd paths or methods.

One process, one set of counts: functions-framework serves a pod from one worker process with
threads. The local run's several worker processes count in files of PROMETHEUS_MULTIPROC_DIR
(prometheus_client's multiprocess mode), which a scrape sums; the process's own CPU and memory
are then left out, as they would describe one worker of several.
"""

from __future__ import annotations

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

# No `_created` twin of every series: twice the series, for little use.
disable_created_metrics()  # type: ignore[no-untyped-call]
CONTENT_TYPE = CONTENT_TYPE_LATEST
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})
UNMATCHED = "unmatched"  # the route label of a path the route table does not have

# Why a caller was refused by common.auth; each is a label value, made at 0 from the start.
AUTH_REASONS = (
    "signature_missing",
    "signature_invalid",
    "signer_not_allowed",
    "nonce_outside_window",
    "nonce_reused",
    "admin_missing",
    "admin_invalid",
)
DEPENDENCIES = ("database", "cluster", "storage")

REQUESTS = Counter(
    "operator_requests",
    "Requests answered, by the route table's path, method and status code",
    ["route", "method", "status"],
)
LATENCY = Histogram(
    "operator_request_duration_seconds",
    "Time from a request's arrival at its function to its answer (for a streamed download, "
    "to its first byte)",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
AUTH_REJECTIONS = Counter(
    "operator_auth_rejections",
    "Calls refused by authentication (signature, allowlist, nonce, Admin header), by reason",
    ["reason"],
)
DEPENDENCY_ERRORS = Counter(
    "operator_dependency_errors",
    "Failures reaching PostgreSQL, the Kubernetes API or the result storage (a failure the "
    "service retried on a fresh connection counts too)",
    ["dependency"],
)
for _reason in AUTH_REASONS:
    AUTH_REJECTIONS.labels(_reason)
for _dependency in DEPENDENCIES:
    DEPENDENCY_ERRORS.labels(_dependency)


def observe_request(route: str, method: str, *, status: int, seconds: float) -> None:
    method = method if method in METHODS else "other"
    REQUESTS.labels(route, method, str(status)).inc()
    LATENCY.labels(route, method).observe(seconds)


def rejected(reason: str) -> None:
    AUTH_REJECTIONS.labels(reason).inc()


def dependency_failed(dependency: str) -> None:
    DEPENDENCY_ERRORS.labels(dependency).inc()


def exposition() -> bytes:
    """Every metric of this process in Prometheus's text format, its own included (CPU,
    memory, open files, garbage collection); with several processes, their sums."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry)
    return generate_latest(REGISTRY)
