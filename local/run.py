"""The local run: the whole API on http://localhost:8050, with the cluster's routes.

Every function is loaded by functions-framework from its real main.py, and requests reach them
through the one route table, as Knative routing sends them in the cluster. PostgreSQL is an
embedded server in the data folder unless POSTGRES_HOST names one. What a newcomer needs to
make calls (an admin secret, a Provider key in the allowlist) is made once and kept there.
The engine runs beside the API as its own process (local/compute.py) and runs the jobs in
bubblewrap sandboxes; results are published to the data folder's results/.

    python -m local.run [--port 8050] [--data .data] [--engine auto|on|off]
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, MutableMapping
from pathlib import Path
from typing import Any

METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"
if __name__ == "__main__" and not os.environ.get(METRICS_DIR):
    # Several worker processes answer: each counts in files of this folder, which /metrics
    # sums. prometheus_client picks that storage when it is first imported, so before anything
    # of ours is; the folder goes with the run.
    os.environ[METRICS_DIR] = tempfile.mkdtemp(prefix="operator-metrics-")
    _owner = os.getpid()
    atexit.register(
        lambda: shutil.rmtree(os.environ[METRICS_DIR], True) if os.getpid() == _owner else None
    )

from common import routes, store
from common.config import Settings
from common.db import Database
from common.errors import ConfigError, Unavailable
from engine.receipts import OperatorKey
from local import compute, controlplane, postgres
from local.reaper import Reaper

ROOT = Path(__file__).resolve().parent.parent
# Seconds each part gets to stop when the run ends (docs/running.md: the run stops in under 3 s):
# the engine hands its jobs back, requests in flight finish.
ENGINE_GRACE, CONTROL_PLANE_GRACE, SERVER_GRACE = 2.5, 0.5, 2
WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Dispatcher:
    """Sends each request to the function the route table names, like the cluster's routing.
    Unknown paths go to any one function, which answers the 404 or 405 itself."""

    def __init__(self, apps: dict[str, WSGIApp]) -> None:
        self._apps = apps

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        path = environ.get("PATH_INFO", "/")
        route = routes.find(environ["REQUEST_METHOD"], path)
        if route is None and not path.isprintable():
            # No function's routing can match a path with CR, LF or other control characters;
            # Flask would answer its HTML page.
            body = json.dumps({"error": "No such route"}).encode()
            start_response(
                "404 Not Found",
                [("Content-Type", "application/json"), ("Content-Length", str(len(body)))],
            )
            return [body]
        return self._apps[route.function if route else "status"](environ, start_response)


def function_apps() -> dict[str, WSGIApp]:
    from functions_framework import create_app

    return {
        name: create_app(target=name, source=str(ROOT / "functions" / name / "main.py"))  # type: ignore[no-untyped-call]
        for name in routes.FUNCTIONS
    }


def prepare(
    env: MutableMapping[str, str], data: Path, reaper: Reaper, *, control_plane: str = "auto"
) -> list[str]:
    """Fill in what the local run needs and the caller did not set; return what to tell them.
    What it starts, the reaper stops when the run ends."""
    data.mkdir(parents=True, exist_ok=True)
    data.chmod(0o711)  # the engine's sandboxes pass through it to their job folders
    notes = [start_cluster(env, data, control_plane, reaper)]
    if not env.get("RESULTS_ROOT"):
        (data / "results").mkdir(exist_ok=True)
        env["RESULTS_ROOT"] = str(data / "results")
    if env.get("POSTGRES_HOST"):
        notes.append(
            f"database: PostgreSQL at {env['POSTGRES_HOST']}:"
            f"{env.get('POSTGRES_PORT', '5432')}/{env.get('POSTGRES_DB', 'postgres')}"
        )
    else:
        server = postgres.start(data / "postgres", stop_on_exit=False)
        reaper.postgres_stops(server.pg_ctl, server.data_dir, server.system_user)
        env.update(server.env())
        notes.append(f"database: embedded PostgreSQL, data in {server.data_dir}")
    if not env.get("ALLOWED_ADMINS"):
        secret = _kept(data / "admin-secret", lambda: secrets.token_urlsafe(24))
        env["ALLOWED_ADMINS"] = json.dumps([secret])
        # Where it is kept, never the secret: a banner ends up in logs and screenshots.
        notes.append(f"admin secret (header 'Admin'): kept in {data / 'admin-secret'}")
    if not env.get("OPERATOR_PRIVATE_KEY"):
        # The operator's key signs every job's receipt; its address is shown by GET /.
        key = _kept(data / "operator.key", lambda: "0x" + secrets.token_hex(32))
        env["OPERATOR_PRIVATE_KEY"] = key
        env.setdefault("OPERATOR_ADDRESS", provider_address(key))
        notes.append(
            f"operator: {env['OPERATOR_ADDRESS']} signs receipts "
            f"(its key is in {data / 'operator.key'})"
        )
    if not env.get("ALLOWED_PROVIDERS") and env.get("SIGNATURE_REQUIRED", "1") == "1":
        key = _kept(data / "provider.key", lambda: "0x" + secrets.token_hex(32))
        address = provider_address(key)
        env["ALLOWED_PROVIDERS"] = json.dumps([address])
        notes.append(f"provider allowlist: {address}  (its key is in {data / 'provider.key'})")
    else:
        notes.append(f"provider allowlist: {env.get('ALLOWED_PROVIDERS') or '(none)'}")
    return notes


def start_cluster(env: MutableMapping[str, str], data: Path, wanted: str, reaper: Reaper) -> str:
    """The cluster the run registers WorkFlows in: the one CLUSTER/KUBECONFIG name, else the
    local control plane when its binaries are built (`make testbin`), else none."""
    if env.get("CLUSTER") or env.get("KUBECONFIG"):
        return (
            f"cluster: CLUSTER={env.get('CLUSTER', 'auto')} KUBECONFIG={env.get('KUBECONFIG', '')}"
        )
    assets = controlplane.find_assets() if wanted != "off" else None
    if assets is None:
        env["CLUSTER"] = "off"
        if wanted == "on":
            raise SystemExit("operator-service: no control-plane binaries; run `make testbin`")
        return "cluster: off (`make testbin` builds a local control plane the run then starts)"
    workdir = data / "control-plane"
    shutil.rmtree(workdir, ignore_errors=True)  # a fresh cluster each run; jobs stay in the DB
    plane = controlplane.start(assets, workdir)
    for process in plane.processes:  # a fresh cluster each run: nothing in it to shut down
        reaper.process_ends(process.pid, grace=CONTROL_PLANE_GRACE)
    env["CLUSTER"], env["KUBECONFIG"] = "kubeconfig", str(plane.admin_kubeconfig)
    return (
        f"cluster: local control plane at {plane.url} "
        f"(kubectl --kubeconfig {plane.admin_kubeconfig} get workflows -A)"
    )


def provider_address(key: str) -> str:
    """The key's Ethereum address (the Provider's or the operator's), through libsecp256k1
    directly: eth-account would raise the interpreter's recursion limit for the server this
    process forks (py_ecc sets 100,000)."""
    return OperatorKey.from_hex(key).address


def initialise(settings: Settings) -> None:
    db = Database(settings)
    try:
        store.apply_schema(db)
    finally:
        db.close()


def start_engine(
    env: MutableMapping[str, str], data: Path, settings: Settings, wanted: str, reaper: Reaper
) -> str:
    """The engine beside the API, unless it is off or cannot run here; without one, the
    default environment is announced so that starts work, and jobs wait for an engine."""
    missing = compute.available() if wanted != "off" else "--engine off"
    if missing is None:
        try:
            engine = compute.start(env, data, settings)
        except RuntimeError as exc:
            missing = str(exc)
        else:
            reaper.process_ends(engine.process.pid, grace=ENGINE_GRACE)
            return (
                f"engine: running jobs in sandboxes, environments in {engine.config}; "
                f"its metrics at {engine.status_url}/metrics"
            )
    if wanted == "on":
        raise SystemExit(f"operator-service: cannot start the engine: {missing}")
    db = Database(settings)
    try:
        status = {"id": settings.default_namespace, "description": "announced by the local run"}
        db.execute(
            "SELECT * FROM announce(:env, :status, 0)",
            env=settings.default_namespace,
            status=json.dumps(status),
        )
    finally:
        db.close()
    return (
        f"engine: not running ({missing}); environment '{settings.default_namespace}' "
        "announced, and its jobs wait at 'Warming up'"
    )


def serve(
    app: WSGIApp,
    *,
    host: str,
    port: int,
    workers: int,
    threads: int,
    reaper: Reaper | None = None,
) -> None:
    """gunicorn with worker processes of a thread pool each: the server functions-framework
    runs in the cluster (one worker a pod there), with the same settings."""
    import gunicorn.app.base

    class Server(gunicorn.app.base.BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            options = {
                "bind": f"{host}:{port}",
                "workers": workers,
                "threads": threads,
                "timeout": 0,
                "loglevel": "warning",
                "limit_request_line": 0,
                # Slow clients read by the event loop, not by threads; gunicorn's own errors
                # (bad request line, huge headers) as JSON too.
                "worker_class": "local.worker.ServiceWorker",
                # A stop (SIGTERM) lets requests in flight finish, briefly: a local run.
                "graceful_timeout": SERVER_GRACE,
            }
            if reaper is not None:  # the workers it forks let go of the run's reaper pipe
                options["post_fork"] = lambda server, worker: reaper.detach()
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> WSGIApp:
            return app

    Server().run()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.run", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8050)
    parser.add_argument("--data", type=Path, default=ROOT / ".data")
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes (default: one per core; bench/RESULTS.md)",
    )
    parser.add_argument("--threads", type=int, default=8, help="threads of each worker")
    parser.add_argument(
        "--engine",
        choices=("auto", "on", "off"),
        default="auto",
        help="run the engine beside the API (auto: when bubblewrap is installed)",
    )
    parser.add_argument(
        "--control-plane",
        choices=("auto", "on", "off"),
        default="auto",
        help="start the local etcd + kube-apiserver (auto: when built)",
    )
    args = parser.parse_args(argv)

    reaper = Reaper.start()
    atexit.register(reaper.finish)
    notes = prepare(os.environ, args.data.resolve(), reaper, control_plane=args.control_plane)
    try:
        settings = Settings.from_env(os.environ)
        initialise(settings)
        notes.append(start_engine(os.environ, args.data.resolve(), settings, args.engine, reaper))
    except ConfigError as exc:
        print(f"operator-service: {exc}", file=sys.stderr)
        return 2
    except Unavailable as exc:
        print(f"operator-service: {exc.message}", file=sys.stderr)
        return 1
    print(f"operator-service listening on http://{args.host}:{args.port}/", flush=True)
    print(f"  server: {args.workers} worker process(es) x {args.threads} threads")
    for note in notes:
        print(f"  {note}")
    for warning in settings.warnings():
        print(f"  warning: {warning}")
    print(f"  API docs: http://{args.host}:{args.port}{routes.DOCS}", flush=True)
    app = Dispatcher(function_apps())
    serve(
        app,
        host=args.host,
        port=args.port,
        workers=args.workers,
        threads=args.threads,
        reaper=reaper,
    )
    return 0


def _kept(path: Path, make: Callable[[], str]) -> str:
    """A value made once and kept in `path`, readable by its owner only."""
    if path.exists():
        return path.read_text().strip()
    value = make()
    path.touch(mode=0o600)
    path.write_text(value + "\n")
    return value


if __name__ == "__main__":
    sys.exit(main())
