"""schemathesis, driven by the OpenAPI document, against the local run with its control plane:
no 5xx, and every response conforms to the document.

`ignored_auth` is left out on purpose: it wants 401 for a missing Admin header, and the
contract (section 2) answers an empty header with 400; the wrong-header 401 is tested in
tests/functions."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from local.controlplane import ControlPlane
from tests.local.test_run import launch

MAX_EXAMPLES = 100


def test_fuzzing_from_the_openapi_document(control_plane: ControlPlane, tmp_path: Path) -> None:
    cluster = {"CLUSTER": "kubeconfig", "KUBECONFIG": str(control_plane.admin_kubeconfig)}
    with launch(tmp_path / ".data", control_plane="off", env=cluster) as run:
        done = subprocess.run(
            [
                str(Path(sys.executable).parent / "schemathesis"),
                "run",
                f"{run.url}/spec",
                "--checks",
                "all",
                "--exclude-checks",
                "ignored_auth",
                "--max-examples",
                str(MAX_EXAMPLES),
                "--phases",
                "examples,coverage,fuzzing",
                "--seed",
                "20261128",
                "-H",
                f"Admin: {run.admin}",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
            cwd=tmp_path,  # schemathesis keeps its cache in the working folder
        )
        log = run.log_path.read_text()
    cases = re.search(r"(\d+) generated", done.stdout)
    print(json.dumps({"fuzz_cases": int(cases.group(1)) if cases else None}))
    assert done.returncode == 0, done.stdout[-6000:]
    assert cases and int(cases.group(1)) > 500
    assert "unhandled" not in log and "Traceback" not in log
