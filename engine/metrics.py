"""What the engine counts, for Prometheus, beside common.metrics's process metrics.

Counters are bumped where things happen (a claim, a stage's end, a job's end). What the engine
holds right now and the queue behind it are read at scrape time from the engine's memory
(`EngineCollector`): the queue's length and its oldest job's age are measured at each
heartbeat, with the announcement, so a scrape never queries the database.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from engine.runner import Ending, Outcome, Stage
from engine.snapshot import Snapshot

# How a job ended, as its logs tell it; each is a label value of JOBS_FINISHED.
COMPLETED = "completed"  # the algorithm exited 0 (its outputs may still have been refused)
OUTCOMES = (
    COMPLETED,
    "algorithm_failed",  # exited non-zero, could not start, or has no entrypoint
    "data_failed",  # configure could not fetch the inputs or the algorithm
    "timeout",  # maxJobDuration
    "stopped",  # stopreq = 1
    "quota",  # wrote more than the environment's disk
    "memory",  # used more than the environment's memory, as a whole
    "engine_lost",  # taken over at 40: the algorithm is not run twice
    "engine_error",  # the engine failed on the job (its log says where)
    "resumed",  # taken over while publishing: how it ended is in the job's own logs
)

JOBS_CLAIMED = Counter(
    "engine_jobs_claimed",
    "Jobs this engine took: new ones, or takeovers of a lapsed lease",
    ["environment", "kind"],
)
JOBS_FINISHED = Counter(
    "engine_jobs_finished",
    "Jobs this engine brought to 70, by how they ended",
    ["environment", "outcome"],
)
STAGE_SECONDS = Histogram(
    "engine_stage_duration_seconds",
    "Wall-clock time of each stage run, by stage and by how it ended (its count by `ending` "
    "counts failures, timeouts and stops)",
    ["stage", "ending"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200),
)


STAGE_CPU_SECONDS = Counter(
    "engine_stage_cpu_seconds",
    "CPU time of stages as their control groups counted it, by stage",
    ["stage"],
)
STAGE_PEAK_MEMORY = Histogram(
    "engine_stage_peak_memory_bytes",
    "The most memory each stage's control group held at once, by stage",
    ["stage"],
    buckets=tuple(2**power for power in range(20, 36)),  # 1 MiB to 32 GiB
)
JOB_BYTES = Counter(
    "engine_job_bytes",
    "Bytes configure downloaded and publish published, as the jobs' receipts say",
    ["direction"],
)


def claimed(environment: str, takeover: bool) -> None:
    JOBS_CLAIMED.labels(environment, "takeover" if takeover else "new").inc()


def finished(environment: str, outcome: str) -> None:
    JOBS_FINISHED.labels(environment, outcome).inc()


def stage_ended(stage: Stage, outcome: Outcome) -> None:
    STAGE_SECONDS.labels(str(stage), ending(outcome)).observe(
        max(0.0, outcome.finished - outcome.started)
    )
    if outcome.usage_basis != "control group":
        return  # only what the kernel counted: a pod's requests are not its usage
    if outcome.cpu_seconds is not None:
        STAGE_CPU_SECONDS.labels(str(stage)).inc(outcome.cpu_seconds)
    if outcome.peak_memory_bytes is not None:
        STAGE_PEAK_MEMORY.labels(str(stage)).observe(outcome.peak_memory_bytes)


def moved(*, downloaded: int, published: int) -> None:
    JOB_BYTES.labels("downloaded").inc(downloaded)
    JOB_BYTES.labels("published").inc(published)


def ending(outcome: Outcome) -> str:
    """succeeded, failed (non-zero exit), timeout, stopped, quota, memory or not_started."""
    if outcome.ending is Ending.EXITED:
        return "succeeded" if outcome.exit_code == 0 else "failed"
    if outcome.ending is Ending.FAILED:
        return "not_started"
    return str(outcome.ending)


class EngineCollector(Collector):
    """The engine's present, read at scrape time: jobs held by status, the queue behind each
    environment as of the last heartbeat, and when the loop last turned."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        now = self.snapshot()
        held = GaugeMetricFamily(
            "engine_jobs",
            "Jobs this engine holds, by their status",
            labels=["environment", "status"],
        )
        for (namespace, status), count in sorted(now.held.items()):
            held.add_metric([namespace, str(status)], count)
        yield held

        length = GaugeMetricFamily(
            "engine_queue_length",
            "Jobs waiting (status 1) in each environment, as of the last heartbeat",
            labels=["environment"],
        )
        oldest = GaugeMetricFamily(
            "engine_queue_oldest_age_seconds",
            "How long the oldest waiting job has waited (0 when none waits)",
            labels=["environment"],
        )
        moment = time.time()
        for namespace, backlog in sorted(now.backlogs.items()):
            length.add_metric([namespace], backlog.length)
            since = backlog.oldest_since
            oldest.add_metric([namespace], 0.0 if since is None else max(0.0, moment - since))
        yield length
        yield oldest

        turned = GaugeMetricFamily(
            "engine_last_turn_timestamp_seconds",
            "When the engine's loop last completed a turn (Unix time)",
        )
        turned.add_metric([], now.last_turn)
        yield turned
