"""The boundary between the stage machine and whatever executes a stage.

A runner takes a `StageSpec` (what to run, on which job folder, within which limits) and
answers with an `Outcome` (exit code, why it ended, when). The local sandbox runner implements
it now; a Kubernetes Jobs runner implements the same calls. The stage machine never asks which
runner it has: deadlines are enforced by the runner where the work runs, and the machine only
reads the outcome.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

from engine.images import ImageRef


class Stage(enum.StrEnum):
    CONFIGURE = "configure"
    ALGORITHM = "algorithm"
    PUBLISH = "publish"


class Ending(enum.StrEnum):
    EXITED = "exited"  # the program ended by itself; see exit_code
    TIMEOUT = "timeout"  # the deadline passed and the runner killed it
    STOPPED = "stopped"  # the engine asked the runner to stop it
    QUOTA = "quota"  # it wrote more than the job's disk quota and was killed
    MEMORY = "memory"  # its memory, as a whole, reached the limit and the kernel killed it
    FAILED = "failed"  # it could not be started at all


@dataclass(frozen=True)
class Limits:
    seconds: float  # wall-clock deadline, counted from the stage's start
    memory_bytes: int
    disk_bytes: int  # the job folder as a whole; also the largest single file
    cpus: int = 1
    processes: int = 256
    open_files: int = 1024
    log_bytes: int = 10 * 1024 * 1024  # what the stage's log keeps of its output


@dataclass(frozen=True)
class StageSpec:
    job_id: str
    stage: Stage
    argv: tuple[str, ...]  # run inside the sandbox, /data as the working directory
    data: Path  # the job's folder, seen as /data inside
    log: Path  # stdout and stderr go here; written by the runner, never visible inside
    limits: Limits
    env: Mapping[str, str] = field(default_factory=dict)
    network: bool = False
    allow_networks: tuple[str, ...] = ()  # private networks it may reach all the same
    image: str | None = None  # the algorithm's image reference, prepared by `prepare_image`
    pull_policy: str = "IfNotPresent"  # where the runner's nodes pull it themselves (a cluster)
    pull_secrets: tuple[str, ...] = ()
    extra_binds: tuple[tuple[Path, str, bool], ...] = ()  # (host path, path inside, writable)
    namespace: str = ""  # the job's environment, where a cluster runs its stages


@dataclass(frozen=True)
class Outcome:
    ending: Ending
    exit_code: int | None
    started: float  # time.time() of the start
    finished: float
    detail: str = ""
    # What the stage used as the kernel counted it, where the runner can ask (its cgroup).
    cpu_seconds: float | None = None
    peak_memory_bytes: int | None = None
    usage_basis: str | None = None  # how they were found: "control group", or an estimate

    @property
    def succeeded(self) -> bool:
        return self.ending is Ending.EXITED and self.exit_code == 0

    def describe(self) -> str:
        took = f"after {self.finished - self.started:.1f} s"
        if self.ending is Ending.EXITED:
            return f"exited with code {self.exit_code} {took}"
        if self.ending is Ending.TIMEOUT:
            return f"killed at its deadline {took}"
        if self.ending is Ending.STOPPED:
            return f"stopped on request {took}"
        if self.ending in (Ending.QUOTA, Ending.MEMORY):
            return f"killed {took}: {self.detail}"
        return f"could not start: {self.detail}"


@dataclass(frozen=True)
class ImageRequest:
    """The algorithm's image, to be made ready before configure runs."""

    ref: ImageRef
    runtime: str | None  # the environment's: podman, host, or None (the runner's choice)
    pull_policy: str
    allowed_registries: tuple[str, ...]  # the operator's list; empty allows any
    allow_networks: tuple[str, ...]  # private networks a pull may reach all the same
    seconds: float  # the pull's deadline, counted from now
    max_bytes: int
    insecure: bool  # the operator's registry without TLS (or with a certificate of its own)


@dataclass(frozen=True)
class PreparedImage:
    runtime: str  # podman, host or kubernetes
    reference: str | None  # what the algorithm stage runs; None: the host's interpreters
    digest: str | None  # the digest that runs, where it is known before it runs
    detail: str  # one line for the configure log: what was done and why


class PullStopped(Exception):
    """A stop arrived while the image was being pulled."""


# What a runner hands back from `start`; only that runner looks inside.
HandleT = TypeVar("HandleT")


class Runner(Protocol[HandleT]):
    def provide(self, folder: Path) -> None:
        """Make a folder of the engine's writable by the stages this runner runs."""
        ...

    def make_folder(self, folder: Path, *, disk_bytes: int, files: int) -> None:
        """A job's folder, new and empty and writable by its stages, holding at most
        `disk_bytes` in at most `files` files where this runner can make the kernel say so."""
        ...

    def remove_folder(self, folder: Path) -> None:
        """A job's folder gone, whatever its stages left in it."""
        ...

    def prepare_image(self, request: ImageRequest, stopped: Callable[[], bool]) -> PreparedImage:
        """The algorithm's image ready to run (pulled, or left to the nodes that pull it),
        or ImageRefused saying why not; PullStopped when `stopped()` turns true meanwhile."""
        ...

    def start(self, spec: StageSpec) -> HandleT: ...

    def poll(self, handle: HandleT) -> Outcome | None:
        """The outcome once the stage ended (killing it at its deadline), else None."""
        ...

    def resume(self, spec: StageSpec) -> HandleT | None:
        """The stage `spec` describes, still running (or ended) after the engine that started
        it died, when this runner's stages outlive their engine; None when they cannot."""
        ...

    def stop(self, handle: HandleT) -> Outcome:
        """End the stage now, whatever it is doing, and everything it started."""
        ...

    def release(self, handle: HandleT) -> None:
        """The engine lets go of a running stage (it shuts down, or lost the job's lease):
        end it if it cannot outlive the engine, else leave it to the engine taking over."""
        ...

    def cleanup(self, job_id: str) -> None:
        """Remove whatever of the job's stages may still exist (an engine that died left it)."""
        ...

    def describe(self, spec: StageSpec) -> str:
        """One line for the stage's log: how and where this stage runs."""
        ...
