"""Writes deploy/grafana/operator-service.json, the Grafana dashboard over the service's metrics.

    python deploy/grafana/generate.py          # rewrite the dashboard
    python deploy/grafana/generate.py --check  # exit 1 if the checked-in file has drifted

The panels are listed below as (title, unit, queries); the layout, the datasource variable
and Grafana's boilerplate come from one place. The tests check that every metric a query
names is one the functions or the engine export.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "operator-service.json"
WINDOW = "$__rate_interval"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# (title, unit, [(PromQL, legend)]) per panel, in rows of two.
API = [
    (
        "Requests per second by route",
        "reqps",
        [(f"sum by (route) (rate(operator_requests_total[{WINDOW}]))", "{{route}}")],
    ),
    (
        "Answers by status code",
        "reqps",
        [(f"sum by (status) (rate(operator_requests_total[{WINDOW}]))", "{{status}}")],
    ),
    (
        "Latency p50 and p99 by route",
        "s",
        [
            (
                f"histogram_quantile({q}, sum by (le, route) "
                f"(rate(operator_request_duration_seconds_bucket[{WINDOW}])))",
                f"p{int(q * 100)} {{{{route}}}}",
            )
            for q in (0.5, 0.99)
        ],
    ),
    (
        "Authentication refusals by reason",
        "reqps",
        [(f"sum by (reason) (rate(operator_auth_rejections_total[{WINDOW}]))", "{{reason}}")],
    ),
    (
        "Failures reaching PostgreSQL, Kubernetes, result storage",
        "ops",
        [
            (
                f"sum by (dependency) (rate(operator_dependency_errors_total[{WINDOW}]))",
                "{{dependency}}",
            )
        ],
    ),
    (
        "CPU cores used per pod",
        "short",
        [(f"rate(process_cpu_seconds_total[{WINDOW}])", "{{pod}}")],
    ),
    (
        "Resident memory per pod",
        "bytes",
        [("process_resident_memory_bytes", "{{pod}}")],
    ),
]
ENGINE = [
    (
        "Jobs waiting",
        "short",
        [("max by (environment) (engine_queue_length)", "{{environment}}")],
    ),
    (
        "Oldest waiting job",
        "s",
        [("max by (environment) (engine_queue_oldest_age_seconds)", "{{environment}}")],
    ),
    (
        "Jobs held by the engines, by status",
        "short",
        [("sum by (status) (engine_jobs)", "{{status}}")],
    ),
    (
        "Jobs finished per hour, by how they ended",
        "short",
        [("sum by (outcome) (increase(engine_jobs_finished_total[1h]))", "{{outcome}}")],
    ),
    (
        "Stage duration p50 and p95",
        "s",
        [
            (
                f"histogram_quantile({q}, sum by (le, stage) "
                f"(rate(engine_stage_duration_seconds_bucket[{WINDOW}])))",
                f"p{int(q * 100)} {{{{stage}}}}",
            )
            for q in (0.5, 0.95)
        ],
    ),
    (
        "Stage endings: failures, timeouts, stops",
        "ops",
        [
            (
                "sum by (stage, ending) "
                f'(rate(engine_stage_duration_seconds_count{{ending!="succeeded"}}[{WINDOW}]))',
                "{{stage}} {{ending}}",
            )
        ],
    ),
    (
        "Claims by kind",
        "ops",
        [(f"sum by (kind) (rate(engine_jobs_claimed_total[{WINDOW}]))", "{{kind}}")],
    ),
    (
        "Seconds since each engine's loop turned",
        "s",
        [("time() - engine_last_turn_timestamp_seconds", "{{pod}}")],
    ),
]


def dashboard() -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    y = 0
    for row_title, row in (("API functions", API), ("Engine", ENGINE)):
        panels.append(
            {
                "type": "row",
                "title": row_title,
                "id": len(panels) + 1,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": y},
                "panels": [],
            }
        )
        y += 1
        for position, (title, unit, queries) in enumerate(row):
            x = 12 * (position % 2)
            panels.append(_timeseries(len(panels) + 1, title, unit, queries, x, y))
            if x:
                y += 8
        y += 8 if len(row) % 2 else 0
    return {
        "title": "Operator service",
        "uid": "operator-service",
        "description": "Requests, authentication, dependencies and the engine's jobs and queue "
        "(metrics: docs/contract.md, docs/observability.md)",
        "tags": ["operator-service", "compute-to-data"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Prometheus",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                }
            ]
        },
        "panels": panels,
    }


def _timeseries(
    panel_id: int, title: str, unit: str, queries: list[tuple[str, str]], x: int, y: int
) -> dict[str, Any]:
    return {
        "type": "timeseries",
        "id": panel_id,
        "title": title,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": 12, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [
            {
                "refId": chr(ord("A") + n),
                "datasource": DATASOURCE,
                "expr": expr,
                "legendFormat": legend,
            }
            for n, (expr, legend) in enumerate(queries)
        ],
    }


def rendered() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main(argv: list[str]) -> int:
    text = rendered()
    if "--check" in argv:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(
                "deploy/grafana: operator-service.json drifted; run python "
                "deploy/grafana/generate.py",
                file=sys.stderr,
            )
            return 1
        return 0
    OUTPUT.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
