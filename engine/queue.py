"""The engine's SQL: heartbeat, claim, lease, status steps, finish and the expiry sweep.

Every statement that changes a claimed job names the engine that holds it (`engine = :me`), so
an engine that lost its lease (it stalled, another took the job over) changes nothing: its
write matches no row and it learns that it must let go (`LeaseLost`). Claims and takeovers are
single statements with `FOR UPDATE SKIP LOCKED`, so two engines never take the same job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from common.db import Database
from common.statuses import Status
from engine.config import Environment

CLAIMED_COLUMNS = (
    "workflowid, namespace, status, stopreq, workflow, owner, agreementid, provider, chainid, "
    "extract(epoch from datecreated)"
)


class LeaseLost(Exception):
    """Another engine holds the job now (or it was finished meanwhile): stop touching it."""


@dataclass(frozen=True)
class Claimed:
    job_id: str
    namespace: str
    status: int  # 20 for a fresh claim; the stored status for a takeover
    stop_requested: bool
    workflow: dict[str, Any]
    # What the job's receipt tells of its order (engine/receipts.py).
    owner: str = ""
    agreement_id: str = ""
    provider: str | None = None  # the Provider that signed its start (None: unsigned mode)
    chain_id: str | None = None
    created: float = 0.0  # Unix time it was stored
    taken_over: bool = False  # from an engine whose lease ran out, at whatever status

    @classmethod
    def from_row(cls, row: list[Any], *, taken_over: bool = False) -> Claimed:
        job_id, namespace, status, stopreq, workflow, *order = row
        owner, agreement_id, provider, chain_id, created = order
        try:
            document = json.loads(workflow) if workflow else {}
        except ValueError:
            document = {}
        return cls(
            job_id=job_id,
            namespace=namespace,
            status=int(status),
            stop_requested=stopreq == 1,
            workflow=document if isinstance(document, dict) else {},
            owner=owner or "",
            agreement_id=agreement_id or "",
            provider=provider,
            chain_id=chain_id,
            created=float(created or 0),
            taken_over=taken_over,
        )


@dataclass(frozen=True)
class Backlog:
    """The jobs waiting in one environment, as a heartbeat found them."""

    claimable: int  # as many as the free slots could take now
    length: int
    oldest_since: float | None  # Unix time of the oldest waiting job's creation


class Queue:
    def __init__(
        self,
        db: Database,
        engine_id: str,
        lease_seconds: float,
        *,
        half_life_seconds: float = 3600.0,
        starvation_seconds: float = 21600.0,
    ) -> None:
        self.db = db
        self.me = engine_id
        self.lease = lease_seconds
        self.half_life = half_life_seconds
        self.starvation_seconds = starvation_seconds

    def heartbeat(self, namespace: str, status: dict[str, Any], free: int) -> Backlog:
        """Announce the environment as the original engine does, and measure its queue: how
        many jobs wait (on the index of waiting jobs, so it costs the queue, not the table),
        and since when the oldest does."""
        rows = self.db.execute(
            """SELECT (SELECT count(*) FROM announce(:env, :status, :free)),
                   count(*), extract(epoch FROM min(datecreated))
               FROM jobs WHERE namespace = :env AND status = 1""",
            env=namespace,
            status=json.dumps(status),
            free=free,
        )
        claimable, length, oldest = rows[0]
        return Backlog(int(claimable), int(length), None if oldest is None else float(oldest))

    def claim(self, env: Environment, limit: int) -> list[Claimed]:
        """Take up to `limit` waiting jobs in the fair order (claim_fairly in schema.sql) and
        move them to 20."""
        if limit <= 0:
            return []
        rows = self.db.execute(
            f"""SELECT {CLAIMED_COLUMNS}
                FROM claim_fairly(:ns, :me, :lease, :text, :limit, :per_owner, :starve)""",
            ns=env.namespace,
            me=self.me,
            lease=self.lease,
            text=Status.CONFIGURING.text,
            limit=limit,
            per_owner=env.max_jobs_per_owner,
            starve=self.starvation_seconds,
        )
        return [Claimed.from_row(row) for row in rows]

    def take_over(self, namespace: str, limit: int) -> list[Claimed]:
        """Take up to `limit` jobs of our engine's kind whose holder's lease ran out (it died,
        or stalled past its lease). Jobs run by the original engine have no lease: never ours."""
        if limit <= 0:
            return []
        rows = self.db.execute(
            f"""WITH lapsed AS (
                    SELECT ctid FROM jobs
                    WHERE namespace = :ns AND datefinished IS NULL AND engine IS NOT NULL
                        AND leaseuntil < NOW()
                    ORDER BY datecreated LIMIT :limit
                    FOR UPDATE SKIP LOCKED)
                UPDATE jobs SET engine = :me, leaseuntil = NOW() + make_interval(secs => :lease)
                FROM lapsed WHERE jobs.ctid = lapsed.ctid
                RETURNING {CLAIMED_COLUMNS}""",
            ns=namespace,
            limit=limit,
            me=self.me,
            lease=self.lease,
        )
        return [Claimed.from_row(row, taken_over=True) for row in rows]

    def renew(self, job_ids: list[str]) -> dict[str, bool]:
        """Extend the leases of the jobs we hold, in one statement; {jobId: stop requested} of
        those still ours (a timeout's stopreq = 2 is not a request). A job missing from the
        answer is no longer ours."""
        if not job_ids:
            return {}
        rows = self.db.execute(
            """UPDATE jobs SET leaseuntil = NOW() + make_interval(secs => :lease)
               WHERE workflowid = ANY(CAST(:jobs AS varchar[])) AND engine = :me
                   AND datefinished IS NULL
               RETURNING workflowid, stopreq = 1""",
            jobs=job_ids,
            me=self.me,
            lease=self.lease,
        )
        return {job_id: bool(stopreq) for job_id, stopreq in rows}

    def release(self, job_ids: list[str]) -> None:
        """Let the leases of these jobs lapse now, for a takeover without waiting."""
        if job_ids:
            self.db.execute(
                """UPDATE jobs SET leaseuntil = NOW() - interval '1 second'
                   WHERE workflowid = ANY(CAST(:jobs AS varchar[])) AND engine = :me""",
                jobs=job_ids,
                me=self.me,
            )

    def set_status(self, job_id: str, status: int, *, stopreq: int | None = None) -> None:
        """Persist one step of the stage machine (and a timeout's stopreq = 2)."""
        self._write(
            """UPDATE jobs SET status = :status, statustext = :text, laststatusupdate = NOW(),
                   stopreq = coalesce(:stopreq, stopreq)
               WHERE workflowid = :job AND engine = :me AND datefinished IS NULL
               RETURNING 1""",
            job=job_id,
            status=status,
            text=Status(status).text,
            stopreq=stopreq,
        )

    def finish(self, job_id: str, outputs: list[dict[str, Any]]) -> None:
        """The last step of every job: 70, dateFinished, what was published, the lease let go;
        and the job's seconds since its claim added to its owner's usage (queue_owners)."""
        self._write(
            """WITH done AS (
                   UPDATE jobs SET status = 70, statustext = :text, laststatusupdate = NOW(),
                       datefinished = NOW(), outputsurl = :outputs, leaseuntil = NULL
                   WHERE workflowid = :job AND engine = :me AND datefinished IS NULL
                   RETURNING namespace, coalesce(owner, '') AS owner, greatest(0.001,
                       extract(epoch FROM NOW()::timestamp - coalesce(claimedat, datecreated)))
                       AS seconds, extract(epoch FROM NOW()) / :half AS at),
               used AS (
                   INSERT INTO queue_owners AS q (namespace, owner, usage)
                   SELECT namespace, owner, ln(seconds) / ln(2) + at FROM done
                   WHERE namespace IS NOT NULL
                   -- log2(the old usage decayed to now + this job's seconds), referred back
                   ON CONFLICT (namespace, owner) DO UPDATE SET usage = ln(
                       coalesce(power(2::float8, least(1000, greatest(-1000,
                           q.usage - (SELECT at FROM done)))), 0)
                       + power(2::float8, EXCLUDED.usage - (SELECT at FROM done))
                   ) / ln(2) + (SELECT at FROM done))
               SELECT 1 FROM done""",
            job=job_id,
            text=Status.FINISHED.text,
            outputs=json.dumps(outputs),
            half=self.half_life,
        )

    def expired(self, namespace: str, expiry_seconds: int, limit: int = 100) -> list[str]:
        """Finished jobs of the namespace whose results are older than the expiry."""
        rows = self.db.query(
            """SELECT workflowid FROM jobs
               WHERE namespace = :ns AND resultsexpired IS NULL AND datefinished IS NOT NULL
                   AND datefinished < NOW() - make_interval(secs => :expiry)
               ORDER BY datefinished LIMIT :limit""",
            ns=namespace,
            expiry=expiry_seconds,
            limit=limit,
        )
        return [row[0] for row in rows]

    def unfinished(self, job_ids: list[str]) -> set[str]:
        """Those of `job_ids` that are stored and not finished yet."""
        if not job_ids:
            return set()
        rows = self.db.query(
            """SELECT workflowid FROM jobs
               WHERE workflowid = ANY(CAST(:ids AS varchar[])) AND datefinished IS NULL""",
            ids=job_ids,
        )
        return {row[0] for row in rows}

    def mark_expired(self, job_id: str) -> None:
        self.db.execute(
            "UPDATE jobs SET resultsexpired = NOW() WHERE workflowid = :job", job=job_id
        )

    def _write(self, sql: str, **params: Any) -> None:
        if not self.db.execute(sql, me=self.me, **params):
            raise LeaseLost(str(params.get("job")))
