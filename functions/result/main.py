"""GET /getResult streams one output file of a job; GET /logs shows a stage's log: the local
engine's, or the pod's in a cluster."""

from flask import Request, Response

from common import auth, http, jobs, results, store
from common.payloads import JobRef, ResultRequest
from common.runtime import Runtime


def get_result(request: Request, rt: Runtime) -> Response:
    wanted = ResultRequest.parse(http.request_data(request, rt.settings))
    auth.authenticate_provider(rt.settings, rt.db, wanted.call)
    return results.stream(rt.settings, request, jobs.output(rt, wanted))


def get_logs(request: Request, rt: Runtime) -> Response:
    auth.authenticate_admin(rt.settings, request.headers.get("Admin"))
    job = JobRef.parse(http.request_data(request, rt.settings), "GET:/logs", with_component=True)
    blocks = results.stage_log(rt.settings, job.job_id, job.component or "")
    if blocks is None:  # not run by an engine on this machine: ask the cluster's pods
        namespace = store.job_namespace(rt.db, job.job_id) or rt.settings.default_namespace
        text = rt.cluster.pod_log(job.job_id, job.component or "", namespace)
        blocks = iter([results.escape_controls(text)])
    return Response(blocks, mimetype="text/plain")


result = http.function("result", {("GET", "/getResult"): get_result, ("GET", "/logs"): get_logs})
