"""The stage machine: one claimed job, from whatever status it is at, to 70.

Each step reads the job's stored status, does the one thing that status calls for, and
persists the next status before the next step, so an engine that takes over a job knows from
the row alone what is left (the `STEPS` table). A stop, a deadline, a failure or an exceeded
quota ends the running stage and sends the job to publishing; every job ends at 70 with
dateFinished, and its logs say why.

What a takeover does at each status (an engine died holding the job):
- 20, 30: configure again from an empty folder (fetching is idempotent).
- 40: the algorithm is not run again (paid, maybe not idempotent, maybe what killed the
  engine). Where it still runs without its engine (a Kubernetes Job), the new engine waits
  for it and publishes as usual; otherwise its partial outputs are dropped, the logs are
  published, the job ends.
- 31, 32, 50, 60: publish again from the start.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from common import meta
from common.statuses import Status
from engine import images, metrics, receipts
from engine.config import EngineConfig, Environment
from engine.images import ImageRefused
from engine.queue import Claimed, Queue
from engine.receipts import OperatorKey
from engine.results import ResultsStore
from engine.runner import (
    Ending,
    ImageRequest,
    Limits,
    Outcome,
    PullStopped,
    Runner,
    Stage,
    StageSpec,
)
from engine.workflows import WorkflowMirror

log = logging.getLogger(__name__)

# How often a running stage is polled: often at first, since most stages are short, then at
# most every 0.1 s (a stop wakes the wait at once anyway).
FIRST_WAIT_SECONDS, WAIT_SECONDS = 0.002, 0.1
STAGE_MEMORY = 512 * 1024 * 1024  # configure and publish run our own small program
# The statuses a job is published from: after a failed configure, or while publishing.
PUBLISHING = (Status.DATA_FAILED, Status.ALGORITHM_FAILED, Status.FILTERING, Status.PUBLISHING)


class Abandoned(Exception):
    """The engine is letting go of the job (shutting down, or its lease was lost)."""


@dataclass(frozen=True)
class Context:
    """What every job run shares: the engine's configuration and parts."""

    config: EngineConfig
    queue: Queue
    runner: Runner[Any]
    results: ResultsStore
    workflows: WorkflowMirror | None = None  # where a cluster holds the jobs' WorkFlows
    operator: OperatorKey | None = None  # signs receipts; without it they go unsigned


class JobRun:
    def __init__(self, job: Claimed, env: Environment, context: Context) -> None:
        self.job = job
        self.env = env
        self.ctx = context
        self.stop_requested = threading.Event()  # set by the engine: stopreq = 1 arrived
        self.abandon = threading.Event()  # set by the engine: drop the job, write nothing
        self.done = threading.Event()  # set when the run wrote its last: its slot is free
        self.with_outputs = True
        self.stop_honoured = False  # a stop ends one stage; what follows is publishing
        self.status = job.status  # the stored status this run is at, for /metrics
        # How the job ended (engine.metrics.OUTCOMES), as the steps find out.
        self.outcome = "resumed" if job.status in PUBLISHING else metrics.COMPLETED
        if job.stop_requested:
            self.stop_requested.set()
            # Taken over while publishing after a stop: that stop was honoured already.
            self.stop_honoured = job.status in PUBLISHING

    @property
    def job_id(self) -> str:
        return self.job.job_id

    @property
    def data(self) -> Path:
        return self.ctx.config.work_root / self.job_id

    def run(self) -> None:
        """Drive the job to 70. Returns early, writing nothing more, if abandoned."""
        status = Status(self.job.status)
        if self.job.taken_over:
            log.info("job %s taken over at status %s", self.job_id, status)
        if status == Status.PROVISIONED:  # configured by an engine that died: maybe elsewhere
            self.persist(Status.CONFIGURING)
            status = Status.CONFIGURING
        while status != Status.FINISHED:
            status = STEPS[status](self)

    # The steps, one per stored status; each returns the status it persisted.

    def configure(self) -> Status:
        if self.stop_requested.is_set():
            return self.to_publish(Stage.CONFIGURE, "stop requested before configuring")
        self.ctx.runner.make_folder(
            self.data, disk_bytes=self.env.disk_bytes, files=self.env.max_files
        )
        began = time.monotonic()
        try:
            self.prepare_image()
        except PullStopped:
            return self.to_publish(Stage.CONFIGURE, "stopped on request while pulling the image")
        except ImageRefused as exc:
            self.note(Stage.CONFIGURE, f"the algorithm's image: {exc}")
            return self.failed(Status.ALGORITHM_FAILED)
        (self.data / "ddos").mkdir()
        self.ctx.runner.provide(self.data / "ddos")  # configure replaces the workflow in it
        ocean_stage = self.ocean_stage()
        (self.data / "ddos" / "workflow.json").write_text(json.dumps(ocean_stage))
        config = self.ctx.config
        env = {
            "MAX_INPUT_BYTES": str(min(config.max_input_bytes, self.env.disk_bytes)),
            "INPUT_ROOTS": json.dumps([str(p) for p in config.input_roots]),
            "ALLOW_NETWORKS": json.dumps(self.env.allow_networks),
            "FETCH_SECONDS": str(config.fetch_seconds),
            "FETCH_MIN_RATE": str(config.fetch_min_rate),
        }
        binds = tuple((root, str(root), False) for root in config.input_roots)
        outcome = self.run_stage(
            self.stage_spec(
                Stage.CONFIGURE,
                _inside_program("configure"),
                env=env,
                # Only what it fetches over the network needs one; the algorithm never gets it.
                network=_fetches_remotely(ocean_stage),
                allow_networks=self.env.allow_networks,
                binds=binds,
                limits=self.stage_limits(spent=time.monotonic() - began),  # the pull's too
            )
        )
        if outcome.ending is Ending.STOPPED:
            return self.to_publish(Stage.CONFIGURE, "stopped on request while configuring")
        if outcome.succeeded and not _entrypoint(ocean_stage):
            self.note(Stage.CONFIGURE, "the algorithm has no container entrypoint")
            return self.failed(Status.ALGORITHM_FAILED)
        if outcome.succeeded:
            self.notes.write("fetched", receipts.fetched(self.data, ocean_stage))
            self.persist(Status.PROVISIONED)
            return Status.PROVISIONED
        # configure exits with the status to fail with, where it knows which (engine/inside.py)
        failed = (Status.DATA_FAILED, Status.ALGORITHM_FAILED)
        code = outcome.exit_code if outcome.exit_code in failed else Status.DATA_FAILED
        self.note(Stage.CONFIGURE, f"configure {outcome.describe()}")
        return self.failed(Status(code))

    def prepare_image(self) -> None:
        """The algorithm's image made ready as the environment says, before configure (its
        pull counts within stageSeconds); what will run is noted for the algorithm stage and
        the receipt. ImageRefused says why it will not run."""
        self.notes.write("image", None)  # what an earlier configure of the job noted
        container = (self.ocean_stage().get("algorithm") or {}).get("container") or {}
        ref = images.from_container(container)
        if ref is None:
            return
        env, config = self.env, self.ctx.config
        if not ref.allowed_by(env.allowed_registries):
            raise ImageRefused(
                f"image {ref} is from none of the registries this environment allows "
                f"({', '.join(env.allowed_registries)})"
            )
        request = ImageRequest(
            ref=ref,
            runtime=env.runtime,
            pull_policy=env.pull_policy,
            allowed_registries=env.allowed_registries,
            allow_networks=env.allow_networks,
            seconds=min(config.pull_seconds, config.stage_seconds),
            max_bytes=config.max_image_bytes,
            insecure=ref.registry in config.insecure_registries,
        )
        prepared = self.ctx.runner.prepare_image(request, self.stop_requested.is_set)
        self.note(Stage.CONFIGURE, prepared.detail)
        self.notes.write(
            "image",
            {
                "runtime": prepared.runtime,
                "reference": prepared.reference,
                "digest": prepared.digest,
                "detail": prepared.detail,
            },
        )

    def algorithm(self) -> Status:
        if self.stop_requested.is_set():
            return self.to_publish(Stage.ALGORITHM, "stop requested before the algorithm ran")
        self.persist(Status.RUNNING)
        outcome = self.wait_stage(self.start_stage(self.algorithm_spec()))
        return self.after_algorithm(outcome)

    def abandoned_algorithm(self) -> Status:
        """Taken over at 40. Where the stage outlived the engine that ran it (a Kubernetes
        Job), wait for it as that engine would have; otherwise it is not run twice."""
        handle = self.ctx.runner.resume(self.algorithm_spec())
        if handle is not None:
            self.note(
                Stage.ALGORITHM,
                "the engine running this algorithm was lost; the algorithm still runs, "
                "and this engine takes it over",
            )
            return self.after_algorithm(self.wait_stage((Stage.ALGORITHM, handle)))
        self.outcome = "engine_lost"
        self.ctx.runner.cleanup(self.job_id)  # a container may outlive the engine that ran it
        self.note(
            Stage.ALGORITHM,
            "the engine running this algorithm was lost; the algorithm is not run twice, "
            "its partial outputs are not published",
        )
        self.with_outputs = False
        self.persist(Status.PUBLISHING)
        return Status.PUBLISHING

    def algorithm_spec(self) -> StageSpec:
        ocean_stage = self.ocean_stage()
        algorithm = ocean_stage.get("algorithm") or {}
        image = self.notes.read("image") or {}
        inputs = [  # an input without id (a plain URL) is in no DID list
            item["id"]
            for item in ocean_stage.get("input") or []
            if isinstance(item, dict) and item.get("id")
        ]
        env = {
            "ALGO": "/data/transformations/algorithm",
            "DIDS": json.dumps(inputs),
            "TRANSFORMATION_DID": str(algorithm.get("id", "")),
            "VOLUME": "/data",
            "LOGS": "/data/logs",
            "INPUTS": "/data/inputs",
            "OUTPUTS": "/data/outputs",
            "secret": str(self.job.workflow.get("metadata", {}).get("secret", "")),
        }
        limits = Limits(
            seconds=self.env.max_job_duration,
            memory_bytes=self.env.ram_bytes,
            disk_bytes=self.env.disk_bytes,
            cpus=self.env.cpu_number,
            log_bytes=self.ctx.config.log_bytes,
        )
        return self.stage_spec(
            Stage.ALGORITHM,
            ("sh", "-c", _entrypoint(ocean_stage)),
            env=env,
            network=self.env.network,
            limits=limits,
            image=image.get("reference"),
            pull_policy=self.env.pull_policy,
            pull_secrets=self.env.image_pull_secrets,
        )

    def after_algorithm(self, outcome: Outcome) -> Status:
        self.note(Stage.ALGORITHM, f"the algorithm {outcome.describe()}")
        self.outcome = _algorithm_outcome(outcome)
        if outcome.ending is Ending.TIMEOUT:
            self.stop_honoured = True  # a stop arriving now must not cut the publishing short
            self.note(
                Stage.ALGORITHM,
                f"maxJobDuration is {self.env.max_job_duration} s: stopreq=2, "
                "publishing what the algorithm wrote",
            )
            self.persist(Status.PUBLISHING, stopreq=2)
            return Status.PUBLISHING
        self.persist(Status.PUBLISHING)
        return Status.PUBLISHING

    def start_publishing(self) -> Status:
        """After a failed configure (31, 32), or the original engine's filtering (50)."""
        self.persist(Status.PUBLISHING)
        return Status.PUBLISHING

    def publish(self) -> Status:
        results = self.ctx.results
        staging = results.staging(self.job_id)
        published = self.with_outputs and _has_entries(self.data / "outputs")
        if published:
            self.ctx.runner.provide(staging)
            outcome = self.run_stage(
                self.stage_spec(
                    Stage.PUBLISH,
                    _inside_program("publish"),
                    env={
                        "QUOTA_BYTES": str(self.outputs_quota()),
                        "MAX_OUTPUTS": str(self.ctx.config.max_outputs),
                    },
                    network=False,
                    binds=((staging, "/results", True),),
                    limits=self.stage_limits(),
                )
            )
            if not outcome.succeeded:
                self.note(Stage.PUBLISH, f"publish {outcome.describe()}; outputs not published")
                results.staging(self.job_id)
        else:
            self.note(Stage.PUBLISH, "no outputs to publish")
        self.note(Stage.PUBLISH, "job finished")
        self.ctx.runner.cleanup(self.job_id)
        entries = results.entries(self.job_id, with_outputs=published)
        receipt = self.receipt(entries)
        metrics.moved(downloaded=receipt["downloadedBytes"], published=receipt["publishedBytes"])
        entries.append(results.receipt(self.job_id, receipt, self.ctx.operator))
        self.ctx.queue.finish(self.job_id, entries)
        self.mirror(Status.FINISHED, 2 if self.outcome == "timeout" else None)
        metrics.finished(self.env.namespace, self.outcome)
        self.ctx.runner.remove_folder(self.data)
        log.info("job %s finished with %d published file(s)", self.job_id, len(entries))
        return Status.FINISHED

    def receipt(self, entries: list[dict[str, Any]]) -> dict[str, Any]:
        """What the job's receipt says (engine/receipts.py), from what the engine saw."""
        ocean_stage = self.ocean_stage()
        container = _container(ocean_stage)
        fetched = self.notes.read("fetched") or {"algorithm": {}, "inputs": []}
        image = self.notes.read("image") or {}
        outputs = [e for e in entries if e["type"] == "output"]
        env = self.env
        return {
            "version": receipts.VERSION,
            "jobId": self.job_id,
            "owner": self.job.owner,
            "agreementId": self.job.agreement_id,
            "chainId": self.job.chain_id,
            "provider": self.job.provider,
            "environment": {
                "id": env.namespace,
                "cpuNumber": env.cpu_number,
                "ramBytes": env.ram_bytes,
                "diskBytes": env.disk_bytes,
                "maxJobDurationSeconds": env.max_job_duration,
                "priceMin": str(env.price_min),
            },
            "algorithm": {
                **fetched["algorithm"],
                "image": f"{container.get('image')}:{container.get('tag', 'latest')}"
                if container.get("image")
                else None,
                "imageDigest": image.get("digest"),
                "runtime": image.get("runtime"),
                "entrypoint": _entrypoint(ocean_stage),
            },
            "inputs": fetched["inputs"],
            "downloadedBytes": fetched.get("downloadedBytes", 0),
            "outputs": [_listed(e) for e in outputs],
            "logs": [_listed(e) for e in entries if e["type"] != "output"],
            "publishedBytes": sum(e["filesize"] for e in outputs),
            "stages": dict(self.notes.stages()),
            "outcome": self.outcome,
            "stopRequested": self.stop_requested.is_set(),
            "takenOver": self.job.taken_over,
            "network": {
                "algorithm": "filtered egress" if env.network else "none",
                "configureAllowNetworks": list(env.allow_networks),
            },
            "engine": {"id": self.ctx.queue.me, "version": meta.version()},
            "createdMs": receipts.ms(self.job.created),
            "finishedMs": receipts.ms(time.time()),
        }

    def end_after_error(self) -> None:
        """The engine failed on this job in a way a retry would meet again: publish the logs
        and end the job at 70, best effort (a takeover still follows if even this fails)."""
        try:
            self.note(Stage.PUBLISH, "the engine failed on this job (its log has the details)")
            self.outcome = "engine_error"
            entries = self.ctx.results.entries(self.job_id, with_outputs=False)
            try:  # the receipt too, saying so, unless what failed is what makes it
                receipt = self.ctx.results.receipt(
                    self.job_id, self.receipt(entries), self.ctx.operator
                )
                entries.append(receipt)
            except Exception:
                log.exception("job %s: no receipt", self.job_id)
            self.ctx.queue.finish(self.job_id, entries)
            self.mirror(Status.FINISHED)
            metrics.finished(self.env.namespace, "engine_error")
            self.ctx.runner.remove_folder(self.data)
        except Exception:
            log.exception("job %s: could not end it; left for a takeover", self.job_id)

    # Helpers of the steps.

    def persist(self, status: Status, *, stopreq: int | None = None) -> None:
        self.ctx.queue.set_status(self.job_id, status, stopreq=stopreq)
        self.status = status
        self.mirror(status, stopreq)

    def mirror(self, status: Status, stopreq: int | None = None) -> None:
        """The status just persisted, into the job's WorkFlow (when there is a cluster)."""
        if self.ctx.workflows is None:
            return
        if stopreq is None:
            stopreq = 1 if self.stop_requested.is_set() else 0
        self.ctx.workflows.status(
            self.job_id,
            self.env.namespace,
            status=status,
            text=status.text,
            stopreq=stopreq,
        )

    def to_publish(self, stage: Stage, why: str) -> Status:
        """A stop ended the job before or during `stage`."""
        self.stop_honoured = True
        self.outcome = "stopped"
        self.note(stage, why)
        self.persist(Status.PUBLISHING)
        return Status.PUBLISHING

    def failed(self, status: Status) -> Status:
        self.outcome = "data_failed" if status == Status.DATA_FAILED else "algorithm_failed"
        self.persist(status)
        self.with_outputs = False
        return status

    def note(self, stage: Stage, text: str) -> None:
        self.ctx.results.note(self.job_id, stage, text)

    def ocean_stage(self) -> dict[str, Any]:
        """Stage 0 of Ocean's workflow, as the Provider sent it: what the job is to run, on what
        (not one of our `Stage`s, which are the steps that run it)."""
        stages = self.job.workflow.get("spec", {}).get("metadata", {}).get("stages") or [{}]
        first = stages[0]
        return first if isinstance(first, dict) else {}

    def stage_limits(self, *, spent: float = 0.0) -> Limits:
        """Configure's and publish's limits; `spent`: seconds of stageSeconds used already."""
        return Limits(
            seconds=max(1.0, self.ctx.config.stage_seconds - spent),
            memory_bytes=max(STAGE_MEMORY, self.env.ram_bytes),
            disk_bytes=self.env.disk_bytes,
            log_bytes=self.ctx.config.log_bytes,
        )

    def outputs_quota(self) -> int:
        """What the outputs may publish: the job's disk, less its logs (the publish log's
        whole allowance kept for it), so results, logs included, stay within diskGB."""
        logs = sum(self.ctx.results.log_size(self.job_id, stage) for stage in Stage)
        return max(0, self.env.disk_bytes - logs - self.ctx.config.log_bytes)

    def run_stage(self, spec: StageSpec) -> Outcome:
        return self.wait_stage(self.start_stage(spec))

    def stage_spec(
        self,
        stage: Stage,
        argv: tuple[str, ...],
        *,
        env: dict[str, str],
        network: bool,
        limits: Limits,
        allow_networks: tuple[str, ...] = (),
        image: str | None = None,
        pull_policy: str = "IfNotPresent",
        pull_secrets: tuple[str, ...] = (),
        binds: tuple[tuple[Path, str, bool], ...] = (),
    ) -> StageSpec:
        return StageSpec(
            job_id=self.job_id,
            stage=stage,
            argv=argv,
            data=self.data,
            log=self.ctx.results.log(self.job_id, stage),
            limits=limits,
            env=env,
            network=network,
            allow_networks=allow_networks,
            image=image,
            pull_policy=pull_policy,
            pull_secrets=pull_secrets,
            extra_binds=binds,
            namespace=self.env.namespace,
        )

    def start_stage(self, spec: StageSpec) -> tuple[Stage, Any]:
        line = f"{spec.stage} starts: {self.ctx.runner.describe(spec)}"
        image = self.notes.read("image") if spec.stage is Stage.ALGORITHM else None
        if image:  # which runtime runs it, and why
            line += f"; {image['detail']}"
        self.note(spec.stage, line)
        return spec.stage, self.ctx.runner.start(spec)

    def wait_stage(self, started: tuple[Stage, Any]) -> Outcome:
        """The stage's outcome, once it ended; a stop ends the stage that runs when it arrives.
        The publishing that follows a stopped stage is not stopped again, or a stop would
        throw away finished outputs."""
        stage, handle = started
        runner = self.ctx.runner
        stoppable = not self.stop_honoured
        pause = FIRST_WAIT_SECONDS
        while True:
            outcome = runner.poll(handle)
            if outcome is not None:
                return self.stage_ended(stage, outcome)
            if self.abandon.is_set():
                runner.release(handle)
                raise Abandoned(self.job_id)
            waiting_on = self.stop_requested if stoppable else self.abandon
            pause = min(pause * 2, WAIT_SECONDS)
            if waiting_on.wait(pause) and stoppable:
                self.stop_honoured = True
                return self.stage_ended(stage, runner.stop(handle))

    def stage_ended(self, stage: Stage, outcome: Outcome) -> Outcome:
        metrics.stage_ended(stage, outcome)
        self.notes.write(str(stage), receipts.stage_record(outcome))
        return outcome

    @property
    def notes(self) -> receipts.Notes:
        """What the engine saw of the job, for its receipt."""
        return receipts.Notes(self.ctx.results.folder(self.job_id) / "receipt")


STEPS: dict[Status, Callable[[JobRun], Status]] = {
    Status.CONFIGURING: JobRun.configure,
    Status.PROVISIONED: JobRun.algorithm,
    Status.DATA_FAILED: JobRun.start_publishing,
    Status.ALGORITHM_FAILED: JobRun.start_publishing,
    Status.RUNNING: JobRun.abandoned_algorithm,
    Status.FILTERING: JobRun.start_publishing,  # the original engine's, where ours never stops
    Status.PUBLISHING: JobRun.publish,
}


def _algorithm_outcome(outcome: Outcome) -> str:
    if outcome.succeeded:
        return metrics.COMPLETED
    if outcome.ending is Ending.TIMEOUT:
        return "timeout"
    if outcome.ending is Ending.STOPPED:
        return "stopped"
    if outcome.ending in (Ending.QUOTA, Ending.MEMORY):
        return str(outcome.ending)
    return "algorithm_failed"  # a non-zero exit, or it could not start


def _has_entries(folder: Path) -> bool:
    """Whether the algorithm left anything in its outputs folder, links included, without
    following one (the engine is root): publishing reports what it skips and why."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # a link or a file in its place: publishing says it publishes nothing
    try:
        with os.scandir(fd) as entries:
            return any(True for _ in entries)
    finally:
        os.close(fd)


def _listed(entry: dict[str, Any]) -> dict[str, Any]:
    return {key: entry[key] for key in ("filename", "filesize", "sha256", "type")}


def _fetches_remotely(ocean_stage: dict[str, Any]) -> bool:
    """Whether configure fetches anything but raw code and file:// inputs (a URL it cannot
    read as text counts, so that configure reports it)."""
    algorithm = ocean_stage.get("algorithm") or {}
    urls: list[Any] = []
    if isinstance(algorithm, dict) and not algorithm.get("rawcode"):
        urls.append(algorithm.get("url"))
    for item in ocean_stage.get("input") or []:
        if isinstance(item, dict) and not item.get("remote"):
            found = item.get("url")
            urls += found if isinstance(found, list) else [found]
    return any(not (isinstance(url, str) and url.startswith("file:")) for url in urls if url)


def _container(ocean_stage: dict[str, Any]) -> dict[str, Any]:
    """The algorithm's container, or {} where a careless writer stored something else."""
    algorithm = ocean_stage.get("algorithm")
    container = algorithm.get("container") if isinstance(algorithm, dict) else None
    return container if isinstance(container, dict) else {}


def _entrypoint(ocean_stage: dict[str, Any]) -> str:
    entrypoint = _container(ocean_stage).get("entrypoint")
    return entrypoint if isinstance(entrypoint, str) else ""


def _inside_program(name: str) -> tuple[str, ...]:
    return ("python3", "-I", "-c", _inside_source(), name)


@functools.cache
def _inside_source() -> str:
    return resources.files("engine").joinpath("inside.py").read_text()
