"""POST /pgsqlinit: create or upgrade the database schema, idempotently (admin)."""

from flask import Request, Response

from common import auth, http, store
from common.runtime import Runtime


def init_database(request: Request, rt: Runtime) -> Response:
    auth.authenticate_admin(rt.settings, request.headers.get("Admin"))
    store.apply_schema(rt.db)
    return http.json_response({"status": "database schema is up to date"})


admin_init = http.function("admin_init", {("POST", "/pgsqlinit"): init_database})
