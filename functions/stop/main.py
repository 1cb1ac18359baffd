"""PUT /compute asks the engine to stop jobs; DELETE also removes their cluster objects."""

from flask import Request, Response

from common import auth, http, jobs
from common.payloads import JobQuery
from common.runtime import Runtime
from common.store import JobFilter


def _signed_jobs(request: Request, rt: Runtime) -> JobFilter:
    query = JobQuery.parse(http.request_data(request, rt.settings), request.method)
    auth.authenticate_provider(rt.settings, rt.db, query.call)
    return query.signed_jobs(rt.settings.signature_required)


def stop_jobs(request: Request, rt: Runtime) -> Response:
    return http.json_response(jobs.stop(rt, _signed_jobs(request, rt)))


def delete_jobs(request: Request, rt: Runtime) -> Response:
    return http.json_response(jobs.remove(rt, _signed_jobs(request, rt)))


stop = http.function(
    "stop",
    {("PUT", "/compute"): stop_jobs, ("DELETE", "/compute"): delete_jobs},
    chores=(jobs.WORKFLOW_SWEEP,),
)
