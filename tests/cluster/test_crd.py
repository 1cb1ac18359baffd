"""The WorkFlow CRD's schema, judged by the real API server: what the service writes is
accepted, a malformed WorkFlow is rejected."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from common.jobs import cluster_object, engine_stage, workflow_document
from local.controlplane import ControlPlane
from tests.provider import stage


def create(plane: ControlPlane, obj: dict[str, Any]) -> str:
    return plane.kubectl("create", "-f", "-", "-o", "name", stdin=json.dumps(obj))


def valid(name: str) -> dict[str, Any]:
    return cluster_object(workflow_document(name, "ocean-compute", engine_stage(stage()), 137))


def test_the_workflow_the_service_writes_is_accepted(control_plane: ControlPlane) -> None:
    assert create(control_plane, valid("crd-ok")).strip() == "workflow.oceanprotocol.com/crd-ok"
    raw = valid("crd-raw")
    raw["spec"]["metadata"]["stages"][0]["algorithm"] = {"id": "", "rawcode": "print(1)"}
    raw["spec"]["metadata"]["chainId"] = None
    assert create(control_plane, raw)


def break_stages(obj: dict[str, Any]) -> None:
    obj["spec"]["metadata"]["stages"] = "not a list"


def two_stages(obj: dict[str, Any]) -> None:
    obj["spec"]["metadata"]["stages"].append(copy.deepcopy(obj["spec"]["metadata"]["stages"][0]))


def input_without_id(obj: dict[str, Any]) -> None:
    del obj["spec"]["metadata"]["stages"][0]["input"][0]["id"]


def no_algorithm(obj: dict[str, Any]) -> None:
    del obj["spec"]["metadata"]["stages"][0]["algorithm"]


def no_spec(obj: dict[str, Any]) -> None:
    del obj["spec"]


@pytest.mark.parametrize(
    "damage", [break_stages, two_stages, input_without_id, no_algorithm, no_spec]
)
def test_a_malformed_workflow_is_rejected(control_plane: ControlPlane, damage: Any) -> None:
    obj = valid(f"crd-bad-{damage.__name__.replace('_', '-')}")
    damage(obj)
    with pytest.raises(RuntimeError, match="is invalid"):
        create(control_plane, obj)
