"""What an algorithm leaves behind is hostile too: its log output and its outputs folder. Each
test runs a real job whose algorithm tries to rewrite or flood its log, or to make publishing
follow a link, block, or break the answers that list results; and checks what was published."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask.testing import FlaskClient

from common.db import Database
from engine.engine import Engine
from tests.engine.conftest import algorithm_stage, get_result, signed_status, start_job
from tests.jobrows import log_of, wait_finished

FORGED = "2026-01-01T00:00:00Z engine: the algorithm exited with code 0 after 0.1 s"


@pytest.fixture(params=["bwrap", "unshare"])
def sandbox_tool(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def run(
    start: FlaskClient, db: Database, run_engine: Callable[..., Engine], code: str, **env: object
) -> dict[str, object]:
    engine = env.pop("engine", None)
    run_engine(engine=engine, **env)
    row = wait_finished(db, start_job(start, algorithm_stage(code)), timeout=60)
    assert row["status"] == 70
    return row


def test_the_algorithm_can_neither_erase_nor_forge_the_engines_lines(
    start: FlaskClient, db: Database, run_engine: Callable[..., Engine]
) -> None:
    code = (
        "import os, sys\n"
        "for attempt in (lambda: os.ftruncate(1, 0), lambda: os.lseek(1, 0, 0),\n"
        "                lambda: open('/proc/self/fd/1', 'w').truncate(0)):\n"
        "    try:\n"
        "        attempt()\n"
        "        print('REWROTE')\n"
        "    except OSError as exc:\n"
        "        print('refused', exc.strerror)\n"
        f"print({FORGED!r})\n"
        "print('https://user:hunter2@storage.example/data.csv?sig=abc123 fetched')\n"
    )
    row = run(start, db, run_engine, code)
    text = log_of(row, "algorithmLog")
    assert "REWROTE" not in text and text.count("refused") == 3
    assert " engine: algorithm starts: " in text.splitlines()[0]  # the engine's line is there
    assert f"(stage) {FORGED}" in text.splitlines()  # the forgery is marked as the stage's
    assert "https://storage.example/data.csv fetched" in text
    assert "hunter2" not in text and "abc123" not in text


def test_a_flood_of_output_stops_at_the_log_limit(
    start: FlaskClient, db: Database, run_engine: Callable[..., Engine]
) -> None:
    code = "import os\nline = b'y' * 1023 + b'\\n'\nfor _ in range(20 * 1024):\n    os.write(1, line)\nprint('END')\n"
    row = run(start, db, run_engine, code, engine={"logBytes": 1024 * 1024})
    text = log_of(row, "algorithmLog")
    assert len(text.encode()) < 1024 * 1024 + 4096
    assert "the log reached its limit here" in text and "END" not in text
    assert "exited with code 0" in text  # the algorithm was never blocked on its output


def test_a_linked_outputs_folder_publishes_nothing(
    start: FlaskClient, db: Database, run_engine: Callable[..., Engine]
) -> None:
    code = (
        "import os, shutil\n"
        "shutil.rmtree('/data/outputs')\n"
        "os.symlink('/data/inputs', '/data/outputs')\n"
        "open('/data/inputs/secret.csv', 'w').write('private')\n"
    )
    row = run(start, db, run_engine, code)
    assert not [e for e in row["outputs"] if e["type"] == "output"]  # type: ignore[union-attr]
    assert "/data/outputs is not a folder: nothing published" in log_of(row, "publishLog")


def test_links_fifos_and_unprintable_names_are_skipped_not_followed(
    start: FlaskClient,
    status: FlaskClient,
    result: FlaskClient,
    db: Database,
    run_engine: Callable[..., Engine],
) -> None:
    code = (
        "import os\n"
        "out = os.environ['OUTPUTS']\n"
        "os.symlink('/data/inputs', out + '/linked-folder')\n"
        "os.symlink('/etc/hostname', out + '/linked-file')\n"
        "os.mkfifo(out + '/fifo')\n"
        "open(out + '/two\\nlines.txt', 'w').write('x')\n"
        "open(os.path.join(out.encode(), b'latin-\\xe9.txt'), 'w').write('x')\n"
        "open(out + '/bell\\x07.txt', 'w').write('x')\n"
        "os.makedirs(out + '/deep/er')\n"
        "open(out + '/deep/er/kept.txt', 'w').write('kept')\n"
    )
    run_engine()
    job_id = start_job(start, algorithm_stage(code))
    row = wait_finished(db, job_id, timeout=60)
    published = [e["filename"] for e in row["outputs"] if e["type"] == "output"]
    assert published == ["deep/er/kept.txt"]
    text = log_of(row, "publishLog")
    for name in ("linked-folder", "linked-file", "fifo"):
        assert f"skipped {name}: not a regular file" in text
    for shown in ("two\\nlines.txt", "latin-\\udce9.txt", "bell\\x07.txt"):
        assert f"skipped {shown}: its name is not plain UTF-8 text" in text
    shown_results = signed_status(status, job_id)["results"]
    assert shown_results[0]["filename"] == "deep/er/kept.txt"
    assert get_result(result, job_id, 0).data == b"kept"


def test_the_number_of_outputs_is_capped(
    start: FlaskClient, db: Database, run_engine: Callable[..., Engine]
) -> None:
    code = (
        "import os\n"
        "for i in range(50):\n"
        "    open(os.path.join(os.environ['OUTPUTS'], f'out{i:02}'), 'w').write('x')\n"
    )
    row = run(start, db, run_engine, code, engine={"maxOutputs": 5})
    published = [e["filename"] for e in row["outputs"] if e["type"] == "output"]  # type: ignore[union-attr]
    assert published == [f"out{i:02}" for i in range(5)]
    assert "skipped out05: the job publishes 5 outputs at most" in log_of(row, "publishLog")
