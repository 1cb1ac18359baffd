"""The one route table: every (method, path) of the API and the function that serves it.

The local runner dispatches from it, each function checks its handlers against it, and the
Knative routing manifests are generated from it, so the three cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass

PREFIX = "/api/v1/operator"
DOCS = "/api/v1/docs/"
DOCS_UNSLASHED = DOCS.rstrip("/")  # redirected to DOCS, as a reader types it
FUNCTIONS = ("start", "stop", "status", "list", "result", "admin_init")


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    function: str
    # The service root, /spec and the Swagger UI: every function answers them, so a probe
    # or a browser gets them wherever it lands. The table still names one function for routing.
    everywhere: bool = False
    # Whether the public HTTPRoute sends it to the functions. /metrics is not: Prometheus
    # scrapes each pod inside the cluster, and the public has no business reading the counts.
    public: bool = True


ROUTES: tuple[Route, ...] = (
    Route("POST", f"{PREFIX}/compute", "start"),
    Route("PUT", f"{PREFIX}/compute", "stop"),
    Route("DELETE", f"{PREFIX}/compute", "stop"),
    Route("GET", f"{PREFIX}/compute", "status"),
    Route("GET", f"{PREFIX}/runningjobs", "status"),
    Route("GET", f"{PREFIX}/environments", "status"),
    Route("GET", f"{PREFIX}/getResult", "result"),
    Route("GET", f"{PREFIX}/logs", "result"),
    Route("GET", f"{PREFIX}/list", "list"),
    Route("GET", f"{PREFIX}/info", "list"),
    Route("POST", f"{PREFIX}/pgsqlinit", "admin_init"),
    Route("GET", "/", "status", everywhere=True),
    Route("GET", "/healthz", "status", everywhere=True),
    Route("GET", "/spec", "status", everywhere=True),
    Route("GET", "/metrics", "status", everywhere=True, public=False),
    Route("GET", DOCS, "status", everywhere=True),
)


def find(method: str, path: str) -> Route | None:
    """The route for a request; the Swagger UI's assets live under its path."""
    method = "GET" if method == "HEAD" else method
    path = _route_path(path)
    for route in ROUTES:
        if route.method == method and route.path == path:
            return route
    return None


def methods_at(path: str) -> list[str]:
    path = _route_path(path)
    return [route.method for route in ROUTES if route.path == path]


def _route_path(path: str) -> str:
    """The table's path for a request's: the Swagger UI's page, assets and unslashed path are
    all its one route."""
    return DOCS if path.startswith(DOCS) or path == DOCS_UNSLASHED else path


def of_function(name: str) -> list[Route]:
    return [route for route in ROUTES if route.function == name and not route.everywhere]
