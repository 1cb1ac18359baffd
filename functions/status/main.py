"""GET /compute, /runningjobs and /environments: what the jobs and engines are doing."""

from flask import Request, Response

from common import auth, http, jobs, payloads, store
from common.payloads import JobQuery
from common.runtime import Runtime


def job_status(request: Request, rt: Runtime) -> Response:
    query = JobQuery.parse(http.request_data(request, rt.settings), "GET")
    auth.authenticate_provider(rt.settings, rt.db, query.call)
    return http.json_text_response(
        jobs.statuses(rt, query.signed_jobs(rt.settings.signature_required))
    )


def running_jobs(request: Request, rt: Runtime) -> Response:
    auth.authenticate_admin(rt.settings, request.headers.get("Admin"))
    return http.json_text_response(jobs.running(rt))


def environments(request: Request, rt: Runtime) -> Response:
    chain_id = payloads.integer(http.request_data(request, rt.settings), "chainId")
    envs = [env for env in store.environments(rt.db) if jobs.serves_chain(env, chain_id)]
    return http.json_response(envs)


status = http.function(
    "status",
    {
        ("GET", "/compute"): job_status,
        ("GET", "/runningjobs"): running_jobs,
        ("GET", "/environments"): environments,
    },
)
