"""The queries on `jobs`, `envs` and the nonce store, and the schema file that creates them.

Each function takes the `Database` (or an open `Transaction`) and returns plain rows or values;
"no rows" is an empty result, "database down" is `Unavailable`, so the two never look alike.
Filtered queries are built per combination of filters, so each stays an index lookup.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Any

from common.db import Database, Transaction, UniqueViolation
from common.errors import BadRequest
from common.statuses import Status

AGREEMENT_IN_USE = "`agreementId` already in use for other job."


@dataclass(frozen=True)
class JobFilter:
    """Which jobs a status, stop or delete call means; None leaves a column unfiltered."""

    agreement_id: str | None = None
    job_id: str | None = None
    owner: str | None = None

    def where(self) -> tuple[str, dict[str, str]]:
        columns = {"agreementid": self.agreement_id, "workflowid": self.job_id, "owner": self.owner}
        params = {name: value for name, value in columns.items() if value is not None}
        return " AND ".join(f"{name} = :{name}" for name in params) or "TRUE", params


@dataclass(frozen=True)
class NewJob:
    agreement_id: str
    job_id: str
    owner: str
    namespace: str
    workflow: dict[str, Any]
    provider: str | None
    chain_id: int | None


def apply_schema(db: Database) -> None:
    """Create or upgrade every table, index and function; safe to run any number of times."""
    sql = resources.files("common").joinpath("schema.sql").read_text()
    with db.transaction() as tx:
        tx.run(sql)


# A nonce consumed in a statement whose commit does not wait for the WAL to reach the disk
# (set_config's local value lasts for the statement's own transaction): `fresh` has a row when
# it was not used before. For calls that change nothing else.
CONSUME_QUICKLY = """WITH quick AS (SELECT set_config('synchronous_commit', 'off', true)),
    fresh AS (INSERT INTO provider_nonces (signer, nonce) SELECT :signer, :nonce FROM quick
              ON CONFLICT DO NOTHING RETURNING 1)"""


def consume_nonce(db: Database, signer: str, nonce_ns: int) -> bool:
    """True exactly once per (signer, nonce), atomically, even under concurrent requests."""
    rows = db.execute(
        f"{CONSUME_QUICKLY} SELECT EXISTS (SELECT FROM fresh)",
        signer=signer.lower(),
        nonce=nonce_ns,
    )
    return bool(rows[0][0])


INSERT_NONCE = """INSERT INTO provider_nonces (signer, nonce) VALUES (:signer, :nonce)
    ON CONFLICT DO NOTHING"""


def consume_nonce_in(tx: Transaction, signer: str, nonce_ns: int) -> bool:
    """The same, inside the transaction of a change: durable with it, or rolled back with it.
    A concurrent transaction with the same nonce waits on the key, then finds it taken."""
    rows = tx.run(f"{INSERT_NONCE} RETURNING 1", signer=signer.lower(), nonce=nonce_ns)
    return bool(rows)


def nonce_used(db: Database, signer: str, nonce_ns: int) -> bool:
    rows = db.query(
        "SELECT 1 FROM provider_nonces WHERE signer = :signer AND nonce = :nonce",
        signer=signer.lower(),
        nonce=nonce_ns,
    )
    return bool(rows)


def prune_nonces(db: Database, older_than_ns: int, *, batch: int = 1000) -> int:
    """Delete nonces older than the cutoff, `batch` rows a statement so that no statement
    holds many locks or runs long; the number deleted."""
    deleted = 0
    while True:
        rows = db.execute(
            """DELETE FROM provider_nonces WHERE ctid IN (
                   SELECT ctid FROM provider_nonces WHERE nonce < :cutoff LIMIT :batch)
               RETURNING 1""",
            cutoff=older_than_ns,
            batch=batch,
        )
        deleted += len(rows)
        if len(rows) < batch:
            return deleted


def environment(db: Database, namespace: str) -> dict[str, Any] | None:
    rows = db.query("SELECT status FROM envs WHERE namespace = :namespace", namespace=namespace)
    return _env_status(rows[0][0]) if rows else None


def environments(db: Database) -> list[dict[str, Any]]:
    """Every environment an engine announced, as the original showed them."""
    rows = db.query(
        "SELECT namespace, status, extract(epoch from lastping)::text FROM envs ORDER BY namespace"
    )
    return [{**_env_status(status), "lastSeen": seen, "id": ns} for ns, status, seen in rows]


def insert_job(tx: Transaction, job: NewJob, nonce: tuple[str, int] | None) -> str | None:
    """Store a new job at status 1, and consume the call's (signer, nonce) in the same
    statement: its status object, as JSON; None, and nothing stored, when the nonce was used
    before. Without a nonce (legacy mode), the job alone."""
    columns = """INSERT INTO jobs (agreementid, workflowid, owner, status, statustext, workflow,
                     namespace, provider, chainid, dids)"""
    values = """:agreement, :job, :owner, :status, :text, :workflow, :namespace, :provider,
                :chain, job_dids(:workflow)"""
    sql = f"{columns} VALUES ({values})"
    used: dict[str, Any] = {}
    if nonce is not None:
        sql = f"""WITH fresh AS ({INSERT_NONCE} RETURNING 1)
                  {columns} SELECT {values} FROM fresh"""
        used = {"signer": nonce[0].lower(), "nonce": nonce[1]}
    try:
        rows = tx.run(
            f"{sql} RETURNING job_status(jobs)::text",
            agreement=job.agreement_id,
            job=job.job_id,
            owner=job.owner,
            workflow=json.dumps(job.workflow),
            namespace=job.namespace,
            provider=job.provider,
            chain=None if job.chain_id is None else str(job.chain_id),
            status=Status.WARMING_UP,
            text=Status.WARMING_UP.text,
            **used,
        )
    except UniqueViolation:
        raise BadRequest(AGREEMENT_IN_USE) from None
    return str(rows[0][0]) if rows else None


def job_statuses(db: Database | Transaction, jobs: JobFilter) -> str:
    """The status objects of the matching jobs, oldest first, as one JSON list."""
    where, params = jobs.where()
    return str(db.query(_statuses(where), **params)[0][0])


def job_statuses_consuming(db: Database, jobs: JobFilter, signer: str, nonce_ns: int) -> str | None:
    """The same, and the call's nonce consumed in the same statement, as consume_nonce does:
    one round trip. None, and no jobs read, when the nonce was used before."""
    where, params = jobs.where()
    statuses = _statuses(where)
    sql = f"{CONSUME_QUICKLY} SELECT CASE WHEN EXISTS (SELECT FROM fresh) THEN ({statuses}) END"
    found = db.execute(sql, signer=signer.lower(), nonce=nonce_ns, **params)[0][0]
    return None if found is None else str(found)


def _statuses(where: str) -> str:
    return f"""SELECT coalesce(json_agg(job_status(jobs) ORDER BY datecreated), '[]')::text
               FROM jobs WHERE {where}"""


def request_stop(tx: Transaction, jobs: JobFilter) -> list[tuple[str, str]]:
    """Ask the engine to stop the unfinished matching jobs; a job no engine has picked up yet
    (status 1) is finished at once, since the engine would never see the request.
    Returns (jobId, namespace) of each job asked to stop."""
    where, params = jobs.where()
    # Rows are locked in one order, so concurrent stops over overlapping jobs cannot deadlock.
    rows = tx.run(
        f"""WITH target AS (
                SELECT ctid FROM jobs WHERE datefinished IS NULL AND {where}
                ORDER BY workflowid FOR UPDATE)
            UPDATE jobs SET stopreq = 1,
                status = CASE WHEN status = 1 THEN 70 ELSE status END,
                statustext = CASE WHEN status = 1 THEN :finished ELSE statustext END,
                datefinished = CASE WHEN status = 1 THEN NOW() ELSE datefinished END,
                laststatusupdate = CASE WHEN status = 1 THEN NOW() ELSE laststatusupdate END
            FROM target WHERE jobs.ctid = target.ctid
            RETURNING jobs.workflowid, jobs.namespace""",
        finished=Status.FINISHED.text,
        **params,
    )
    return [(job_id, namespace) for job_id, namespace in rows]


def mark_removed(tx: Transaction, jobs: JobFilter) -> list[tuple[str, str]]:
    where, params = jobs.where()
    rows = tx.run(
        f"""WITH target AS (SELECT ctid FROM jobs WHERE {where} ORDER BY workflowid FOR UPDATE)
            UPDATE jobs SET removed = 1 FROM target WHERE jobs.ctid = target.ctid
            RETURNING jobs.workflowid, jobs.namespace""",
        **params,
    )
    return [(job_id, namespace) for job_id, namespace in rows]


def foreign_expired(db: Database, expiry_seconds: int, limit: int = 100) -> list[tuple[str, str]]:
    """(jobId, namespace) of jobs the original engine finished more than `expiry_seconds` ago
    whose WorkFlows the service has not deleted yet; our engine deletes its own."""
    rows = db.query(
        """SELECT workflowid, namespace FROM jobs
           WHERE resultsexpired IS NULL AND engine IS NULL AND workflowdeleted IS NULL
               AND datefinished < NOW() - make_interval(secs => :expiry)
           ORDER BY datefinished LIMIT :limit""",
        expiry=expiry_seconds,
        limit=limit,
    )
    return [(job_id, namespace) for job_id, namespace in rows]


def mark_workflow_deleted(db: Database, job_id: str) -> None:
    db.execute("UPDATE jobs SET workflowdeleted = NOW() WHERE workflowid = :job", job=job_id)


def running_statuses(db: Database) -> str:
    """The status objects of the unfinished jobs, each with its namespace, as one JSON list."""
    rows = db.query(
        # job_status's object with the namespace as its last key: json_build_object's text
        # always ends with its closing brace, and a jsonb merge would reorder every key.
        # Each environment's queue is placed once, not once per waiting job.
        """SELECT '[' || coalesce(string_agg(
                   left(job_status_placed(jobs, q.place, q.estimated)::text, -1)
                   || ', "namespace" : '
                   || coalesce(to_json(jobs.namespace)::text, 'null') || '}', ', '
                   ORDER BY jobs.datecreated), '') || ']'
           FROM jobs LEFT JOIN (
               SELECT p.* FROM envs, LATERAL queue_places(envs.namespace) AS p
           ) AS q ON q.workflowid = jobs.workflowid AND jobs.status = 1
           WHERE jobs.datefinished IS NULL"""
    )
    return str(rows[0][0])


@dataclass(frozen=True)
class JobOutputs:
    owner: str | None
    outputs: Any  # parsed outputsurl; None when absent or not JSON
    expired: bool  # the expiry sweep deleted the files


def job_outputs(db: Database, job_id: str) -> JobOutputs | None:
    """What getResult needs of a job, or None when no such job exists."""
    rows = db.query(
        "SELECT owner, outputsurl, resultsexpired IS NOT NULL FROM jobs WHERE workflowid = :job",
        job=job_id,
    )
    if not rows:
        return None
    owner, outputs, expired = rows[0]
    try:
        parsed = json.loads(outputs) if outputs else None
    except ValueError:
        parsed = None
    return JobOutputs(owner=owner, outputs=parsed, expired=bool(expired))


def job_namespace(db: Database, job_id: str) -> str | None:
    rows = db.query("SELECT namespace FROM jobs WHERE workflowid = :job", job=job_id)
    return rows[0][0] if rows else None


def _env_status(raw: str | None) -> dict[str, Any]:
    # The engine writes this JSON; a row it garbled must not break the listing of the others.
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
