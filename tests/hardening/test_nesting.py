"""Bodies nested deeper than any real payload are refused before they are parsed: a parser
recursing that deep overflows the C stack and kills the process with every request in it."""

from __future__ import annotations

import subprocess
import sys

import pytest
from flask.testing import FlaskClient

from common.http import MAX_JSON_DEPTH
from tests.conftest import ADMIN_SECRET, ROOT, function_client

DEEP = b"[" * 100_000
ROUTES = [
    ("start", "POST", "/api/v1/operator/compute"),
    ("stop", "PUT", "/api/v1/operator/compute"),
    ("status", "GET", "/api/v1/operator/compute"),
    ("result", "GET", "/api/v1/operator/getResult"),
    ("list", "GET", "/api/v1/operator/info"),
]  # /pgsqlinit reads no body at all


@pytest.mark.parametrize(("function", "method", "path"), ROUTES)
@pytest.mark.parametrize("body", [DEEP, b'{"workflow": ' + b"[" * 5000 + b"]" * 5000 + b"}"])
def test_deep_nesting_is_a_400_on_every_route(
    rt: object, function: str, method: str, path: str, body: bytes
) -> None:
    client: FlaskClient = function_client(function)
    # The admin routes read a body only from callers that passed the Admin header.
    headers = {"Admin": ADMIN_SECRET} if function == "list" else {}
    answer = client.open(
        path, method=method, data=body, content_type="application/json", headers=headers
    )
    assert answer.status_code == 400
    assert answer.json == {
        "error": f"The request body is nested deeper than {MAX_JSON_DEPTH} levels"
    }


def test_nothing_the_service_imports_raises_the_recursion_limit() -> None:
    """Every module the service and the local run load, in a fresh interpreter: the limit
    stays Python's own, which keeps a runaway recursion a RecursionError, not a crash."""
    script = (
        "import sys; before = sys.getrecursionlimit()\n"
        "import common.auth, common.http, common.jobs, common.results, local.run, engine.engine\n"
        "from functions_framework import create_app\n"
        "for name in ('start', 'stop', 'status', 'list', 'result', 'admin_init'):\n"
        "    create_app(target=name, source=f'functions/{name}/main.py')\n"
        "local.run.provider_address('0x' + '11' * 32)\n"
        "print(before, sys.getrecursionlimit())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True
    )
    before, after = done.stdout.split()
    assert after == before
