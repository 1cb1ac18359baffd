"""deploy/grafana's dashboard is generated, and queries only metrics the service exports."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from common import metrics
from engine import metrics as engine_metrics
from engine.snapshot import Snapshot

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
METRIC = re.compile(r"\b(?:operator|engine|process)_[a-z_]+\b")


def exported() -> set[str]:
    """Every series name the functions' and the engine's /metrics can answer with."""
    engine = CollectorRegistry()
    # An engine holding nothing, as its snapshot says.
    engine.register(engine_metrics.EngineCollector(lambda: Snapshot("engine-1")))
    text = metrics.exposition().decode() + generate_latest(engine).decode()
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
    return names


def test_the_checked_in_dashboard_is_what_the_generator_writes() -> None:
    spec = importlib.util.spec_from_file_location("dashboard", GRAFANA / "generate.py")
    assert spec is not None and spec.loader is not None
    generate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generate)
    assert generate.main(["--check"]) == 0


def test_every_query_names_an_exported_metric() -> None:
    board: dict[str, Any] = json.loads((GRAFANA / "operator-service.json").read_text())
    queries = [target["expr"] for panel in board["panels"] for target in panel.get("targets", [])]
    named = {name for expr in queries for name in METRIC.findall(expr)}
    assert len(queries) >= 15 and len(named) >= 12
    assert named <= exported(), named - exported()
