"""The algorithm in its own image through podman (runc), an image podman has here.

The image is made by the test (tests/images.py): a root file system of one static busybox,
`podman import`ed. Everything else is real: podman, runc, the container's limits. Pulling from a
registry is tests/engine/test_images.py."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from common.db import Database
from engine.container import PREFIX
from engine.engine import Engine
from tests import storage
from tests.engine.conftest import (
    algorithm_stage,
    start_job,
)
from tests.engine.test_receipts import receipt_of
from tests.engine.test_stops_and_timeouts import stop_job
from tests.images import import_busybox, podman, require_podman
from tests.jobrows import job_row, log_of, wait_finished, wait_for
from tests.netns import serving_host

IMAGE = "localhost/operator-test-busybox"
TAG = "1"


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    require_podman()
    import_busybox(f"{IMAGE}:{TAG}")
    yield f"{IMAGE}:{TAG}"
    podman("rmi", "--force", f"{IMAGE}:{TAG}")


@pytest.fixture
def run_engine(run_engine: Callable[..., Engine]) -> Callable[..., Engine]:
    """These tests' environment runs algorithms in their images, with podman."""
    return functools.partial(run_engine, runtime="podman")


def container_stage(entrypoint: str, image: str = IMAGE) -> dict[str, Any]:
    container = {"image": image, "tag": TAG, "entrypoint": entrypoint}
    return algorithm_stage("#", container=container)


def containers_of(job_id: str) -> list[str]:
    listed = podman("ps", "--all", "--quiet", "--filter", f"name={PREFIX}{job_id}-")
    return listed.stdout.split()


def test_the_algorithm_runs_in_its_image_read_only_as_nobody(
    image: str, start: FlaskClient, db: Database, run_engine: Callable[..., Engine]
) -> None:
    run_engine()
    entrypoint = (
        "readlink /bin/sh; id -u; touch /escaped || echo read-only root; "
        "python3 -V || echo no python here; echo 42 > $OUTPUTS/answer.txt"
    )
    job_id = start_job(start, container_stage(entrypoint))
    row = wait_finished(db, job_id)
    text = log_of(row, "algorithmLog")
    assert f"podman container of image {image}" in text
    assert "busybox" in text and "65534" in text and "read-only root" in text
    assert "no python here" in text  # the image's file system, not the host's
    assert row["outputs"][0]["filename"] == "answer.txt"
    assert containers_of(job_id) == []


def test_the_container_has_no_network(
    image: str, start: FlaskClient, db: Database, run_engine: Callable[..., Engine]
) -> None:
    run_engine()
    with storage.serve({"x": b"reached"}) as server:
        entrypoint = f"wget -T 5 -O - {server.url}/x || echo refused"
        row = wait_finished(db, start_job(start, container_stage(entrypoint)))
        assert server.seen_headers == []
    assert "refused" in log_of(row, "algorithmLog")


def test_the_deadline_kills_the_container(
    image: str, start: FlaskClient, db: Database, run_engine: Callable[..., Engine]
) -> None:
    run_engine(maxJobDuration=2)
    job_id = start_job(start, container_stage("echo partial > $OUTPUTS/p.txt; sleep 600"))
    row = wait_finished(db, job_id, timeout=60)
    assert (row["status"], row["stopreq"]) == (70, 2)
    assert "killed at its deadline" in log_of(row, "algorithmLog")
    assert row["outputs"][0]["filename"] == "p.txt"
    assert containers_of(job_id) == []


def test_a_stop_kills_the_container(
    image: str,
    start: FlaskClient,
    stop: FlaskClient,
    db: Database,
    run_engine: Callable[..., Engine],
) -> None:
    run_engine()
    job_id = start_job(start, container_stage("sleep 600"))
    wait_for(lambda: containers_of(job_id), what="the container")
    stop_job(stop, job_id)
    row = wait_finished(db, job_id, timeout=20)
    assert (row["status"], row["stopreq"]) == (70, 1)
    assert containers_of(job_id) == []


def test_a_container_left_by_a_dead_engine_is_removed_by_the_takeover(
    image: str,
    start: FlaskClient,
    db: Database,
    run_engine: Callable[..., Engine],
    env_announced: dict[str, Any],
) -> None:
    job_id = start_job(start, algorithm_stage("#"))
    # What an engine killed mid-algorithm leaves: the job at 40, its lease run out, and its
    # container still running under podman's own supervisor.
    name = f"{PREFIX}{job_id}-algorithm"
    podman("run", "--detach", "--name", name, "--network", "none", "--ulimit", "nofile=64:64",
           "--ulimit", "nproc=64:64", image, "sleep", "600")  # fmt: skip
    assert containers_of(job_id)
    db.execute(
        """UPDATE jobs SET status = 40, engine = 'dead-engine',
               leaseuntil = NOW() - interval '1 minute' WHERE workflowid = :j""",
        j=job_id,
    )
    run_engine()
    row = wait_finished(db, job_id)
    assert "the engine running this algorithm was lost" in log_of(row, "algorithmLog")
    assert containers_of(job_id) == []


def test_an_environment_of_runtime_host_runs_the_entrypoint_on_the_host_and_says_so(
    image: str, start: FlaskClient, db: Database, run_engine: Callable[..., Engine]
) -> None:
    run_engine(runtime="host")
    job_id = start_job(start, container_stage("echo ran; cat /etc/os-release"))
    row = wait_finished(db, job_id)
    text = log_of(row, "algorithmLog")
    assert f"runtime host (the environment's runtime): image {image} not used" in text
    assert "ran" in text and "ID=operator-test" not in text
    assert job_row(db, job_id)["status"] == 70


def test_the_container_has_the_sandboxes_seccomp_refusals(
    image: str, start: FlaskClient, db: Database, run_engine: Callable[..., Engine]
) -> None:
    # A user namespace is the usual first step out; podman's own profile allows it.
    run_engine()
    job_id = start_job(start, container_stage("unshare -U -r id -u; echo unshare=$?"))
    row = wait_finished(db, job_id)
    text = log_of(row, "algorithmLog")
    assert "seccomp filter" in text and "unshare=0" not in text and "unshare=" in text


def test_a_container_with_network_gets_the_filtered_way_out(
    image: str, start: FlaskClient, db: Database, run_engine: Callable[..., Engine]
) -> None:
    with (
        serving_host("optest-pub", "203.0.113", {"x": b"reached the internet"}) as public,
        serving_host("optest-prv", "192.168.77", {"x": b"reached a private host"}) as private,
    ):
        run_engine(network=True, allowNetworks=[])
        # busybox's nc, not its wget: Debian's static busybox wget crashes on any URL.
        get = "printf 'GET /x HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {} 8080"
        entrypoint = (
            f"{get.format(public.address)}; echo; "
            f"{get.format(private.address)} || echo private unreachable"
        )
        row = wait_finished(db, start_job(start, container_stage(entrypoint)))
    text = log_of(row, "algorithmLog")
    assert "reached the internet" in text
    assert "private unreachable" in text and "reached a private host" not in text


def test_the_containers_usage_is_counted_by_the_engines_group_and_its_memory_bounded(
    image: str,
    start: FlaskClient,
    result: FlaskClient,
    db: Database,
    run_engine: Callable[..., Engine],
) -> None:
    run_engine(ramGB=0.25)
    busy = 'end=$(($(date +%s) + 2)); while [ "$(date +%s)" -lt "$end" ]; do :; done'
    job_id = start_job(start, container_stage(busy))
    row = wait_finished(db, job_id)
    algorithm = receipt_of(result, row, job_id)["stages"]["algorithm"]
    assert 700 <= algorithm["cpuMs"] <= 4000, algorithm  # one to two busy seconds
    assert algorithm["peakMemoryBytes"] > 100 * 1024, algorithm

    hog = "x=$(head -c 400000000 /dev/zero | tr '\\0' a); echo kept ${#x}"
    row = wait_finished(db, start_job(start, container_stage(hog)))
    text = log_of(row, "algorithmLog")
    assert "out of memory: its limit is 268435456 bytes" in text and "kept" not in text
