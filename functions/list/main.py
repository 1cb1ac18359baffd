"""GET /list and /info: the WorkFlow objects registered in Kubernetes (admin)."""

from flask import Request, Response

from common import auth, http, store
from common.payloads import JobRef
from common.runtime import Runtime


def list_workflows(request: Request, rt: Runtime) -> Response:
    auth.authenticate_admin(rt.settings, request.headers.get("Admin"))
    return http.json_response(rt.cluster.workflow_names(rt.settings.default_namespace))


def workflow_info(request: Request, rt: Runtime) -> Response:
    auth.authenticate_admin(rt.settings, request.headers.get("Admin"))
    job = JobRef.parse(http.request_data(request, rt.settings), "GET:/info", with_component=False)
    namespace = store.job_namespace(rt.db, job.job_id) or rt.settings.default_namespace
    return http.json_response(rt.cluster.workflow(job.job_id, namespace))


# Shadows the builtin on purpose: the entry point is named after its folder.
list = http.function("list", {("GET", "/list"): list_workflows, ("GET", "/info"): workflow_info})
