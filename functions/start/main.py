"""POST /compute: store a Provider's order as a job and register its WorkFlow."""

from flask import Request, Response

from common import auth, http, jobs
from common.payloads import StartRequest
from common.runtime import Runtime


def create_job(request: Request, rt: Runtime) -> Response:
    order = StartRequest.parse(http.request_data(request, rt.settings))
    verified = auth.verify_provider(rt.settings, order.call)  # its nonce goes with the job
    return http.json_text_response(f"[{jobs.start(rt, order, verified)}]")


start = http.function("start", {("POST", "/compute"): create_job})
