"""opctl: the operator API from a terminal, signed like the Provider.

Exit codes: 0 done; 1 the service refused the request (its message is printed); 2 a usage or
local error (bad key file, bad arguments); 3 the service is unavailable or unreachable;
4 `start --wait`: the job ended without success (stopped, timed out, failed, no outputs), or
`result`: the downloaded file does not match its published sha256.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import hashlib
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from opclient import verify
from opclient.client import Client, Download, ServiceError, Unreachable
from opclient.signing import Signer

DEFAULT_URL = "http://localhost:8050"
LOCAL_DATA = Path(".data")  # where `make run` keeps its Provider key and admin secret
OK, REFUSED, USAGE, UNAVAILABLE, JOB_FAILED = 0, 1, 2, 3, 4
WAIT_POLL_SECONDS = 0.25
CONTROLS = {
    code: f"\\x{code:02x}" for code in (*range(32), *range(127, 160)) if code not in (9, 10)
}
STATUS_COLUMNS = (
    *("jobId", "status", "statusText", "agreementId", "owner", "dateCreated", "results"),
    *("queuePosition", "estimatedStart"),  # a waiting job's, under our engine's fair queue
)


class UsageError(Exception):
    pass


class Refused(Exception):
    """The service answered, but not with what was asked for (a job that does not exist)."""


class JobFailed(Exception):
    """The job, or what it produced, is not what was asked for; the message says how."""


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        client = Client(url=args.url, signer=_signer(args), admin=_admin(args))
        shown = args.run(client, args)
    except ServiceError as error:
        print(f"opctl: {error.message} (HTTP {error.status})", file=sys.stderr)
        return UNAVAILABLE if error.status >= 500 else REFUSED
    except Unreachable as error:
        print(f"opctl: {error}", file=sys.stderr)
        return UNAVAILABLE
    except Refused as error:
        print(f"opctl: {error}", file=sys.stderr)
        return REFUSED
    except JobFailed as error:
        print(f"opctl: {error}", file=sys.stderr)
        return JOB_FAILED
    except (UsageError, ValueError, OSError) as error:
        print(f"opctl: {error}", file=sys.stderr)
        return USAGE
    if isinstance(shown, Yaml):
        print(json.dumps(shown.value, indent=2) if args.json else shown.text(), end="")
    elif shown is not None:
        print(json.dumps(shown, indent=2) if args.json else table(shown))
    return OK


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="opctl", description=__doc__.split("\n")[0])
    top.add_argument(
        "--url",
        default=os.environ.get("OPCTL_URL", DEFAULT_URL),
        help=f"the service (default $OPCTL_URL or {DEFAULT_URL})",
    )
    top.add_argument(
        "--key-file",
        type=Path,
        default=os.environ.get("OPCTL_KEY_FILE"),
        help="the Provider's private key, hex (default $OPCTL_KEY_FILE, "
        "$OPCTL_PROVIDER_KEY, or the local run's .data/provider.key)",
    )
    top.add_argument(
        "--admin",
        default=os.environ.get("OPCTL_ADMIN"),
        help="the admin secret (default $OPCTL_ADMIN or .data/admin-secret)",
    )
    top.add_argument("--version", action="version", version=f"opctl {_version()}")
    # --json before or after the command: the command's copy leaves the value alone when absent.
    top.add_argument("--json", action="store_true", help="print JSON instead of a table")
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON"
    )
    commands = top.add_subparsers(required=True, metavar="command")

    def command(
        name: str, run: Callable[[Client, argparse.Namespace], Any], text: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text, parents=[as_json])
        sub.set_defaults(run=run)
        return sub

    start = command("start", run_start, "start a job from a workflow file or from flags")
    start.add_argument("workflow", nargs="?", type=Path, help="a workflow JSON file")
    start.add_argument("--image", help="algorithm container image")
    start.add_argument("--tag", default="latest")
    start.add_argument("--entrypoint", default="$ALGO", help="e.g. 'python $ALGO'")
    start.add_argument("--algorithm-file", type=Path, help="algorithm source, sent as raw code")
    start.add_argument("--algorithm-url", help="where the job fetches the algorithm")
    start.add_argument("--algorithm-did", default="", help="the algorithm asset's DID, if any")
    start.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="URL",
        help="an input file's URL (repeat for several)",
    )
    start.add_argument("--environment", default="ocean-compute", help="compute environment")
    start.add_argument("--agreement-id", help="default: a new random id")
    start.add_argument("--owner", help="consumer address (default: the signer's)")
    start.add_argument("--chain-id", type=int)
    start.add_argument(
        "--wait",
        action="store_true",
        help="show the job's statuses as they pass; exit 0 when it finished with outputs",
    )

    for name, run, text in (
        ("status", run_status, "show jobs"),
        ("stop", run_stop, "ask the engine to stop jobs"),
        ("delete", run_delete, "stop jobs and remove their cluster objects"),
    ):
        sub = command(name, run, text)
        sub.add_argument("job_id", nargs="?")
        sub.add_argument("--agreement-id")
        sub.add_argument("--owner", help="default: the signer's address")

    result = command("result", run_result, "download one output file of a job")
    result.add_argument("job_id")
    result.add_argument("index", type=int)
    result.add_argument("-o", "--output", type=Path, help="file to write (default: its name)")
    result.add_argument("--owner", help="default: the signer's address")

    checks = command("verify", run_verify, "check a job's signed receipt and every file it lists")
    checks.add_argument("job_id", nargs="?", help="the job (not with --receipt)")
    checks.add_argument("--operator", help="the operator's address (default: GET /'s address)")
    checks.add_argument("--receipt", type=Path, help="a receipt file: its signature, offline")
    checks.add_argument("--owner", help="default: the signer's address")

    envs = command("environments", run_environments, "environments announced by engines")
    envs.add_argument("--chain-id", type=int)
    command("init", lambda c, a: c.init(), "create or upgrade the database schema (admin)")
    command("list", lambda c, a: c.workflows(), "WorkFlow names in Kubernetes (admin)")
    command("running", lambda c, a: c.running(), "unfinished jobs (admin)")
    info = command("info", run_info, "one WorkFlow object, as YAML (admin)")
    info.add_argument("job_id")
    logs = command("logs", run_logs, "a stage's pod log (admin)")
    logs.add_argument("job_id")
    logs.add_argument("component", choices=("configure", "algorithm", "filter", "publish"))
    return top


def run_start(client: Client, args: argparse.Namespace) -> Any:
    if args.workflow:
        workflow = json.loads(args.workflow.read_text())
    elif args.image:
        workflow = {"stages": [stage_from_flags(args)]}
    else:
        raise UsageError("give a workflow file, or at least --image")
    started = client.start(
        workflow=workflow,
        environment=args.environment,
        agreement_id=args.agreement_id or uuid.uuid4().hex,
        owner=args.owner,
        chain_id=args.chain_id,
    )
    return wait(client, started[0], owner=args.owner, as_json=args.json) if args.wait else started


def wait(client: Client, job: dict[str, Any], *, owner: str | None, as_json: bool) -> Any:
    """Follow a job to 70, a line per status seen (to stderr with --json); the job's last
    status object, or JobFailed when it ended stopped, timed out or without any output."""
    seen = None
    while True:
        if (job["status"], job.get("queuePosition")) != seen:
            seen = (job["status"], job.get("queuePosition"))
            moment = datetime.datetime.now(datetime.UTC).strftime("%H:%M:%S")
            line = f"{moment}  {job['jobId']}  {job['status']:>2}  {job['statusText'].strip()}"
            if job.get("queuePosition"):
                likely = _cell("estimatedStart", job.get("estimatedStart"))
                line += f", place {job['queuePosition']} in the queue, likely start {likely}"
            print(line, file=sys.stderr if as_json else sys.stdout, flush=True)
        if job["status"] == 70:
            break
        time.sleep(WAIT_POLL_SECONDS)
        [job] = client.status(job_id=job["jobId"], owner=owner)
    outputs = [r for r in job["results"] or [] if r.get("type") == "output"]
    if job["stopreq"] == 1:
        raise JobFailed(f"job {job['jobId']} was stopped")
    if job["stopreq"] == 2:
        raise JobFailed(f"job {job['jobId']} ran out of time (see `opctl logs`)")
    if not outputs:
        raise JobFailed(f"job {job['jobId']} finished without outputs (see `opctl logs`)")
    return [job] if as_json else None


def stage_from_flags(args: argparse.Namespace) -> dict[str, Any]:
    algorithm: dict[str, Any] = {
        "id": args.algorithm_did,
        "container": {"image": args.image, "tag": args.tag, "entrypoint": args.entrypoint},
    }
    if args.algorithm_file:
        algorithm["rawcode"] = args.algorithm_file.read_text()
    if args.algorithm_url:
        algorithm["url"] = args.algorithm_url
    # An id of its own, not the URL: the algorithm sees the ids (DIDS), never a URL.
    inputs = [{"id": f"input-{i}", "url": [url], "index": i} for i, url in enumerate(args.input)]
    return {"index": 0, "input": inputs, "algorithm": algorithm, "compute": {}, "output": {}}


def _job_filter(args: argparse.Namespace) -> dict[str, Any]:
    if not (args.job_id or args.agreement_id or args.owner):
        raise UsageError("give a job id, --agreement-id or --owner")
    return {"job_id": args.job_id, "agreement_id": args.agreement_id, "owner": args.owner}


def run_status(client: Client, args: argparse.Namespace) -> Any:
    return _found(client.status(**_job_filter(args)), args)


def run_stop(client: Client, args: argparse.Namespace) -> Any:
    return _found(client.stop(**_job_filter(args)), args)


def _found(jobs: list[dict[str, Any]], args: argparse.Namespace) -> list[dict[str, Any]]:
    """A named job the service does not show this owner does not exist, as far as it can tell."""
    if args.job_id and not jobs:
        raise Refused(f"no such job: {args.job_id} (for this owner)")
    return jobs


@dataclass(frozen=True)
class Yaml:
    """An object shown as kubectl shows one: YAML, without the server's bookkeeping."""

    value: Any

    def text(self) -> str:
        shown = copy.deepcopy(self.value)
        if isinstance(shown, dict) and isinstance(shown.get("metadata"), dict):
            shown["metadata"].pop("managedFields", None)
        return str(yaml.safe_dump(shown, sort_keys=False, allow_unicode=True))


def run_info(client: Client, args: argparse.Namespace) -> Yaml:
    return Yaml(client.info(args.job_id))


def run_delete(client: Client, args: argparse.Namespace) -> Any:
    return client.delete(**_job_filter(args))


def run_environments(client: Client, args: argparse.Namespace) -> Any:
    return client.environments(args.chain_id)


def run_logs(client: Client, args: argparse.Namespace) -> None:
    # A log is a stage's output: its escape sequences must not reach this terminal, whatever
    # version of the service sent it.
    sys.stdout.write(client.logs(args.job_id, args.component).translate(CONTROLS))
    return None


def run_result(client: Client, args: argparse.Namespace) -> Any:
    download = client.result(job_id=args.job_id, index=args.index, owner=args.owner)
    target = args.output or Path(Path(download.filename).name)
    digest = hashlib.sha256()
    written = save(download, target, digest)
    shown = {"file": str(target), "bytes": written}
    published = _published_sha256(client, args)
    if published is None:
        return shown
    if published != digest.hexdigest():
        raise JobFailed(f"{target}: sha256 {digest.hexdigest()} is not the published {published}")
    return {**shown, "sha256": published}


def run_verify(client: Client, args: argparse.Namespace) -> Any:
    if args.receipt:
        if not args.operator:
            raise UsageError("--receipt needs --operator: the address that must have signed it")
        checks = [verify.signature(json.loads(args.receipt.read_text()), args.operator)]
    elif args.job_id:
        checks = verify.online(client, args.job_id, operator=args.operator, owner=args.owner)
    else:
        raise UsageError("give a job id, or --receipt with --operator")
    rows = [check.row() for check in checks]
    if not all(check.ok for check in checks):
        print(json.dumps(rows, indent=2) if args.json else table(rows))
        failed = ", ".join(check.what for check in checks if not check.ok)
        raise JobFailed(f"the receipt does not hold: {failed}")
    return rows


def _published_sha256(client: Client, args: argparse.Namespace) -> str | None:
    """The checksum the engine published for this result, when it published one."""
    [job] = client.status(job_id=args.job_id, owner=args.owner) or [{}]
    results = job.get("results") or []
    entry = results[args.index] if 0 <= args.index < len(results) else {}
    found = entry.get("sha256") if isinstance(entry, dict) else None
    return found if isinstance(found, str) else None


def save(download: Download, target: Path, digest: hashlib._Hash) -> int:
    """Write the body to `target` as it arrives (hashing it into `digest`), with a progress
    bar on a terminal."""
    written = 0
    show = sys.stderr.isatty() and (download.size or 0) > 1024 * 1024
    with download.body, target.open("wb") as out:
        for chunk in download.chunks():
            out.write(chunk)
            digest.update(chunk)
            written += len(chunk)
            if show and download.size:
                done = written * 30 // download.size
                print(
                    f"\r[{'#' * done}{'.' * (30 - done)}] {written}/{download.size} bytes",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
    if show:
        print(file=sys.stderr)
    return written


def table(shown: Any) -> str:
    """Status objects as rows; other lists one item a line; objects as key: value."""
    if isinstance(shown, list) and shown and all(isinstance(row, dict) for row in shown):
        columns = [c for c in STATUS_COLUMNS if any(c in row for row in shown)]
        columns = columns or list(shown[0])
        rows = [[_cell(column, row.get(column)) for column in columns] for row in shown]
        widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
        lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
        return "\n".join(line.rstrip() for line in lines)
    if isinstance(shown, list):
        return "\n".join(str(item) for item in shown) if shown else "(none)"
    if isinstance(shown, dict):
        return "\n".join(
            f"{k}: {json.dumps(v) if isinstance(v, dict | list) else v}" for k, v in shown.items()
        )
    return str(shown)


def _cell(column: str, value: Any) -> str:
    if column in ("dateCreated", "lastSeen", "estimatedStart") and value:
        moment = datetime.datetime.fromtimestamp(float(value), datetime.UTC)
        return moment.strftime("%Y-%m-%d %H:%M:%S")
    if column == "results":
        return str(len(value)) if isinstance(value, list) else "0"
    return "" if value is None else str(value)


def _version() -> str:
    try:
        return metadata.version("operator-service")
    except metadata.PackageNotFoundError:
        return "unknown"


def _signer(args: argparse.Namespace) -> Signer | None:
    if args.key_file:
        return _read_key(Path(args.key_file))
    if os.environ.get("OPCTL_PROVIDER_KEY"):
        return Signer.from_hex(os.environ["OPCTL_PROVIDER_KEY"])
    local = LOCAL_DATA / "provider.key"
    return _read_key(local) if local.exists() else None


def _read_key(path: Path) -> Signer:
    try:
        return Signer.from_file(path)
    except (ValueError, TypeError):
        raise UsageError(f"{path} does not hold a private key (64 hex digits)") from None


def _admin(args: argparse.Namespace) -> str | None:
    if args.admin:
        return str(args.admin)
    local = LOCAL_DATA / "admin-secret"
    return local.read_text().strip() if local.exists() else None


if __name__ == "__main__":
    sys.exit(main())
