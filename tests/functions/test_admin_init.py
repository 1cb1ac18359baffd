"""POST /pgsqlinit: creates the schema, and upgrades the original service's database in place."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from flask.testing import FlaskClient

from common import store
from common.config import Settings
from common.db import Database
from tests.conftest import ADMIN_SECRET
from tests.jobrows import wait_for
from tests.provider import PROVIDER, start_body

URL = "/api/v1/operator/pgsqlinit"

# The DDL of the original operator-service's /pgsqlinit, as it created databases in the field.
ORIGINAL_DDL = """
CREATE TABLE IF NOT EXISTS jobs
    (agreementId           varchar(255) NOT NULL,
    workflowId         varchar(255) NOT NULL,
    owner         varchar(255),
    status  int,
    statusText varchar(255),
    laststatusupdate timestamp without time zone default NOW(),
    dateCreated timestamp without time zone default NOW(),
    dateFinished timestamp without time zone default NULL,
    configlogURL text,
    publishlogURL text,
    algologURL text,
    outputsURL text,
    ddo text,
    namespace varchar(255),
    stopreq smallint default 0,
    removed smallint default 0,
    workflow text,
    provider varchar(255)
);
CREATE unique INDEX IF NOT EXISTS uniq_agreementId_workflowId ON jobs (agreementId,workflowId);
CREATE TABLE IF NOT EXISTS envs
    (namespace           varchar(255) NOT NULL,
    status         text,
    lastping timestamp without time zone default NOW()
);
CREATE unique INDEX IF NOT EXISTS unique_namespace ON envs (namespace);
CREATE OR REPLACE FUNCTION announce(environment varchar(255), fullstatus text, lmt int)
  RETURNS TABLE (workflow varchar(255))
  LANGUAGE plpgsql
  AS $function$
  BEGIN
    INSERT INTO envs(namespace, status, lastping) VALUES(environment,fullstatus,NOW()) ON CONFLICT (namespace) DO UPDATE SET status = EXCLUDED.status, lastping = EXCLUDED.lastping;
    RETURN QUERY
    SELECT workflowid FROM jobs WHERE namespace=environment AND status=1 LIMIT lmt;
  END
$function$;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS did varchar(255);
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS chainid varchar(255);
CREATE INDEX IF NOT EXISTS indx_owner_jobs ON jobs(owner);
CREATE TABLE IF NOT EXISTS nonces (provider varchar NOT NULL, nonce varchar);
"""
WORKFLOW = json.dumps(
    {"spec": {"metadata": {"stages": [{"algorithm": {"id": "did:a"}, "input": [{"id": "did:i"}]}]}}}
)


@pytest.fixture
def fresh_database(schema_db: Database, base_settings: Settings) -> Iterator[Settings]:
    """An empty database of its own on the same server, dropped afterwards."""
    schema_db.execute("DROP DATABASE IF EXISTS pgsqlinit_test")
    schema_db.execute("CREATE DATABASE pgsqlinit_test")
    settings = base_settings.replace(postgres_db="pgsqlinit_test")
    yield settings
    schema_db.execute("DROP DATABASE pgsqlinit_test WITH (FORCE)")


@pytest.fixture
def settings(fresh_database: Settings) -> Settings:
    return fresh_database


def tables(db: Database) -> set[str]:
    rows = db.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {row[0] for row in rows}


def test_creates_the_schema_on_an_empty_database(
    admin_init: FlaskClient, settings: Settings
) -> None:
    response = admin_init.post(URL, headers={"Admin": ADMIN_SECRET})

    assert (response.status_code, response.json) == (
        200,
        {"status": "database schema is up to date"},
    )
    db = Database(settings)
    assert tables(db) == {"jobs", "envs", "provider_nonces", "queue_owners"}
    db.close()


def test_is_idempotent(admin_init: FlaskClient, settings: Settings) -> None:
    for _ in range(3):
        assert admin_init.post(URL, headers={"Admin": ADMIN_SECRET}).status_code == 200


def test_an_upgrade_waits_behind_a_start_instead_of_deadlocking_it(
    admin_init: FlaskClient, settings: Settings
) -> None:
    """A start consumes its nonce, then inserts its job, in one transaction (and now in one
    statement, in that order); a stop or a delete too. An upgrade that came between the two
    used to take jobs, then wait for provider_nonces: PostgreSQL broke the deadlock by failing
    one of them, and the fuzzing saw a start answered 503."""
    assert admin_init.post(URL, headers={"Admin": ADMIN_SECRET}).status_code == 200
    request, observer = Database(settings), Database(settings)
    job = store.NewJob("agreement-1", "job-1", "0xowner", "env", {}, None, None)
    with ThreadPoolExecutor(1) as pool:
        with request.transaction() as tx:
            assert store.consume_nonce_in(tx, PROVIDER.address, time.time_ns())
            upgrade = pool.submit(admin_init.post, URL, headers={"Admin": ADMIN_SECRET})
            waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted AND locktype = 'relation'"
            wait_for(lambda: observer.query(waiting)[0][0], what="the upgrade to wait on a lock")
            store.insert_job(tx, job, None)  # a deadlock was detected here, a second later
        assert upgrade.result(timeout=30).status_code == 200
    assert observer.query("SELECT workflowid FROM jobs") == [["job-1"]]
    request.close()
    observer.close()


def test_upgrades_the_original_database_keeping_its_rows(
    admin_init: FlaskClient, settings: Settings
) -> None:
    db = Database(settings)
    db.execute(ORIGINAL_DDL)
    db.execute(
        "INSERT INTO jobs (agreementid, workflowid, owner, status, statustext, namespace, workflow) "
        "VALUES ('a-old', 'job-old', '0xowner', 1, 'Warming up', 'ocean-compute', :w), "
        "       ('a-done', 'job-done', '0xowner', 70, 'Job finished', 'ocean-compute', :w)",
        w=WORKFLOW,
    )
    db.execute("UPDATE jobs SET datefinished = NOW() WHERE workflowid = 'job-done'")
    db.close()

    assert admin_init.post(URL, headers={"Admin": ADMIN_SECRET}).status_code == 200

    assert db.query("SELECT workflowid, status FROM jobs ORDER BY workflowid") == [
        ["job-done", 70],
        ["job-old", 1],
    ]
    assert [r[0] for r in db.query("SELECT * FROM announce('ocean-compute', '{\"x\": 1}', 5)")] == [
        "job-old"
    ]
    assert [r[0] for r in db.query("SELECT * FROM announce('ocean-compute', '{}')")] == ["job-old"]
    assert tables(db) >= {"provider_nonces", "nonces"}  # the original's nonces stay, unread
    # The rule the original lacked now holds for its data too.
    with pytest.raises(Exception, match="jobs_one_unfinished_per_agreement"):
        db.execute("INSERT INTO jobs (agreementid, workflowid) VALUES ('a-old', 'job-new')")
    db.close()


def test_refuses_to_upgrade_a_database_that_breaks_the_one_job_rule(
    admin_init: FlaskClient, settings: Settings
) -> None:
    db = Database(settings)
    db.execute(ORIGINAL_DDL)
    db.execute("INSERT INTO jobs (agreementid, workflowid) VALUES ('dup', 'j1'), ('dup', 'j2')")
    db.close()

    response = admin_init.post(URL, headers={"Admin": ADMIN_SECRET})

    assert response.status_code == 409
    assert response.json == {
        "error": "several unfinished jobs share an agreementId (dup): "
        "finish all but one, then run /pgsqlinit again"
    }
    assert db.query("SELECT count(*) FROM jobs") == [[2]]
    assert "provider_nonces" not in tables(db)  # the whole upgrade rolled back
    db.close()


# The original's releases, oldest first, as far as their DDL can be found (its public
# repository's history; the Python service kept its /pgsqlinit in routes.py, later in
# admin_routes.py). The very first jobs table lacked namespace, stopreq and removed: the routes.py
# release adds them "for upgrade purposes".
FIRST_DDL = """
CREATE TABLE jobs (
    agreementId varchar(255) NOT NULL, workflowId varchar(255) NOT NULL, owner varchar(255),
    status int, statusText varchar(255),
    dateCreated timestamp without time zone DEFAULT NOW(),
    dateFinished timestamp without time zone DEFAULT NULL,
    configlogURL text, publishlogURL text, algologURL text, outputsURL text, ddo text
);
"""
# routes.py: the jobs table alone, without the columns the engine added later
# (laststatusupdate, workflow, provider, did, chainid), no envs, no announce(), no nonces.
EARLY_DDL = """
CREATE TABLE jobs (
    agreementId varchar(255) NOT NULL, workflowId varchar(255) NOT NULL, owner varchar(255),
    status int, statusText varchar(255),
    dateCreated timestamp without time zone DEFAULT NOW(),
    dateFinished timestamp without time zone DEFAULT NULL,
    configlogURL text, publishlogURL text, algologURL text, outputsURL text, ddo text,
    namespace varchar(255), stopreq smallint DEFAULT 0, removed smallint DEFAULT 0
);
CREATE UNIQUE INDEX uniq_agreementId_workflowId ON jobs (agreementId, workflowId);
"""
# admin_routes.py before the nonce check: envs, announce(), did and chainid, no nonces table.
BEFORE_NONCES_DDL = ORIGINAL_DDL.replace(
    "CREATE TABLE IF NOT EXISTS nonces (provider varchar NOT NULL, nonce varchar);", ""
)
# Ocean's TypeScript rewrite (operator-service-js): primary keys instead of unique indexes, two
# placeholder environments whose status is not JSON, chainId without did, its own function.
JS_DDL = """
CREATE TABLE IF NOT EXISTS jobs (
    agreementId varchar(255) NOT NULL, workflowId varchar(255) NOT NULL, owner varchar(255),
    status int, statusText varchar(255),
    laststatusupdate timestamp without time zone default NOW(),
    dateCreated timestamp without time zone default NOW(),
    dateFinished timestamp without time zone default NULL,
    configlogURL text, publishlogURL text, algologURL text, outputsURL text, ddo text,
    namespace varchar(255), stopreq smallint default 0, removed smallint default 0,
    workflow text, provider varchar(255),
    PRIMARY KEY (agreementId, workflowId)
);
CREATE TABLE IF NOT EXISTS envs (
    namespace varchar(255) NOT NULL PRIMARY KEY, status text,
    lastping timestamp without time zone default NOW()
);
INSERT INTO envs (namespace, status) VALUES ('env1', 'active'), ('env2', 'inactive');
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS chainId varchar(255);
CREATE INDEX IF NOT EXISTS idx_owner_jobs ON jobs(owner);
CREATE UNIQUE INDEX IF NOT EXISTS idx_job_unique_composite ON jobs(agreementId, workflowId, namespace);
CREATE INDEX IF NOT EXISTS idx_envs_status ON envs(status);
CREATE OR REPLACE FUNCTION announce_job_completion(
    agreement_id varchar(255), workflow_id varchar(255), status int) RETURNS void AS $$
BEGIN
    UPDATE jobs SET status = $3 WHERE agreement_id = $1 AND workflow_id = $2;
END;
$$ LANGUAGE plpgsql;
"""
ORIGINALS = {
    "first": FIRST_DDL,
    "routes": EARLY_DDL,
    "before-nonces": BEFORE_NONCES_DDL,
    "latest": ORIGINAL_DDL,
    "typescript": JS_DDL,
}


@pytest.mark.parametrize("original", ORIGINALS.values(), ids=ORIGINALS.keys())
def test_signed_calls_work_on_an_upgraded_original_database(
    admin_init: FlaskClient,
    settings: Settings,
    start: FlaskClient,
    status: FlaskClient,
    original: str,
) -> None:
    """Every original schema upgrades in place, keeping its rows; the latest one's
    `nonces (provider, nonce)` table stays as it was, since ours is another."""
    db = Database(settings)
    db.execute(original)
    db.execute(  # the columns every release had
        "INSERT INTO jobs (agreementid, workflowid, owner, status, statustext) "
        "VALUES ('kept', 'job-kept', '0xowner', 70, 'Job finished')"
    )
    db.close()
    assert admin_init.post(URL, headers={"Admin": ADMIN_SECRET}).status_code == 200
    db.execute("SELECT * FROM announce('ocean-compute', '{}', 0)")
    assert db.query("SELECT workflowid FROM jobs") == [["job-kept"]]
    db.close()

    started = start.post("/api/v1/operator/compute", json=start_body("after-upgrade"))
    assert started.status_code == 200, started.json
    job_id = started.json[0]["jobId"]
    shown = status.get("/api/v1/operator/compute", query_string=PROVIDER.signed(job_id=job_id))
    assert (shown.status_code, shown.json[0]["jobId"]) == (200, job_id)
    listed = status.get("/api/v1/operator/environments")
    assert listed.status_code == 200
    assert "ocean-compute" in [env["id"] for env in listed.json]


def test_a_database_one_upgrade_behind_answers_503_until_pgsqlinit(
    admin_init: FlaskClient, settings: Settings, start: FlaskClient, status: FlaskClient
) -> None:
    """The schema of the release before status objects were PostgreSQL's: no `dids` column,
    no `job_status`. Its calls say what to do, and change nothing, until /pgsqlinit."""
    assert admin_init.post(URL, headers={"Admin": ADMIN_SECRET}).status_code == 200
    db = Database(settings)
    db.execute("DROP FUNCTION job_status(jobs)")
    db.execute("ALTER TABLE jobs DROP COLUMN dids")
    db.execute("SELECT * FROM announce('ocean-compute', '{}', 0)")
    for answer in (
        start.post("/api/v1/operator/compute", json=start_body("before-upgrade")),
        status.get("/api/v1/operator/compute", query_string=PROVIDER.signed(job_id="x")),
        status.get("/api/v1/operator/runningjobs", headers={"Admin": ADMIN_SECRET}),
    ):
        assert (answer.status_code, answer.json) == (
            503,
            {"error": "database not initialised: POST /pgsqlinit first"},
        )
    assert db.query("SELECT count(*) FROM jobs") == [[0]]

    assert admin_init.post(URL, headers={"Admin": ADMIN_SECRET}).status_code == 200
    started = start.post("/api/v1/operator/compute", json=start_body("after-upgrade"))
    assert started.status_code == 200, started.json
    db.close()


@pytest.mark.parametrize(
    ("headers", "code", "message"),
    [({}, 400, "The Admin header is required"), ({"Admin": "nope"}, 401, "Invalid Admin header")],
)
def test_needs_the_admin_header(
    admin_init: FlaskClient, settings: Settings, headers: dict[str, str], code: int, message: str
) -> None:
    response = admin_init.post(URL, headers=headers)
    assert (response.status_code, response.json) == (code, {"error": message})
    db = Database(settings)
    assert tables(db) == set()
    db.close()
