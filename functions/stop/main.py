"""PUT /compute asks the engine to stop jobs; DELETE also removes their cluster objects."""

from flask import Request, Response

from common import auth, http, jobs
from common.auth import Verified
from common.payloads import JobQuery
from common.runtime import Runtime
from common.store import JobFilter


def _signed_jobs(request: Request, rt: Runtime) -> tuple[JobFilter, Verified | None]:
    """The jobs the call names, and the call verified: its nonce is consumed in the
    transaction of the stop or the removal."""
    query = JobQuery.parse(http.request_data(request, rt.settings), request.method)
    verified = auth.verify_provider(rt.settings, query.call)
    return query.signed_jobs(rt.settings.signature_required), verified


def stop_jobs(request: Request, rt: Runtime) -> Response:
    return http.json_text_response(jobs.stop(rt, *_signed_jobs(request, rt)))


def delete_jobs(request: Request, rt: Runtime) -> Response:
    return http.json_text_response(jobs.remove(rt, *_signed_jobs(request, rt)))


stop = http.function(
    "stop",
    {("PUT", "/compute"): stop_jobs, ("DELETE", "/compute"): delete_jobs},
    chores=(jobs.WORKFLOW_SWEEP,),
)
