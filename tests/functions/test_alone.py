"""One function run alone the way functions-framework users run one (docs/deploying.md: "One function
alone"): the `functions-framework` command as a process, on a real port and the test database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from local.ports import free_port
from tests.provider import PROVIDER

ROOT = Path(__file__).resolve().parents[2]


def test_the_status_function_alone(pg_env: dict[str, str], schema_db: object) -> None:
    port = free_port()
    env = {
        "PATH": os.environ["PATH"],
        **pg_env,
        "ALLOWED_PROVIDERS": json.dumps([PROVIDER.address]),
        "ALLOWED_ADMINS": json.dumps(["alone-secret"]),
    }
    command = [
        str(Path(sys.executable).parent / "functions-framework"),
        "--target",
        "status",
        "--source",
        "functions/status/main.py",
        "--port",
        str(port),
    ]
    with subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    ) as server:
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(url + "/", timeout=2) as response:
                        about = json.load(response)
                    break
                except OSError:
                    assert server.poll() is None, server.stdout.read() if server.stdout else ""
                    assert time.monotonic() < deadline, "functions-framework never answered"
                    time.sleep(0.2)
            assert about["software"] == "Operator service"
            request = urllib.request.Request(
                url + "/api/v1/operator/runningjobs", headers={"Admin": "alone-secret"}
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                assert response.status == 200 and isinstance(json.load(response), list)
            signed = urllib.parse.urlencode(PROVIDER.signed(job_id="f" * 32))
            with urllib.request.urlopen(f"{url}/api/v1/operator/compute?{signed}") as response:
                assert json.load(response) == []
        finally:
            server.terminate()
            server.wait(timeout=30)
