"""Request ids and LOG_FORMAT=json: what an operator's log pipeline receives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from flask.testing import FlaskClient

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("abc-123", True),
        ("req/7:a@b", True),
        ("two words", False),
        ("x" * 129, False),
        (None, False),
    ],
)
def test_every_answer_carries_the_request_id(
    status: FlaskClient, sent: str | None, kept: bool
) -> None:
    headers = {"X-Request-Id": sent} if sent is not None else {}
    answered = status.get("/api/v1/operator/environments", headers=headers).headers["X-Request-Id"]
    if kept:
        assert answered == sent
    else:
        assert answered != sent and len(answered) == 32 and int(answered, 16) >= 0


def test_json_logs_are_one_object_a_line_with_the_request_id(tmp_path: Path) -> None:
    """A real process with LOG_FORMAT=json, whose database is out of reach: the warning it logs
    while answering is a JSON line naming the request, and no line is anything but JSON."""
    program = (
        "from functions_framework import create_app\n"
        "app = create_app('status', 'functions/status/main.py')\n"
        "answer = app.test_client().get('/api/v1/operator/environments',"
        " headers={'X-Request-Id': 'trace-42'})\n"
        "print(answer.status_code, answer.headers['X-Request-Id'])\n"
    )
    env = {
        "PATH": os.environ["PATH"],
        "POSTGRES_HOST": str(tmp_path / "no-server-here"),
        "SIGNATURE_REQUIRED": "0",
        "LOG_FORMAT": "json",
    }
    done = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.stdout.split() == ["503", "trace-42"], done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines()]  # every line is JSON
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    warned = [line for line in lines if "cannot connect to PostgreSQL" in line["message"]]
    assert warned and all(line["request_id"] == "trace-42" for line in warned)
    assert all("Traceback" not in line["message"] for line in lines)


def test_an_unknown_log_format_is_a_configuration_error() -> None:
    from common.config import Settings

    with pytest.raises(Exception, match="LOG_FORMAT: 'xml' is not one of text, json"):
        Settings.from_env({"POSTGRES_HOST": "db", "SIGNATURE_REQUIRED": "0", "LOG_FORMAT": "xml"})
