"""Replays (contract section 2): a nonce is the caller's time.time_ns(), accepted within
NONCE_WINDOW of the service's clock, either side, and once per signer. Driven through the real
status function with signatures made as the Provider makes them.

The edges are tested five seconds inside and outside a 300 s window: far more than a test
takes, so no clock race can flip an answer."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask.testing import FlaskClient

from common import store
from common.db import Database
from tests.provider import PROVIDER, STRANGER, Provider, start_body

URL = "/api/v1/operator/compute"
SECOND = 10**9
WINDOW = 300 * SECOND


def status_at(
    status: FlaskClient, nonce: int | str, signer: Provider = PROVIDER
) -> tuple[int, str]:
    """A signed status call at this nonce (an int, or the text of one): its HTTP status, and
    its error message if any."""
    answer = status.get(URL, query_string=signer.signed(nonce=nonce))  # type: ignore[arg-type]
    error = answer.json.get("error", "") if isinstance(answer.json, dict) else ""
    return answer.status_code, error


def test_nonces_just_inside_the_window_pass_on_both_sides(status: FlaskClient) -> None:
    now = time.time_ns()
    assert status_at(status, now - WINDOW + 5 * SECOND) == (200, "")
    assert status_at(status, now + WINDOW - 5 * SECOND) == (200, "")


def test_nonces_just_outside_the_window_are_401_naming_it(status: FlaskClient) -> None:
    now = time.time_ns()
    for nonce in (now - WINDOW - 5 * SECOND, now + WINDOW + 5 * SECOND):
        code, error = status_at(status, nonce)
        assert code == 401
        assert error == (
            f"Nonce {nonce} is not within 300 s of the service's clock "
            "(a nonce is the caller's time.time_ns())"
        )


def test_no_nonce_however_far_ahead_locks_the_provider_out(status: FlaskClient) -> None:
    assert status_at(status, 10**30)[0] == 401
    assert status_at(status, time.time_ns() + 120 * SECOND)[0] == 200  # two minutes ahead
    assert status_at(status, time.time_ns()) == (200, "")  # and the clock's own time still works


def test_out_of_order_nonces_of_parallel_workers_each_pass_once(status: FlaskClient) -> None:
    now = time.time_ns()
    nonces = [now - offset * SECOND for offset in (0, 2, -1, 1, 30, 3)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        first = list(pool.map(lambda n: status_at(status, n)[0], nonces))
        again = list(pool.map(lambda n: status_at(status, n), nonces))
    assert first == [200] * 6
    assert again == [(401, f"Nonce {n} was already used") for n in nonces]


def test_a_replay_is_refused_and_another_signer_may_use_the_same_nonce(
    status: FlaskClient, db: Database
) -> None:
    nonce = time.time_ns()
    assert status_at(status, nonce)[0] == 200
    assert status_at(status, nonce) == (401, f"Nonce {nonce} was already used")
    assert status_at(status, str(nonce)) == (401, f"Nonce {nonce} was already used")
    # A signer outside the allowlist is refused before its nonce is looked at or stored.
    assert status_at(status, nonce + 1, STRANGER)[0] == 401
    assert db.query("SELECT count(*) FROM provider_nonces") == [[1]]


def test_millisecond_nonces_are_scaled(status: FlaskClient, db: Database) -> None:
    millis = time.time_ns() // 10**6
    assert len(str(millis)) == 13
    assert status_at(status, millis) == (200, "")
    assert status_at(status, millis)[0] == 401
    # The same instant in nanoseconds is the same nonce.
    assert status_at(status, millis * 10**6) == (401, f"Nonce {millis * 10**6} was already used")
    assert db.query("SELECT nonce FROM provider_nonces") == [[millis * 10**6]]


def test_pruning_removes_only_what_the_window_left_behind(db: Database) -> None:
    now = time.time_ns()
    old = [now - WINDOW - i * SECOND for i in range(1, 8)]
    for nonce in [*old, now]:
        assert store.consume_nonce(db, PROVIDER.address, nonce)
    assert store.prune_nonces(db, now - WINDOW, batch=3) == len(old)
    assert db.query("SELECT nonce FROM provider_nonces") == [[now]]


@pytest.fixture
def commit_modes(db: Database) -> Iterator[Callable[[], list[str]]]:
    """The synchronous_commit in force for each nonce stored, recorded by a trigger on the real
    table: what each call's commit waits for."""
    db.execute("CREATE TABLE IF NOT EXISTS nonce_commits (mode text)")
    db.execute("TRUNCATE nonce_commits")
    db.execute(
        """CREATE OR REPLACE FUNCTION record_commit_mode() RETURNS trigger LANGUAGE plpgsql AS $$
           BEGIN
               INSERT INTO nonce_commits VALUES (current_setting('synchronous_commit'));
               RETURN NULL;
           END $$"""
    )
    db.execute(
        """CREATE OR REPLACE TRIGGER record_commit_mode AFTER INSERT ON provider_nonces
           FOR EACH ROW EXECUTE FUNCTION record_commit_mode()"""
    )
    yield lambda: [row[0] for row in db.query("SELECT mode FROM nonce_commits")]
    db.execute("DROP TRIGGER IF EXISTS record_commit_mode ON provider_nonces")


def test_reads_commit_their_nonce_asynchronously_changes_with_the_change(
    status: FlaskClient,
    start: FlaskClient,
    stop: FlaskClient,
    env_announced: Any,
    commit_modes: Callable[[], list[str]],
) -> None:
    assert status_at(status, time.time_ns())[0] == 200
    started = start.post(URL, json=start_body("nonce-modes"))
    assert started.status_code == 200, started.json
    job_id = started.json[0]["jobId"]
    assert stop.put(URL, query_string=PROVIDER.signed(job_id=job_id)).status_code == 200
    assert commit_modes() == ["off", "on", "on"]


def test_a_start_with_a_used_nonce_stores_nothing_and_a_refused_one_keeps_its_nonce(
    start: FlaskClient, db: Database, env_announced: Any
) -> None:
    nonce = time.time_ns()
    first = start.post(URL, json=start_body("nonce-a", nonce=nonce))
    assert first.status_code == 200, first.json
    replay = start.post(URL, json=start_body("nonce-b", nonce=nonce))
    assert (replay.status_code, replay.json) == (401, {"error": f"Nonce {nonce} was already used"})
    assert db.query("SELECT count(*) FROM jobs") == [[1]]
    # A start refused for what it asked (its agreement is in use) changed nothing, its nonce
    # included: the corrected call may carry the same nonce.
    other = time.time_ns()
    refused = start.post(URL, json=start_body("nonce-a", nonce=other))
    assert refused.status_code == 400, refused.json
    assert start.post(URL, json=start_body("nonce-c", nonce=other)).status_code == 200


def test_concurrent_starts_with_one_nonce_store_one_job(
    start: FlaskClient, db: Database, env_announced: Any
) -> None:
    nonce = time.time_ns()
    bodies = [start_body(f"nonce-race-{n}", nonce=nonce) for n in range(6)]
    with concurrent.futures.ThreadPoolExecutor(max_workers=6) as pool:
        codes = sorted(pool.map(lambda body: start.post(URL, json=body).status_code, bodies))
    assert codes == [200, 401, 401, 401, 401, 401]
    assert db.query("SELECT count(*) FROM jobs") == [[1]]
