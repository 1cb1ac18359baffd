"""Where a request's CPU goes: py-spy samples the service's one worker process while the Go
generator drives a scenario at concurrency 32, for this tree and, with --baseline, for another
commit, and the trivial reference for what the server stack itself costs. Each sample goes to
the innermost part of the code it is in; the shares times the CPU per request measured in the
same run give milliseconds per request, part by part. It writes its own section of
bench/RESULTS.md, which `bench.run` keeps.

    .venv/bin/python -m bench.profile --baseline 43db92b    # about 3 minutes
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

from bench import load, sections
from bench.cpu import per_request_ms
from bench.report import SERVICE_SEED, service, table
from bench.run import HERE, Bench, Target, git_worktree

SECONDS = 12
SPY = Path(sys.executable).parent / "py-spy"
# The parts of a request, each known by the files its frames are in. A sample goes to the
# innermost frame that names a part: a socket read in pg8000 is pg8000's, in gunicorn
# gunicorn's, and the standard library's frames go to whoever called them.
PARTS = {
    "signature (libsecp256k1, keccak)": ("recover_signer", "coincurve", "eth_hash", "eth_utils"),
    "PostgreSQL client (pg8000)": ("pg8000",),
    "metrics (prometheus_client)": ("prometheus_client",),
    "Flask, werkzeug, functions-framework": ("flask", "werkzeug", "functions_framework"),
    "gunicorn and the local worker": ("gunicorn", "local/worker.py", "local/intake.py"),
    "our code (common/, functions/)": ("common/", "functions/"),
}
OTHER = "anything else"


def worker_of(master: int) -> int:
    """gunicorn's worker: the master's child with the master's command line."""
    own = Path(f"/proc/{master}/cmdline").read_bytes()
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    (pid,) = [int(c) for c in children if Path(f"/proc/{c}/cmdline").read_bytes() == own]
    return pid


def shares(stacks: str) -> dict[str, float]:
    """py-spy's raw output (one `frame;frame;... count` a line) as each part's share."""
    counts: Counter[str] = Counter()
    for line in stacks.splitlines():
        frames, _, count = line.rpartition(" ")
        part = OTHER
        for frame in reversed(frames.split(";")):
            found = [name for name, marks in PARTS.items() if any(m in frame for m in marks)]
            if found:
                part = found[0]
                break
        counts[part] += int(count)
    total = sum(counts.values()) or 1
    return {part: counts[part] / total for part in [*PARTS, OTHER]}


def profile(bench: Bench, target: Target, scenario: str, work: Path) -> dict[str, float]:
    """Milliseconds of the worker's CPU per request, part by part, and in all."""
    requests = bench.requests(scenario, 3000 * SECONDS, target.probe)
    out = work / f"{target.label}-{scenario}.txt".replace(" ", "_").replace(",", "")
    argv = [str(SPY), "record", "-r", "200", "-d", str(SECONDS), "--format", "raw"]
    spy = subprocess.Popen(
        [*argv, "-o", str(out), "-p", str(worker_of(target.pid))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)  # py-spy attached
    before = bench.meter.sample(target.pid)
    result = load.run(target.url, scenario, requests, 32, SECONDS - 1)
    after = bench.meter.sample(target.pid)
    spy.wait(timeout=60)
    total = per_request_ms(before, after, len(result.latencies_ms))["service"]
    found = {part: share * total for part, share in shares(out.read_text()).items()}
    return {**found, "all": total}


def markdown(found: dict[str, dict[str, float]], baseline: str | None) -> str:
    columns = list(found)
    lines = [[part, *(f"{found[c][part]:.2f}" for c in columns)] for part in [*PARTS, OTHER]]
    lines.append(["**all (measured)**", *(f"**{found[c]['all']:.2f}**" for c in columns)])
    command = "-m bench.profile" + (f" --baseline {baseline}" if baseline else "")
    return "\n".join(
        [
            "## Where a request's CPU goes",
            "",
            f"Regenerate with `.venv/bin/python {command}`. py-spy samples the one worker "
            f"process of each target for {SECONDS} s while the Go generator drives the scenario "
            "at concurrency 32; each sample goes to the innermost frame of a known part; the "
            "shares are multiplied by the worker's CPU per request measured in the same run. "
            "Milliseconds of the service's CPU per request (the profiler's own cost included, "
            "so every column runs a little above the main tables):",
            "",
            *table(["part", *columns], lines),
            "",
            "The trivial column is what the server stack costs with no work at all: the service "
            "pays it too, so the work of a status or a start is the rest of its column.",
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("--baseline", metavar="REV", help="also profile the service at REV")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = parser.parse_args()
    if not SPY.exists():
        print("py-spy is missing: make test installs the dev dependencies", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="operator-profile-"))
    found: dict[str, dict[str, float]] = {}
    with ExitStack() as stack:
        bench = Bench(SECONDS, work, stack)
        found["trivial handler"] = profile(bench, bench.reference(1), "trivial", work)
        ours = bench.service(service(1), "profile_service", SERVICE_SEED)
        targets = [("", ours)]
        if args.baseline:
            tree = work / "baseline"
            stack.callback(
                subprocess.run, ["git", "worktree", "remove", "--force", str(tree)], cwd=HERE.parent
            )
            commit = git_worktree(args.baseline, tree)
            before = bench.service(
                f"baseline {commit}", "profile_baseline", SERVICE_SEED, tree=tree
            )
            targets.insert(0, (f" at {commit}", before))
        for scenario in ("status", "start"):
            for suffix, target in targets:
                label = f"{scenario}{suffix}" if suffix else f"{scenario} (this tree)"
                found[label] = profile(bench, target, scenario, work)
    sections.write(args.out, sections.PROFILE, markdown(found, args.baseline))
    print(f"wrote the profile section of {args.out}; py-spy's stacks are in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
