"""Compute jobs: start, stop, remove, and the status objects the Provider reads (contract 3-4),
which PostgreSQL builds (`job_status` in schema.sql) and the functions pass on as JSON text.

Every change happens inside one database transaction that also carries the matching Kubernetes
call, so the two agree: a job whose WorkFlow could not be registered is never committed, and a
job is never marked stopped or removed unless its cluster object was marked or removed too.
"""

from __future__ import annotations

import copy
import logging
import uuid
from typing import Any

from common import auth, store
from common.auth import Verified
from common.cluster import GROUP, VERSION
from common.config import DEFAULT_STORAGE_EXPIRY
from common.errors import BadRequest, Gone, NotFound, ServiceError
from common.payloads import ResultRequest, StartRequest
from common.runtime import Chore, Runtime
from common.store import JobFilter, NewJob

log = logging.getLogger(__name__)

ENVIRONMENT_INVALID = "Environment invalid or does not exist"


def start(rt: Runtime, order: StartRequest, verified: Verified | None) -> str:
    """Store the order as a job and register its WorkFlow; the call's nonce is consumed in the
    same transaction (verified is None in legacy mode). The new job's status object, as JSON."""
    env = store.environment(rt.db, order.environment)
    if env is None or not serves_chain(env, order.chain_id):
        # A replay is refused as a replay, whatever it names (a probe of environments too).
        if verified is not None and store.nonce_used(rt.db, verified.signer, verified.nonce_ns):
            raise auth.reused(verified)
        raise BadRequest(ENVIRONMENT_INVALID)
    stage = engine_stage(order.stage())
    job_id = uuid.uuid4().hex
    document = workflow_document(job_id, order.environment, stage, order.chain_id)
    job = NewJob(
        agreement_id=order.agreement_id,
        job_id=job_id,
        owner=order.owner,
        namespace=order.environment,
        workflow=document,
        provider=verified.signer if verified else None,
        chain_id=order.chain_id,
    )
    registered = False
    try:
        with rt.db.transaction() as tx:
            nonce = (verified.signer, verified.nonce_ns) if verified else None
            status = store.insert_job(tx, job, nonce)
            if status is None:
                assert verified is not None  # only a nonce stores nothing
                raise auth.reused(verified)
            rt.cluster.register(cluster_object(document))
            registered = True
    except ServiceError:
        if registered:  # the commit failed after registration: take the object back
            _remove_quietly(rt, job_id, order.environment)
        raise
    return status


def statuses(rt: Runtime, jobs: JobFilter, verified: Verified | None) -> str:
    """The jobs' status objects; the call's nonce is consumed in the same statement, in a
    commit that does not wait for the disk, as auth.authenticate_provider says why (verified
    is None in legacy mode)."""
    if verified is None:
        return store.job_statuses(rt.db, jobs)
    found = store.job_statuses_consuming(rt.db, jobs, verified.signer, verified.nonce_ns)
    if found is None:
        raise auth.reused(verified)
    return found


def stop(rt: Runtime, jobs: JobFilter, verified: Verified | None) -> str:
    with rt.db.transaction() as tx:
        if verified:
            auth.consume(tx, verified)
        for job_id, namespace in store.request_stop(tx, jobs):
            rt.cluster.mark_stopped(job_id, namespace)
        return store.job_statuses(tx, jobs)


def remove(rt: Runtime, jobs: JobFilter, verified: Verified | None) -> str:
    """Stop the jobs, then delete their cluster objects and mark them removed."""
    with rt.db.transaction() as tx:
        if verified:
            auth.consume(tx, verified)
        store.request_stop(tx, jobs)
        for job_id, namespace in store.mark_removed(tx, jobs):
            rt.cluster.remove(job_id, namespace or rt.settings.default_namespace)
        return store.job_statuses(tx, jobs)


def running(rt: Runtime) -> str:
    return store.running_statuses(rt.db)


def output(rt: Runtime, request: ResultRequest) -> dict[str, Any]:
    """The outputs entry getResult streams: checked for owner, presence and index (section 7)."""
    found = store.job_outputs(rt.db, request.job_id)
    if found is None or (found.owner or "").lower() != request.owner.lower():
        raise NotFound(f"Owner {request.owner} mismatch for job {request.job_id}")
    if found.expired:
        raise Gone(f"results of job {request.job_id} expired")
    outputs = found.outputs
    if not outputs or not isinstance(outputs, list):
        raise NotFound(f"No results for job {request.job_id}")
    if request.index < 0:
        raise NotFound(f"Negative index {request.index}")
    if request.index >= len(outputs):
        raise NotFound(f"No such index {request.index} in this compute job")
    entry = outputs[request.index]
    if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
        raise NotFound(f"No such index {request.index} in this compute job")
    return entry


def serves_chain(env: dict[str, Any], chain_id: int | None) -> bool:
    """An environment that lists `allowedChainId` serves only those chains."""
    allowed = env.get("allowedChainId")
    if chain_id is None or not isinstance(allowed, list):
        return True
    return str(chain_id) in {str(c) for c in allowed}


def engine_stage(stage: dict[str, Any]) -> dict[str, Any]:
    """Stage 0 as received, with what the engine dereferences made present: `algorithm.id`
    (empty for raw code, or when sent as null). An input may come without `id`, as Ocean Node
    and the original service send URL inputs: it is fetched like any other and listed in no
    DID list (the status object's inputDID, the algorithm's DIDS)."""
    for position, item in enumerate(stage["input"]):
        if "id" in item and not (isinstance(item["id"], str) and item["id"]):
            raise BadRequest(f"`id` of input {position} of stage 0 must be a DID, when given")
    stage = copy.deepcopy(stage)
    if stage["algorithm"].get("id") is None:  # its type is checked with the payload
        stage["algorithm"]["id"] = ""
    return stage


def workflow_document(
    job_id: str, namespace: str, stage: dict[str, Any], chain_id: int | None
) -> dict[str, Any]:
    """The document stored in jobs.workflow, which the engine reads (contract section 5)."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "WorkFlow",
        "metadata": {
            "name": job_id,
            "namespace": namespace,
            "labels": {"workflow": job_id},
            "secret": uuid.uuid4().hex,
        },
        "spec": {"metadata": {"stages": [stage], "chainId": chain_id}},
    }


def cluster_object(document: dict[str, Any]) -> dict[str, Any]:
    """The WorkFlow registered in Kubernetes: the document without the job's secret, which only
    the engine may read, and which object metadata could not carry anyway."""
    obj = copy.deepcopy(document)
    del obj["metadata"]["secret"]
    return obj


def _remove_quietly(rt: Runtime, job_id: str, namespace: str) -> None:
    try:
        rt.cluster.remove(job_id, namespace)
    except ServiceError:
        log.error("WorkFlow %s/%s is registered but its job was not stored", namespace, job_id)


def sweep_workflows(rt: Runtime) -> None:
    """Delete the WorkFlows of jobs the original engine finished, once their results expire:
    it never deletes them, and our engine deletes only its own. Each is marked once done, so
    the sweep reads only what is left to do."""
    if rt.cluster.mode == "off":
        return
    expiry = rt.settings.storage_expiry or DEFAULT_STORAGE_EXPIRY
    for job_id, namespace in store.foreign_expired(rt.db, expiry):
        rt.cluster.remove(job_id, namespace or rt.settings.default_namespace)
        store.mark_workflow_deleted(rt.db, job_id)
        log.info("job %s: WorkFlow deleted at its storage expiry", job_id)


# The stop function's chore: its account is allowed to delete WorkFlows.
WORKFLOW_SWEEP = Chore("workflow-sweeper", 60, sweep_workflows)
