"""The local runner: each stage in a sandbox on this machine, built by bubblewrap or, where it
is not installed, by util-linux's `unshare` (on every Debian machine) and a setup script.

Inside, a stage sees a read-only system (/usr and the libraries), a fresh /proc, a read-only
/dev with a small /dev/shm, a small /tmp, its job folder as /data (the only writable place),
and nothing else: not the service's data folder, not other jobs, not the engine (own PID
namespace), no network unless it may have one, and then its own namespace with a filtered way
out (engine/egress.py). It runs as an unprivileged user (the engine drops to `nobody` first
when it runs as root), under a seccomp filter (engine/seccomp.py), in a control group of its
own that bounds its memory, processes and CPU as a whole (engine/cgroups.py), on a job folder
that is a file system of its own (engine/volumes.py), with rlimits on CPU time, open files and
file size; what it prints reaches its log through a pipe (engine/logpipe.py). Each layer that
cannot be had here (not root, no such kernel feature) is left out, and `bounds()` says so.
The runner keeps the deadline itself: past it, it kills the sandbox's group, and with it every
process inside (the PID namespace also dies with its first process, which dies with the
engine).
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from engine import seccomp
from engine.cgroups import Cgroups, Group, GroupLimits
from engine.container import Podman
from engine.egress import Egress, EgressUnavailable, Route
from engine.images import ImageRefused
from engine.inside import Fetcher, Refused
from engine.logpipe import LogPipe
from engine.results import remove_tree
from engine.runner import (
    Ending,
    ImageRequest,
    Outcome,
    PreparedImage,
    Stage,
    StageSpec,
)
from engine.volumes import Volumes

NOBODY = 65534
QUOTA_CHECK_SECONDS = 0.5
TMP_BYTES = 64 * 1024 * 1024
SHM_BYTES = 16 * 1024 * 1024  # /dev/shm; /dev itself is read-only
SHM = "/dev/shm"  # noqa: S108 - a tmpfs of the sandbox's own
TMP = "/tmp"  # noqa: S108 - a tmpfs of the sandbox's own
SYSTEM_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What of /etc a program needs to run (dynamic linker, time zone, CA certificates), and what a
# stage with network needs to resolve names. Never passwd/shadow or anything with a secret.
ETC = ("alternatives", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "ssl")
ETC_NETWORK = ("resolv.conf", "hosts", "nsswitch.conf", "host.conf", "gai.conf")
PATH_INSIDE = "/opt/bin:/usr/local/bin:/usr/bin:/bin"
MOUNT_POINT = "/mnt"  # where the unshare sandbox builds its root, in its own mount namespace

# The unshare sandbox's setup, run as root of a fresh user namespace (uid nobody outside):
# a tmpfs root with the system bound read-only, the job folder, then pivot_root so that
# nothing of the host's tree stays reachable, and every capability dropped for good before
# the stage's command runs. Arguments: the job folder, then "ro|rw host inside" triples,
# then "--" and the command.
UNSHARE_SETUP = r"""
set -eu
data=$1; shift
root=MOUNT_POINT
mount -t tmpfs -o mode=0755,size=1m sandbox "$root"
cd "$root"
mkdir usr data proc dev tmp etc opt opt/bin .old
bind_ro() { mount --rbind "$1" "$2"; mount -o remount,bind,ro "$2"; }
bind_ro /usr usr
for dir in SYSTEM_DIRS; do
    if [ -L "$dir" ]; then ln -s "$(readlink "$dir")" ".$dir";
    elif [ -d "$dir" ]; then mkdir ".$dir"; bind_ro "$dir" ".$dir"; fi
done
for name in ETC_NAMES; do
    if [ -d "/etc/$name" ]; then mkdir "etc/$name"; bind_ro "/etc/$name" "etc/$name";
    elif [ -f "/etc/$name" ]; then touch "etc/$name"; bind_ro "/etc/$name" "etc/$name"; fi
done
mount --bind "$data" data
mount -t tmpfs -o size=TMP_BYTES tmpfs tmp  # before the binds: one may lie under /tmp
while [ "$1" != "--" ]; do
    mkdir -p ".$3"; mount --bind "$2" ".$3"
    if [ "$1" = ro ]; then mount -o remount,bind,ro ".$3"; fi
    shift 3
done
shift
mount -t proc proc proc
echo 0 > proc/sys/user/max_user_namespaces
for name in null zero full random urandom; do
    touch "dev/$name"; mount --bind "/dev/$name" "dev/$name"
done
mkdir dev/shm
mount -t tmpfs -o size=SHM_BYTES,nosuid,nodev shm dev/shm
ln -s PYTHON opt/bin/python; ln -s PYTHON opt/bin/python3
pivot_root . .old
umount -l /.old
rmdir /.old
mount -o remount,ro,bind /
cd /data
exec /usr/bin/setpriv --bounding-set=-all --inh-caps=-all --no-new-privs \
    --securebits=+noroot,+noroot_locked,+no_setuid_fixup,+no_setuid_fixup_locked "$@"
"""


class SandboxUnavailable(Exception):
    """Neither bubblewrap nor unshare can build a sandbox here."""


@dataclass
class SandboxHandle:
    spec: StageSpec
    process: subprocess.Popen[bytes] | None
    started: float
    deadline: float
    outcome: Outcome | None = None
    next_quota_check: float = 0.0
    fds: list[int] = field(default_factory=list)
    container: str | None = None  # the algorithm's podman container, when it runs in one
    group: Group | None = None  # the sandbox's control group, where the engine makes them
    pipe: LogPipe | None = None  # what the stage writes, on its way to the stage's log
    route: Route | None = None  # its network namespace and filtered way out, when it has one


class SandboxRunner:
    def __init__(
        self,
        *,
        tool: str | None = None,
        python: str | None = None,
        containers: bool = True,
        cgroups: bool = True,
        volumes: bool = True,
        egress: bool = True,
    ) -> None:
        """`tool` is "bwrap" or "unshare"; by default bubblewrap when installed. With
        `containers`, an algorithm whose image podman has here runs in that image. With
        `cgroups`, each sandbox gets a control group where the engine can make one; with
        `volumes`, each job folder a file system of its own where it can mount one; with
        `egress`, stages with network a namespace of their own and a filtered way out."""
        self.tool = tool or ("bwrap" if shutil.which("bwrap") else "unshare")
        if shutil.which(self.tool) is None:
            raise SandboxUnavailable(f"{self.tool} is not installed: `apt-get install bubblewrap`")
        if self.tool == "unshare" and not os.path.isdir(MOUNT_POINT):
            raise SandboxUnavailable(f"the unshare sandbox builds its root on {MOUNT_POINT}")
        self.python = python or _system_python()
        self.drop_to_nobody = os.geteuid() == 0
        self.cgroups = Cgroups.find() if cgroups else None
        self.volumes = Volumes.find() if volumes else None
        try:
            self.seccomp: bytes | None = seccomp.program()
        except seccomp.SeccompUnavailable:
            self.seccomp = None
        self.egress: Egress | None = None
        self.no_egress = "not asked for"  # why stages with network share the host's
        if egress:
            try:
                self.egress = Egress.find()
            except EgressUnavailable as exc:
                self.no_egress = str(exc)
        self.podman = Podman.find() if containers else None
        self.no_podman = _why_no_podman(containers)

    def describe(self, spec: StageSpec) -> str:
        if self._in_container(spec):
            network = self._network(spec)
            filtered = self.podman is not None and self.podman.seccomp_profile is not None
            return (
                f"podman container of image {spec.image} (runc), uid {NOBODY}, {network}, "
                "read-only root, every capability dropped, /data writable, "
                + ("seccomp filter" if filtered else "podman's default seccomp profile")
            )
        user = f"uid {NOBODY}" if self.drop_to_nobody else f"uid {os.geteuid()}"
        network = self._network(spec)
        kind = "bubblewrap" if self.tool == "bwrap" else "unshare"
        line = f"{kind} sandbox, {user}, {network}, read-only system, /data writable, "
        return line + self.bounds()

    def prepare_image(self, request: ImageRequest, stopped: Callable[[], bool]) -> PreparedImage:
        runtime = request.runtime or ("podman" if self.podman else "host")
        if runtime == "host":
            why = "the environment's runtime" if request.runtime else self.no_podman
            return PreparedImage(
                runtime="host",
                reference=None,
                digest=None,
                detail=f"runtime host ({why}): image {request.ref} not used, the host's "
                f"interpreters run the entrypoint ({self.python} as python)",
            )
        if self.podman is None:
            raise ImageRefused(f"the environment's runtime is podman, but {self.no_podman}")
        present = self.podman.has_image(str(request.ref))
        if present and request.pull_policy != "Always":  # nothing to pull
            return self.podman.prepare(request, stopped, present=True, network_namespace=None)
        named = request.ref.listed_in(request.allowed_registries)
        if not named:
            _check_registry(request)
        if named or self.egress is None or _reaches_loopback(request.allow_networks):
            # The host's network: a registry the operator named, or networks only it reaches.
            return self.podman.prepare(request, stopped, present=present, network_namespace=None)
        try:
            route = self.egress.open(request.allow_networks)
        except EgressUnavailable as exc:
            raise ImageRefused(f"no filtered network to pull it through: {exc}") from None
        try:
            return self.podman.prepare(
                request, stopped, present=present, network_namespace=route.namespace
            )
        finally:
            self.egress.close(route)

    def _network(self, spec: StageSpec) -> str:
        if not spec.network:
            return "no network"
        if _allows_loopback(spec):
            return "the host's network (its allowNetworks lists loopback)"
        if self.egress is None:
            return f"the host's network (no filtered egress here: {self.no_egress})"
        return f"with network: {self.egress.describe()}"

    def bounds(self) -> str:
        """What bounds a sandbox's memory, processes and disk, said once at start too."""
        if self.cgroups is None:
            line = "no control group (memory and processes bounded per process only)"
        else:
            line = f"{self.cgroups.describe()} (memory, swap, processes, CPU)"
        if self.volumes is None:
            line += ", job folder size polled (no file system of its own)"
        else:
            line += ", job folder a file system of its own (bytes and files)"
        return line + (", seccomp filter" if self.seccomp else ", no seccomp filter here")

    def make_folder(self, folder: Path, *, disk_bytes: int, files: int) -> None:
        self.remove_folder(folder)  # what an engine that died left of it
        if self.volumes is None:
            folder.mkdir(parents=True)
        else:
            owner = NOBODY if self.drop_to_nobody else os.geteuid()
            self.volumes.make(folder, size_bytes=disk_bytes, files=files, owner=owner)
        self.provide(folder)

    def remove_folder(self, folder: Path) -> None:
        if self.volumes is not None:
            self.volumes.remove(folder)
        remove_tree(folder)

    def provide(self, folder: Path) -> None:
        if self.drop_to_nobody:
            os.chown(folder, NOBODY, NOBODY)

    def check_reachable(self, *folders: Path) -> None:
        """bubblewrap resolves what it binds by path, as the sandbox's user: every folder
        above a bound one must be searchable by that user. Say which one is not, at start-up,
        instead of failing every job."""
        if not self.drop_to_nobody:
            return
        for folder in folders:
            resolved = folder.resolve()
            for parent in (resolved, *resolved.parents):
                if parent.exists() and not parent.stat().st_mode & 0o001:
                    raise SandboxUnavailable(
                        f"{parent} is not searchable by uid {NOBODY}, so sandboxes cannot "
                        f"reach {folder}: chmod o+x {parent}, or choose another folder"
                    )

    def start(self, spec: StageSpec) -> SandboxHandle:
        now = time.time()
        handle = SandboxHandle(
            spec=spec, process=None, started=now, deadline=now + spec.limits.seconds
        )
        pipe = LogPipe(spec.log, limit=spec.limits.log_bytes)
        try:
            if spec.network and self.egress is not None and not _allows_loopback(spec):
                handle.route = self.egress.open(spec.allow_networks)
            if self._in_container(spec):
                assert self.podman is not None
                namespace = handle.route.namespace if handle.route else None
                parent = None
                if self.cgroups is not None:  # the container's group made beneath one of ours
                    handle.group = self.cgroups.create(
                        _group_name(spec), _group_limits(spec), uniform=True
                    )
                    parent = handle.group.relative
                argv = self.podman.run_argv(spec, network_namespace=namespace, cgroup_parent=parent)
                handle.container = self.podman.name(spec)
            else:
                argv = self._argv(spec, handle.fds)
                if handle.route is not None:
                    argv = ["nsenter", f"--net={handle.route.namespace}", "--", *argv]
                if self.cgroups is not None:
                    handle.group = self.cgroups.create(_group_name(spec), _group_limits(spec))
                    argv = [*_joining(handle.group), *argv]
            handle.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=pipe.write_end,
                stderr=pipe.write_end,
                pass_fds=handle.fds,
                start_new_session=True,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},  # nothing of the engine's own
            )
        except (OSError, EgressUnavailable) as exc:
            pipe.abandon()
            handle.outcome = Outcome(Ending.FAILED, None, now, time.time(), detail=str(exc))
            self._close(handle)
        else:
            pipe.start()
            handle.pipe = pipe
        return handle

    def poll(self, handle: SandboxHandle) -> Outcome | None:
        if handle.outcome is not None:
            return handle.outcome
        assert handle.process is not None
        code = handle.process.poll()
        now = time.time()
        if code is not None and handle.container is not None and now >= handle.deadline:
            # Its own supervisor's `--timeout`, which starts after our deadline's clock, killed
            # it between two polls.
            return self._ended(handle, Ending.TIMEOUT, code)
        if code is not None:
            return self._ended(handle, Ending.EXITED, code)
        if now >= handle.deadline:
            return self._kill(handle, Ending.TIMEOUT)
        if self.volumes is None and now >= handle.next_quota_check:
            handle.next_quota_check = now + QUOTA_CHECK_SECONDS
            used = disk_usage(handle.spec.data)
            if used > handle.spec.limits.disk_bytes:
                quota = handle.spec.limits.disk_bytes
                return self._kill(
                    handle, Ending.QUOTA, detail=f"the job folder reached {used} bytes of {quota}"
                )
        return None

    def stop(self, handle: SandboxHandle) -> Outcome:
        return handle.outcome or self._kill(handle, Ending.STOPPED)

    def _argv(self, spec: StageSpec, fds: list[int]) -> list[str]:
        """The whole command: drop to nobody (when root), the sandbox, the limits, the stage."""
        argv = ["setpriv", "--pdeathsig", "SIGKILL"]  # the sandbox dies with the engine
        if self.drop_to_nobody:
            # A sandbox built by root keeps uid 0 outside it; as nobody it owns nothing.
            argv += [f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--inh-caps=-all"]
        if self.tool == "bwrap":
            argv += self._bwrap(spec, fds)
        else:
            argv += self._unshare(spec, fds)
        limits = spec.limits
        cpu_seconds = math.ceil(limits.seconds * limits.cpus) + 1
        # The control group bounds memory as a whole; without one, each process is bounded
        # on its own (which several processes, tmpfs and shared memory get around).
        memory = [] if self.cgroups is not None else [f"--as={limits.memory_bytes}"]
        return [
            *argv,
            "prlimit",
            *memory,
            f"--cpu={cpu_seconds}",
            f"--nproc={limits.processes}",
            f"--nofile={limits.open_files}",
            f"--fsize={limits.disk_bytes}",
            "--core=0",
            "--",
            *spec.argv,
        ]

    def _unshare(self, spec: StageSpec, fds: list[int]) -> list[str]:
        script = UNSHARE_SETUP
        for name, value in {
            "MOUNT_POINT": MOUNT_POINT,
            "SYSTEM_DIRS": " ".join(SYSTEM_DIRS),
            "ETC_NAMES": " ".join(ETC + (ETC_NETWORK if spec.network else ())),
            "TMP_BYTES": str(TMP_BYTES),
            "SHM_BYTES": str(SHM_BYTES),
            "PYTHON": self.python,
        }.items():
            script = script.replace(name, value)
        namespaces = ["--user", "--map-root-user", "--mount", "--pid", "--ipc", "--uts"]
        if not spec.network:
            namespaces.append("--net")
        argv = ["unshare", *namespaces, "--fork", "--kill-child", "--propagation", "private"]
        argv += ["/bin/sh", "-c", script, "sandbox", str(spec.data)]
        for host, inside, writable in spec.extra_binds:
            argv += ["rw" if writable else "ro", str(host), inside]
        argv.append("--")
        if self.seccomp is not None:
            fds.append(seccomp.descriptor(self.seccomp))
            argv += [self.python, "-I", "-c", seccomp.LOADER, str(fds[-1])]
        environment = {"PATH": PATH_INSIDE, "HOME": TMP, **spec.env}
        return [*argv, "/usr/bin/env", "-i", *(f"{k}={v}" for k, v in environment.items())]

    def _bwrap(self, spec: StageSpec, fds: list[int]) -> list[str]:
        data_fd = os.open(spec.data, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW)
        fds.append(data_fd)
        binds = []
        for host, inside, writable in spec.extra_binds:
            fd = os.open(host, os.O_PATH | os.O_NOFOLLOW)
            fds.append(fd)
            binds += ["--bind-fd" if writable else "--ro-bind-fd", str(fd), inside]
        argv = ["bwrap", "--unshare-all", "--unshare-user", "--disable-userns"]
        if spec.network:
            argv.append("--share-net")
        argv += ["--die-with-parent", "--new-session", "--cap-drop", "ALL", "--clearenv"]
        argv += ["--hostname", "sandbox", "--ro-bind", "/usr", "/usr"]
        for path in SYSTEM_DIRS:
            if os.path.islink(path):
                argv += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                argv += ["--ro-bind", path, path]
        for name in ETC + (ETC_NETWORK if spec.network else ()):
            argv += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
        argv += [
            "--proc",
            "/proc",
            "--dev",
            "/dev",
            "--size",
            str(SHM_BYTES),
            "--tmpfs",
            SHM,
        ]
        argv += ["--remount-ro", "/dev", "--size", str(TMP_BYTES), "--tmpfs", TMP]
        argv += ["--dir", "/opt/bin", "--symlink", self.python, "/opt/bin/python"]
        argv += ["--symlink", self.python, "/opt/bin/python3"]
        argv += ["--bind-fd", str(data_fd), "/data", *binds, "--remount-ro", "/"]
        argv += ["--chdir", "/data"]
        if self.seccomp is not None:
            fds.append(seccomp.descriptor(self.seccomp))
            argv += ["--seccomp", str(fds[-1])]
        for name, value in {"PATH": PATH_INSIDE, "HOME": TMP, **spec.env}.items():
            argv += ["--setenv", name, value]
        return argv

    def release(self, handle: SandboxHandle) -> None:
        self.stop(handle)  # nobody could watch it after this engine

    def resume(self, spec: StageSpec) -> None:
        """Never: a sandbox dies with the engine that started it (a container is removed)."""
        return None

    def cleanup(self, job_id: str) -> None:
        if self.podman is not None:
            self.podman.remove_job(job_id)
        if self.cgroups is not None:  # the groups of an engine that died running it
            self.cgroups.remove_job(job_id)

    def _in_container(self, spec: StageSpec) -> bool:
        """Whether the stage runs in a container: the algorithm, once its image was prepared
        (`spec.image` is what `prepare_image` made ready)."""
        return spec.stage is Stage.ALGORITHM and spec.image is not None and self.podman is not None

    def _kill(self, handle: SandboxHandle, ending: Ending, detail: str = "") -> Outcome:
        if handle.container is not None and self.podman is not None:
            self.podman.kill(handle.container)  # the container is not in our process group
        process = handle.process
        if handle.group is not None:
            handle.group.kill()
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        return self._ended(handle, ending, None if process is None else process.returncode, detail)

    def _ended(
        self, handle: SandboxHandle, ending: Ending, code: int | None, detail: str = ""
    ) -> Outcome:
        finished = time.time()
        usage = None
        if handle.group is not None:
            # Nothing of the sandbox may outlive it: publish and cleanup touch its folder next.
            handle.group.kill()
            usage = handle.group.usage()
            killed_at_limit = handle.container is not None and code == 137 and usage.limit_reached
            if (usage.oom_killed or killed_at_limit) and ending is Ending.EXITED:
                limit = handle.spec.limits.memory_bytes
                ending, detail = Ending.MEMORY, f"out of memory: its limit is {limit} bytes"
        if handle.pipe is not None:
            handle.pipe.wait()  # the stage's last words are in its log before the engine's
        handle.outcome = Outcome(
            ending,
            code,
            handle.started,
            finished,
            detail=detail,
            cpu_seconds=usage.cpu_seconds if usage else None,
            peak_memory_bytes=usage.peak_memory_bytes if usage else None,
            usage_basis="control group" if usage else None,
        )
        self._close(handle)
        return handle.outcome

    def _close(self, handle: SandboxHandle) -> None:
        if handle.group is not None:
            handle.group.remove()
            handle.group = None
        if handle.route is not None and self.egress is not None:
            # Empty now (its processes are dead): taken down beside the job, not in its way.
            threading.Thread(target=self.egress.close, args=(handle.route,), daemon=True).start()
            handle.route = None
        for fd in handle.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        handle.fds.clear()


def _why_no_podman(containers: bool) -> str:
    if not containers:
        return "this engine runs no containers"
    if shutil.which("podman") is None:
        return "podman is not installed here"
    if os.geteuid() != 0:
        return "the engine does not run as root, so podman cannot run its containers"
    return "podman is usable"


def _check_registry(request: ImageRequest) -> None:
    """A registry the operator did not name is held to the fetches' address policy: no pull
    from this host or a private network unless the environment's allowNetworks lists it."""
    fetcher = Fetcher(roots=[], allowed=list(request.allow_networks), seconds=1, min_rate=1)
    try:
        fetcher.checked_address(request.ref.host, request.ref.port)
    except Refused as exc:
        raise ImageRefused(f"registry {request.ref.registry}: {exc}") from None
    except OSError:
        pass  # a name that does not resolve here: the pull says so


def _allows_loopback(spec: StageSpec) -> bool:
    """Whether the stage may reach this host's loopback, which only the host's network
    namespace can: an operator's explicit choice (allowNetworks), for inputs served here."""
    return _reaches_loopback(spec.allow_networks)


def _reaches_loopback(allow_networks: tuple[str, ...]) -> bool:
    loopback = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
    return any(
        ipaddress.ip_network(net).overlaps(host)
        for net in allow_networks
        for host in loopback
        if ipaddress.ip_network(net).version == host.version
    )


def _group_name(spec: StageSpec) -> str:
    return f"{spec.job_id}-{spec.stage}-{time.monotonic_ns()}"


def _group_limits(spec: StageSpec) -> GroupLimits:
    limits = spec.limits
    return GroupLimits(
        memory_bytes=limits.memory_bytes, processes=limits.processes, cpus=limits.cpus
    )


def _joining(group: Group) -> list[str]:
    """A prefix that puts the sandbox's first process into `group` before it execs the
    sandbox, so that every process of the sandbox is in it from the start."""
    script = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 125; shift; done; shift; exec "$@"'
    return ["/bin/sh", "-c", script, "join", *map(str, group.procs_files), "--"]


def disk_usage(root: Path) -> int:
    """Bytes allocated under `root`, links not followed: what the job occupies on disk."""
    total = 0
    stack = [str(root)]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                info = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            total += info.st_blocks * 512
            if entry.is_dir(follow_symlinks=False):
                stack.append(entry.path)
    return total


def _system_python() -> str:
    """The interpreter stages run with: a system one, since a sandbox sees only /usr."""
    for candidate in ("/usr/local/bin/python3", "/usr/bin/python3"):
        if os.path.exists(candidate):
            return candidate
    raise SandboxUnavailable("no python3 in /usr/local/bin or /usr/bin for the stages")
