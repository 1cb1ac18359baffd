"""The README's walk-through on `make run` with its engine: a real algorithm over an input of
the data folder's inputs runs to 70 in a sandbox, its output downloads with a matching checksum,
its logs show; the seed's ALGO_POD_TIMEOUT ends a long algorithm."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.results import remove_tree
from local.compute import write_default_config
from local.run import provider_address
from tests import storage
from tests.local.test_opctl import opctl, opctl_json
from tests.local.test_run import LocalRun, launch
from tests.sandbox import require_bubblewrap

require_bubblewrap()

ALGORITHM = """\
import csv, os, time
rows = list(csv.DictReader(open("/data/inputs/0/0")))
time.sleep(1)  # long enough to be seen running
total = sum(int(row["value"]) for row in rows)
open(os.path.join(os.environ["OUTPUTS"], "total.txt"), "w").write(f"{total}\\n")
print(f"summed {len(rows)} rows")
"""


ALGO_POD_TIMEOUT = 5


@pytest.fixture(scope="module")
def engine_run() -> Iterator[LocalRun]:
    """A local run with its engine, in a folder the sandbox user can pass through (pytest's
    temporary folders are private to root)."""
    base = Path(tempfile.mkdtemp(prefix="local-engine-"))
    base.chmod(0o711)
    try:
        env = {"ALGO_POD_TIMEOUT": str(ALGO_POD_TIMEOUT)}
        data = base / ".data"
        # make run's environment, as on a machine without podman: no registry serves the
        # walk-through's python:3.11 here (pulls are tests/engine/test_images.py).
        data.mkdir()
        config = write_default_config(data)
        config.write_text(
            config.read_text().replace("    network:", "    runtime: host\n    network:")
        )
        with launch(data, control_plane="off", engine="on", env=env) as run:
            yield run
    finally:
        remove_tree(base)


def start_and_wait(run: LocalRun, algorithm: Path, *more: str) -> subprocess.CompletedProcess[str]:
    """`opctl start --wait` of a Python file, as the README's walk-through types it."""
    image = ("--image", "python", "--tag", "3.11", "--entrypoint", "python $ALGO")
    return opctl(run, "start", "--wait", *image, "--algorithm-file", str(algorithm), *more)


def test_the_banner_names_the_engine_and_its_environment_is_announced(
    engine_run: LocalRun,
) -> None:
    assert "engine: running jobs in sandboxes" in engine_run.output
    [env] = opctl_json(engine_run, "environments")
    assert (env["id"], env["maxJobs"], env["currentJobs"]) == ("ocean-compute", 2, 0)


def test_a_real_algorithm_runs_to_70_and_its_output_downloads_with_its_checksum(
    engine_run: LocalRun, tmp_path: Path
) -> None:
    (tmp_path / "sum.py").write_text(ALGORITHM)
    data = engine_run.data / "inputs" / "data.csv"  # the README's "Try it" puts it there
    data.write_bytes(b"name,value\na,40\nb,2\n")
    done = start_and_wait(engine_run, tmp_path / "sum.py", "--input", data.as_uri())
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    job_id = lines[0].split()[1]
    seen = [int(line.split()[2]) for line in lines]
    assert seen[-1] == 70 and 40 in seen and seen == sorted(seen)

    saved = opctl_json(engine_run, "result", job_id, "0", "-o", str(tmp_path / "total.txt"))
    assert (tmp_path / "total.txt").read_bytes() == b"42\n"
    assert saved["sha256"] == hashlib.sha256(b"42\n").hexdigest()

    log = opctl(engine_run, "logs", job_id, "algorithm")
    assert log.returncode == 0 and "summed 2 rows" in log.stdout


def test_opctl_verify_checks_the_receipt_and_names_what_was_tampered_with(
    engine_run: LocalRun, tmp_path: Path
) -> None:
    (tmp_path / "sum.py").write_text(ALGORITHM)
    data = engine_run.data / "inputs" / "verify.csv"
    data.write_bytes(b"name,value\na,1\n")
    done = start_and_wait(engine_run, tmp_path / "sum.py", "--input", data.as_uri())
    job_id = done.stdout.splitlines()[0].split()[1]

    checked = opctl_json(engine_run, "verify", job_id)
    assert {row["check"] for row in checked} >= {"signature", "output total.txt", "receipt.json"}
    assert all(row["result"] == "ok" for row in checked)
    operator = (engine_run.data / "operator.key").read_text().strip()
    assert f"signed by the operator {provider_address(operator)}" in {r["detail"] for r in checked}

    # Offline: a receipt downloaded earlier, its signature against the operator's address.
    [job] = opctl_json(engine_run, "status", job_id)
    index = [r["type"] for r in job["results"]].index("receipt")
    receipt = tmp_path / "receipt.json"
    opctl_json(engine_run, "result", job_id, str(index), "-o", str(receipt))
    offline = opctl(engine_run, "verify", "--receipt", str(receipt), "--operator", "0x" + "1" * 40)
    assert offline.returncode == 4 and "signature" in offline.stderr
    good = opctl(
        engine_run, "verify", "--receipt", str(receipt), "--operator", provider_address(operator)
    )
    assert good.returncode == 0, good.stderr

    # An output changed after the job: the receipt no longer holds, and says which file.
    published = engine_run.data / "results" / job_id / "published" / "outputs" / "total.txt"
    published.write_text("41\n")
    tampered = opctl(engine_run, "verify", job_id)
    assert tampered.returncode == 4
    assert "the receipt does not hold: output total.txt" in tampered.stderr

    # A receipt changed after the job (its claims, not its files): neither its published
    # sha256 nor its signature holds.
    served = engine_run.data / "results" / job_id / "receipt.json"
    served.write_text(served.read_text().replace('"outcome":"completed"', '"outcome":"failed"'))
    forged = opctl(engine_run, "verify", job_id)
    assert forged.returncode == 4
    assert "receipt.json, signature" in forged.stderr


def test_a_loopback_input_is_refused_by_the_default_environment(
    engine_run: LocalRun, tmp_path: Path
) -> None:
    (tmp_path / "sum.py").write_text(ALGORITHM)
    with storage.serve({"data.csv": b"name,value\na,1\n"}) as server:
        done = start_and_wait(engine_run, tmp_path / "sum.py", "--input", f"{server.url}/data.csv")
        assert server.seen_headers == []
    assert done.returncode == 4
    job_id = done.stdout.splitlines()[0].split()[1]
    log = opctl(engine_run, "logs", job_id, "configure")
    assert "is a loopback address" in log.stdout


def test_algo_pod_timeout_ends_a_long_algorithm(engine_run: LocalRun, tmp_path: Path) -> None:
    (tmp_path / "long.py").write_text("import time\ntime.sleep(60)")
    began = time.monotonic()
    done = start_and_wait(engine_run, tmp_path / "long.py")
    assert done.returncode == 4 and time.monotonic() - began < 40
    job_id = done.stdout.splitlines()[0].split()[1]
    [job] = opctl_json(engine_run, "status", job_id)
    assert (job["status"], job["stopreq"]) == (70, 2)


def test_wait_exits_4_when_the_algorithm_fails(engine_run: LocalRun, tmp_path: Path) -> None:
    (tmp_path / "fail.py").write_text("raise SystemExit(1)")
    done = start_and_wait(engine_run, tmp_path / "fail.py")
    assert done.returncode == 4
    assert "finished without outputs" in done.stderr


def test_the_engine_dies_with_the_run(tmp_path: Path) -> None:
    base = Path(tempfile.mkdtemp(prefix="local-engine-"))
    base.chmod(0o711)
    try:
        with launch(base / ".data", control_plane="off", engine="on") as run:
            assert run.process is not None
            engines = _engine_processes(base)
            assert len(engines) == 1
            os.kill(run.process.pid, signal.SIGKILL)
            run.process.wait()
            deadline = time.monotonic() + 20
            while _engine_processes(base) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert _engine_processes(base) == []
    finally:
        _stop_orphaned_postgres(base / ".data" / "postgres")
        remove_tree(base)


def _stop_orphaned_postgres(data: Path) -> None:
    """A run killed by SIGKILL cannot stop its embedded server: stop it for it."""
    pid_file = data / "postmaster.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, signal.SIGINT)  # PostgreSQL's fast shutdown
        deadline = time.monotonic() + 20
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)


def _engine_processes(base: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"engine" in cmdline and str(base).encode() in b" ".join(cmdline):
            found.append(int(entry.name))
    return found
