"""GET /compute, /runningjobs and /environments: what the jobs and engines are doing."""

from flask import Request, Response

from common import auth, http, jobs, payloads, store
from common.payloads import JobQuery
from common.runtime import Runtime


def job_status(request: Request, rt: Runtime) -> Response:
    query = JobQuery.parse(http.request_data(request, rt.settings), "GET")
    verified = auth.verify_provider(rt.settings, query.call)  # its nonce goes with the read
    selected = query.signed_jobs(rt.settings.signature_required)
    return http.json_text_response(jobs.statuses(rt, selected, verified))


def running_jobs(request: Request, rt: Runtime) -> Response:
    auth.authenticate_admin(rt.settings, request.headers.get("Admin"))
    return http.json_text_response(jobs.running(rt))


def environments(request: Request, rt: Runtime) -> Response:
    data = http.request_data(request, rt.settings)
    # Ocean Node asks ?chain_id=; the Provider ?chainId=.
    chain_id = payloads.integer(data, "chainId" if "chainId" in data else "chain_id")
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
