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
    Route("GET", DOCS, "status", everywhere=True),
)


def find(method: str, path: str) -> Route | None:
    """The route for a request; the Swagger UI's assets live under its path."""
    method = "GET" if method == "HEAD" else method
    if path.startswith(DOCS) or path == DOCS_UNSLASHED:
        path = DOCS
    for route in ROUTES:
        if route.method == method and route.path == path:
            return route
    return None


def methods_at(path: str) -> list[str]:
    path = DOCS if path.startswith(DOCS) or path == DOCS_UNSLASHED else path
    return [route.method for route in ROUTES if route.path == path]


def of_function(name: str) -> list[Route]:
    return [route for route in ROUTES if route.function == name and not route.everywhere]
