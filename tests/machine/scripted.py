"""A `Runner` whose stages do what each test scripts, at once, in this process: a test double
at our own interface (engine/runner.py), so that the stage machine's every path is tested in
milliseconds. The real runners are tested through real sandboxes and a real kube-apiserver
(tests/engine, tests/cluster); what is scripted here is only what a stage did and how it ended.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine.images import ImageRefused
from engine.runner import (
    Ending,
    ImageRequest,
    Outcome,
    PreparedImage,
    PullStopped,
    Stage,
    StageSpec,
)

OUTPUT = "result.txt"


@dataclass(frozen=True)
class Script:
    """What one stage does: leaves `files` in the job's folder, then ends as `ending` says,
    or runs until it is stopped or let go (`ending=None`)."""

    ending: Ending | None = Ending.EXITED
    exit_code: int | None = 0
    files: dict[str, bytes] = field(default_factory=dict)  # paths relative to /data
    detail: str = ""


# What each stage does unless a test says otherwise: configure leaves the algorithm and an
# input, the algorithm an output; publish copies the outputs as engine/inside.py does.
CONFIGURED = Script(files={"transformations/algorithm": b"print(1)", "inputs/0/0": b"a,b\n"})
COMPUTED = Script(files={f"outputs/{OUTPUT}": b"42\n"})
RUNS_UNTIL_STOPPED = Script(ending=None)


@dataclass
class Running:
    spec: StageSpec
    script: Script
    ended: Outcome | None = None


@dataclass
class ScriptedRunner:
    scripts: dict[Stage, Script] = field(default_factory=dict)
    # Whether a stage outlives its engine (as a Kubernetes Job does): `resume` finds it.
    outlives_engine: bool = False
    image: Callable[[ImageRequest, Callable[[], bool]], PreparedImage] | None = None
    # What the machine asked, in order: ("start", stage), ("stop", stage), ...
    calls: list[tuple[str, str]] = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event)  # a stage runs

    def provide(self, folder: Path) -> None:
        pass  # the stages run as the engine's own user here

    def make_folder(self, folder: Path, *, disk_bytes: int, files: int) -> None:
        folder.mkdir(parents=True)

    def remove_folder(self, folder: Path) -> None:
        self.calls.append(("remove_folder", folder.name))

    def prepare_image(self, request: ImageRequest, stopped: Callable[[], bool]) -> PreparedImage:
        self.calls.append(("prepare_image", str(request.ref)))
        if self.image is not None:
            return self.image(request, stopped)
        return PreparedImage("host", None, None, "the host's interpreters run it (scripted)")

    def start(self, spec: StageSpec) -> Running:
        self.calls.append(("start", spec.stage))
        script = self.scripts.get(spec.stage) or _default(spec.stage)
        for name, content in script.files.items():
            path = spec.data / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
        if spec.stage is Stage.PUBLISH and script.ending is Ending.EXITED and not script.exit_code:
            _publish(spec)
        with spec.log.open("a") as log:  # after the engine's own lines, as a runner writes
            log.write(f"{spec.stage} ran\n")
        running = Running(spec, script)
        if script.ending is not None:
            running.ended = _outcome(script.ending, script.exit_code, script.detail)
        else:
            self.started.set()
        return running

    def poll(self, handle: Running) -> Outcome | None:
        return handle.ended

    def resume(self, spec: StageSpec) -> Running | None:
        self.calls.append(("resume", spec.stage))
        if not self.outlives_engine:
            return None
        script = self.scripts.get(spec.stage) or _default(spec.stage)
        return Running(spec, script, _outcome(Ending.EXITED, 0, ""))

    def stop(self, handle: Running) -> Outcome:
        self.calls.append(("stop", handle.spec.stage))
        handle.ended = _outcome(Ending.STOPPED, None, "")
        return handle.ended

    def release(self, handle: Running) -> None:
        self.calls.append(("release", handle.spec.stage))

    def cleanup(self, job_id: str) -> None:
        self.calls.append(("cleanup", job_id))

    def describe(self, spec: StageSpec) -> str:
        return "scripted"

    def ran(self) -> list[str]:
        """The stages started, in order."""
        return [what for call, what in self.calls if call == "start"]


def refuse_image(request: ImageRequest, stopped: Callable[[], bool]) -> PreparedImage:
    raise ImageRefused("manifest unknown (scripted)")


def stop_during_pull(request: ImageRequest, stopped: Callable[[], bool]) -> PreparedImage:
    raise PullStopped


def _default(stage: Stage) -> Script:
    return {Stage.CONFIGURE: CONFIGURED, Stage.ALGORITHM: COMPUTED}.get(stage, Script())


def _outcome(ending: Ending, exit_code: int | None, detail: str) -> Outcome:
    now = time.time()
    return Outcome(ending, exit_code, now, now, detail)


def _publish(spec: StageSpec) -> None:
    """What engine/inside.py's publish does, for plain files: outputs copied to the results
    folder it is given, with a manifest."""
    results = next(host for host, inside, _ in spec.extra_binds if inside == "/results")
    manifest = []
    for source in sorted((spec.data / "outputs").iterdir()):
        content = source.read_bytes()
        (results / "outputs").mkdir(exist_ok=True)
        (results / "outputs" / source.name).write_bytes(content)
        manifest.append(
            {
                "filename": source.name,
                "filesize": len(content),
                "sha256": hashlib.sha256(content).hexdigest(),
            }
        )
    (results / "manifest.json").write_text(json.dumps(manifest))
