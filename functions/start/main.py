"""POST /compute: store a Provider's order as a job and register its WorkFlow."""

from flask import Request, Response

from common import auth, http, jobs
from common.payloads import StartRequest
from common.runtime import Runtime


def create_job(request: Request, rt: Runtime) -> Response:
    order = StartRequest.parse(http.request_data(request, rt.settings))
    provider = auth.authenticate_provider(rt.settings, rt.db, order.call)
    return http.json_response([jobs.start(rt, order, provider)])


start = http.function("start", {("POST", "/compute"): create_job})
