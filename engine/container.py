"""The algorithm in its own container image, through podman with runc.

Configure's first step pulls the image (`prepare`): by digest when the algorithm pinned one,
as the environment's pullPolicy says, from a registry the environment allows, within a deadline,
and no larger than the engine allows. A registry the operator did not name is reached the way a
fetch is: its addresses checked, and the pull made from a filtered network namespace
(engine/egress.py), so neither the name nor a redirect leads it to this host or a private network.

The container gets what the sandbox gives: the job folder as /data, no network unless the
environment allows it, a read-only root, every capability dropped, no new privileges, user
nobody, and the same limits (memory and processes through cgroups, open files, file size and
CPU time through rlimits). `--timeout` makes the container's own supervisor kill it at the
deadline, so it cannot outlive it even when the engine is gone; the engine kills it earlier on
a stop, and removes what is left of a job's containers when it finishes or takes a job over.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from engine import seccomp
from engine.images import ImageRefused
from engine.logpipe import kept_text
from engine.runner import ImageRequest, PreparedImage, PullStopped, StageSpec

NOBODY = 65534
TMP_BYTES = 64 * 1024 * 1024
TMP = "/tmp"  # noqa: S108 - a tmpfs of the container's own
# runc, not crun: crun cannot set rlimits or cgroups on these hybrid cgroup-v1 hosts.
GLOBAL = ("--runtime", "runc", "--cgroup-manager", "cgroupfs")
PREFIX = "operator-job-"
DEFAULT_PROFILE = Path("/usr/share/containers/seccomp.json")
CALL_SECONDS = 60
PULL_POLL_SECONDS = 0.2


class Podman:
    def __init__(self, podman: str, seccomp_profile: Path | None = None) -> None:
        self.podman = podman
        self.seccomp_profile = seccomp_profile

    @classmethod
    def find(cls) -> Podman | None:
        """Podman, when installed and the engine may run rootful containers (it runs as root),
        with the sandboxes' seccomp refusals added to its default profile."""
        found = shutil.which("podman")
        if not found or os.geteuid() != 0:
            return None
        return cls(found, _seccomp_profile())

    def has_image(self, image: str) -> bool:
        return self._call("image", "exists", image).returncode == 0

    def prepare(
        self,
        request: ImageRequest,
        stopped: Callable[[], bool],
        *,
        present: bool,
        network_namespace: Path | None,
    ) -> PreparedImage:
        """The image here, as `request` says; `present`: whether it is here already;
        `network_namespace`: the filtered one to pull from, or None for the host's network."""
        reference = str(request.ref)
        if request.pull_policy == "Never" and not present:
            raise ImageRefused(
                f"image {reference} is not on this machine and the environment's pullPolicy "
                "is Never"
            )
        pulled = request.pull_policy == "Always" or not present
        if pulled:
            self._pull(request, stopped, network_namespace)
        digests, size = self._inspect(request)
        if request.ref.digest is not None and request.ref.digest not in digests:
            raise ImageRefused(f"image {reference} here has digest {digests[0]}, not the checksum")
        if size > request.max_bytes:
            if pulled:
                self._call("rmi", reference)
            raise ImageRefused(
                f"image {reference} is {size} bytes, more than the engine's maxImageGB "
                f"({request.max_bytes} bytes)"
            )
        how = "already on this machine"
        if pulled:
            how = "pulled " + (
                "over the host's network"
                if network_namespace is None
                else "through a filtered network namespace"
            )
        chosen = request.ref.digest or digests[0]
        return PreparedImage(
            runtime="podman",
            reference=reference,
            digest=chosen,
            detail=f"runtime podman: image {reference}, {how}, digest {chosen}, {size} bytes",
        )

    def name(self, spec: StageSpec) -> str:
        return f"{PREFIX}{spec.job_id}-{spec.stage}"

    def run_argv(
        self,
        spec: StageSpec,
        *,
        network_namespace: Path | None = None,
        cgroup_parent: str | None = None,
    ) -> list[str]:
        """`network_namespace`: the filtered one the engine made for it (engine/egress.py);
        `cgroup_parent`: the engine's group for it, which bounds its memory, processes and CPU
        as a whole (podman's monitor included) and counts what it used, for the receipt."""
        limits = spec.limits
        cpu_seconds = math.ceil(limits.seconds * limits.cpus) + 1
        argv = [self.podman, *GLOBAL, "run", "--rm", "--name", self.name(spec)]
        if not spec.network:
            argv += ["--network", "none"]
        elif network_namespace is not None:
            argv += ["--network", f"ns:{network_namespace}"]
        else:
            argv += ["--network", "slirp4netns"]
        if self.seccomp_profile is not None:
            argv += ["--security-opt", f"seccomp={self.seccomp_profile}"]
        argv += ["--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
        argv += ["--user", f"{NOBODY}:{NOBODY}", "--pull", "never", "--log-driver", "none"]
        argv += ["--timeout", str(math.ceil(limits.seconds))]
        if cgroup_parent is None:
            argv += ["--memory", str(limits.memory_bytes), "--pids-limit", str(limits.processes)]
        else:
            argv += ["--cgroup-parent", cgroup_parent]
        argv += ["--ulimit", f"nofile={limits.open_files}:{limits.open_files}"]
        argv += ["--ulimit", f"nproc={limits.processes}:{limits.processes}"]
        argv += ["--ulimit", f"fsize={limits.disk_bytes}:{limits.disk_bytes}"]
        argv += ["--ulimit", f"cpu={cpu_seconds}:{cpu_seconds}"]
        argv += ["--tmpfs", f"{TMP}:rw,size={TMP_BYTES},mode=1777"]
        argv += ["--volume", f"{spec.data}:/data:rw", "--workdir", "/data"]
        for key, value in {"HOME": TMP, **spec.env}.items():
            argv += ["--env", f"{key}={value}"]
        assert spec.image is not None
        return [*argv, spec.image, *spec.argv]

    def kill(self, name: str) -> None:
        self._call("rm", "--force", "--time", "0", name)

    def remove_job(self, job_id: str) -> None:
        """Every container of the job, running or not (an engine that died left them)."""
        listed = self._call("ps", "--all", "--quiet", "--filter", f"name={PREFIX}{job_id}-")
        for container in listed.stdout.split():
            self._call("rm", "--force", "--time", "0", container)

    def _pull(
        self, request: ImageRequest, stopped: Callable[[], bool], namespace: Path | None
    ) -> None:
        reference = str(request.ref)
        argv = [self.podman, *GLOBAL, "pull", "--quiet"]
        if request.insecure:
            argv.append("--tls-verify=false")
        argv.append(reference)
        if namespace is not None:
            argv = ["nsenter", f"--net={namespace}", "--", *argv]
        deadline = time.monotonic() + request.seconds
        with tempfile.TemporaryFile() as output:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=output,
                start_new_session=True,  # its helpers die with it
            )
            while process.poll() is None:
                if stopped() or time.monotonic() >= deadline:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
                    if stopped():
                        raise PullStopped(reference)
                    raise ImageRefused(
                        f"pulling image {reference} took longer than {request.seconds:.0f} s"
                    )
                time.sleep(PULL_POLL_SECONDS)
            if process.returncode != 0:
                output.seek(0)
                said = kept_text(output.read().decode(errors="replace"), 4096).strip()
                last = said.splitlines()[-1] if said else f"exit {process.returncode}"
                raise ImageRefused(f"pulling image {reference} failed: {last[:500]}")

    def _inspect(self, request: ImageRequest) -> tuple[list[str], int]:
        """The image's digests, the registry's first, and its size. A pulled image lists the
        registry's manifest digest among its RepoDigests; where layers it shares with an image
        already here made podman store a manifest of its own too, that one is `.Digest`."""
        reference = str(request.ref)
        found = self._call(
            "image", "inspect", "--format", "{{.Digest}} {{.Size}} {{json .RepoDigests}}", reference
        )
        try:
            own, size, listed = found.stdout.strip().split(" ", 2)
            named = [
                str(entry).rsplit("@", 1)[1]
                for entry in json.loads(listed)
                if str(entry).rsplit("@", 1)[0] == request.ref.name
            ]
            return [d for d in named if d != own] + [own], int(size)
        except (ValueError, IndexError):
            raise ImageRefused(f"image {reference} cannot be inspected here") from None

    def _call(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.podman, *GLOBAL, *args],
            capture_output=True,
            text=True,
            timeout=CALL_SECONDS,
            check=False,
        )


def _seccomp_profile() -> Path | None:
    """podman's default profile with the sandboxes' refusals, written once per runner and
    removed when the process exits; None (podman's default alone) where there is no default to
    start from or no filter here."""
    try:
        base = json.loads(DEFAULT_PROFILE.read_text())
        profile = seccomp.oci_profile(base)
    except (OSError, ValueError, seccomp.SeccompUnavailable):
        return None
    fd, path = tempfile.mkstemp(prefix="operator-engine-seccomp-", suffix=".json")
    with os.fdopen(fd, "w") as out:
        json.dump(profile, out)
    written = Path(path)
    atexit.register(written.unlink, missing_ok=True)
    return written
