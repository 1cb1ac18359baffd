"""Algorithms run in the image they name, pulled by configure from a real registry (Debian's
docker-registry, distribution 2.8, on loopback or on a stand-in internet host), pinned to the
checksum when the algorithm gives one, from registries the environment allows.

The image is tests/images.py's busybox with an /etc/os-release of its own: a job that prints it
shows it ran in that image and not on this host."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from common.db import Database
from engine.engine import Engine
from tests.engine.conftest import algorithm_stage, start_job
from tests.engine.test_receipts import receipt_of
from tests.engine.test_stops_and_timeouts import stop_job
from tests.images import Registry, import_busybox, podman, registry, require_podman
from tests.jobrows import job_row, log_of, wait_finished, wait_for
from tests.netns import standin_host

REPOSITORY = "optest/busybox"
TAG = "1"
LOCAL = "localhost/optest-pushed:1"
OS_RELEASE = "ID=operator-test"


@pytest.fixture(scope="module")
def pushed() -> Iterator[tuple[Registry, str]]:
    """A registry on loopback holding the busybox image, and the image's manifest digest."""
    require_podman()
    with registry() as served:
        import_busybox(LOCAL)
        yield served, served.push(LOCAL, REPOSITORY, TAG)


@pytest.fixture
def run_engine(
    run_engine: Callable[..., Engine], pushed: tuple[Registry, str]
) -> Callable[..., Engine]:
    """Environments of runtime podman; the test registry serves plain HTTP, as the engine
    allows for the registries `insecureRegistries` names."""
    served, _ = pushed

    def run(engine: dict[str, Any] | None = None, **environment: Any) -> Engine:
        tuning = {"insecureRegistries": [served.address], **(engine or {})}
        return run_engine(tuning, **{"runtime": "podman", **environment})

    return run


def image_stage(image: str, entrypoint: str, checksum: str = "", tag: str = TAG) -> dict[str, Any]:
    container = {"image": image, "tag": tag, "entrypoint": entrypoint, "checksum": checksum}
    return algorithm_stage("#", container=container)


def ended_at_32(db: Database, job_id: str) -> str:
    """The configure log of a job that ended at 32, as algorithm provisioning failures do."""
    row = wait_finished(db, job_id)
    assert "algorithmLog" not in [entry["type"] for entry in row["outputs"]]
    return log_of(row, "configrationLog")


def test_the_algorithm_runs_in_the_image_it_names_pulled_once_from_its_registry(
    pushed: tuple[Registry, str],
    start: FlaskClient,
    result: FlaskClient,
    db: Database,
    run_engine: Callable[..., Engine],
    status_history: Callable[[str], list[int]],
) -> None:
    served, digest = pushed
    run_engine()
    image = f"{served.address}/{REPOSITORY}"
    before = served.manifest_requests(REPOSITORY)
    job_id = start_job(start, image_stage(image, "cat /etc/os-release"))
    row = wait_finished(db, job_id)
    assert 40 in status_history(job_id)
    configured = log_of(row, "configrationLog")
    pulled = f"runtime podman: image {image}:{TAG}, pulled over the host's network, digest {digest}"
    assert pulled in configured
    algorithm = log_of(row, "algorithmLog")
    assert OS_RELEASE in algorithm  # the image's file system, not this host's
    assert served.manifest_requests(REPOSITORY) > before
    receipt = receipt_of(result, row, job_id)
    assert (receipt["algorithm"]["imageDigest"], receipt["algorithm"]["runtime"]) == (
        digest,
        "podman",
    )

    # IfNotPresent: the next job finds the image here and asks the registry nothing.
    asked = served.manifest_requests(REPOSITORY)
    again = wait_finished(db, start_job(start, image_stage(image, "cat /etc/os-release")))
    assert "already on this machine" in log_of(again, "configrationLog")
    assert OS_RELEASE in log_of(again, "algorithmLog")
    assert served.manifest_requests(REPOSITORY) == asked


def test_a_checksum_pins_the_image_and_a_wrong_one_is_refused(
    pushed: tuple[Registry, str],
    start: FlaskClient,
    db: Database,
    run_engine: Callable[..., Engine],
    status_history: Callable[[str], list[int]],
) -> None:
    served, digest = pushed
    run_engine(pullPolicy="Always")
    image = f"{served.address}/{REPOSITORY}"
    bare = digest.removeprefix("sha256:")  # as some of Ocean's algorithms give it
    row = wait_finished(db, start_job(start, image_stage(image, "cat /etc/os-release", bare)))
    assert f"image {image}@{digest}, pulled over" in log_of(row, "configrationLog")
    assert OS_RELEASE in log_of(row, "algorithmLog")

    wrong = "sha256:" + "0" * 64
    job_id = start_job(start, image_stage(image, "echo ran", wrong))
    configured = ended_at_32(db, job_id)
    assert 32 in status_history(job_id)
    assert f"pulling image {image}@{wrong} failed" in configured
    assert "manifest unknown" in configured

    job_id = start_job(start, image_stage(image, "echo ran", "not-a-digest"))
    assert "is not an image digest" in ended_at_32(db, job_id)
    assert 32 in status_history(job_id)


def test_an_image_from_a_registry_the_environment_does_not_allow_is_never_pulled(
    pushed: tuple[Registry, str],
    start: FlaskClient,
    db: Database,
    run_engine: Callable[..., Engine],
    status_history: Callable[[str], list[int]],
) -> None:
    served, _ = pushed
    run_engine(allowedRegistries=["ghcr.io/oceanprotocol"])
    asked = served.manifest_requests(REPOSITORY)
    job_id = start_job(start, image_stage(f"{served.address}/{REPOSITORY}", "echo ran"))
    configured = ended_at_32(db, job_id)
    assert "from none of the registries this environment allows (ghcr.io/oceanprotocol)" in (
        configured
    )
    assert "configure starts" not in configured and 32 in status_history(job_id)
    assert served.manifest_requests(REPOSITORY) == asked


def test_a_registry_nobody_named_on_a_private_address_is_not_reached(
    pushed: tuple[Registry, str],
    start: FlaskClient,
    db: Database,
    run_engine: Callable[..., Engine],
) -> None:
    # An attacker's image named on this host's loopback: the fetches' address policy holds.
    served, _ = pushed
    run_engine(allowNetworks=[], pullPolicy="Always")
    asked = served.manifest_requests(REPOSITORY)
    job_id = start_job(start, image_stage(f"{served.address}/{REPOSITORY}", "echo ran"))
    assert "127.0.0.1 is a loopback address" in ended_at_32(db, job_id)
    assert served.manifest_requests(REPOSITORY) == asked


def test_a_registry_on_the_internet_is_pulled_through_the_filtered_namespace(
    pushed: tuple[Registry, str],
    start: FlaskClient,
    db: Database,
    run_engine: Callable[..., Engine],
) -> None:
    with (
        standin_host("optest-reg", "203.0.113") as host,
        registry(host.address, netns="optest-reg") as public,
    ):
        import_busybox(LOCAL)
        digest = public.push(LOCAL, REPOSITORY, TAG)
        run_engine({"insecureRegistries": [public.address]}, allowNetworks=[])
        image = f"{public.address}/{REPOSITORY}"
        row = wait_finished(db, start_job(start, image_stage(image, "cat /etc/os-release")))
        pulled = f"image {image}:{TAG}, pulled through a filtered network namespace"
        assert f"{pulled}, digest {digest}" in log_of(row, "configrationLog")
        assert OS_RELEASE in log_of(row, "algorithmLog")


def test_never_with_an_image_not_here_is_refused(
    pushed: tuple[Registry, str],
    start: FlaskClient,
    db: Database,
    run_engine: Callable[..., Engine],
) -> None:
    served, _ = pushed
    run_engine(pullPolicy="Never")
    job_id = start_job(start, image_stage(f"{served.address}/optest/absent", "echo ran"))
    assert "is not on this machine and the environment's pullPolicy is Never" in ended_at_32(
        db, job_id
    )


def test_an_image_larger_than_the_engine_allows_is_removed_and_refused(
    pushed: tuple[Registry, str],
    start: FlaskClient,
    db: Database,
    run_engine: Callable[..., Engine],
) -> None:
    served, _ = pushed
    run_engine({"maxImageGB": 0.001}, pullPolicy="Always")  # busybox is about 2 MB
    image = f"{served.address}/{REPOSITORY}"
    job_id = start_job(start, image_stage(image, "echo ran"))
    assert "more than the engine's maxImageGB" in ended_at_32(db, job_id)
    assert podman("image", "exists", f"{image}:{TAG}").returncode != 0


@pytest.fixture
def silent_registry() -> Iterator[str]:
    """A registry address that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    done = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not done.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"127.0.0.1:{listener.getsockname()[1]}"
    done.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


def test_a_pull_past_its_deadline_is_refused_and_a_stop_ends_a_pull(
    silent_registry: str,
    start: FlaskClient,
    stop: FlaskClient,
    db: Database,
    run_engine: Callable[..., Engine],
) -> None:
    run_engine({"pullSeconds": 3})
    job_id = start_job(start, image_stage(f"{silent_registry}/optest/slow", "echo ran"))
    assert "took longer than 3 s" in ended_at_32(db, job_id)

    job_id = start_job(start, image_stage(f"{silent_registry}/optest/slow", "echo ran"))
    wait_for(lambda: job_row(db, job_id)["status"] == 20, what="configure")
    stop_job(stop, job_id)
    row = wait_finished(db, job_id, timeout=30)
    assert "stopped on request while pulling the image" in log_of(row, "configrationLog")
