"""The local runner: each stage in a bubblewrap sandbox on this machine.

Inside, a stage sees a read-only system (/usr and the libraries), a fresh /proc, /dev and a
small /tmp, its job folder as /data (the only writable place), and nothing else: not the
service's data folder, not other jobs, not the engine (own PID namespace), no network unless
the environment allows it (own network namespace). It runs as an unprivileged user (the
engine drops to `nobody` first when it runs as root), with rlimits on address space, CPU time,
processes, open files and file size. The runner keeps the deadline and the disk quota itself:
past either it kills the sandbox, and with it every process inside (the PID namespace dies
with its first process, which dies with bwrap).
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from engine.runner import Ending, Outcome, StageSpec

NOBODY = 65534
QUOTA_CHECK_SECONDS = 0.5
TMP_BYTES = 64 * 1024 * 1024
TMP = "/tmp"  # noqa: S108 - a tmpfs of the sandbox's own
SYSTEM_DIRS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# What of /etc a program needs to run (dynamic linker, time zone, CA certificates), and what a
# stage with network needs to resolve names. Never passwd/shadow or anything with a secret.
ETC = ("alternatives", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "ssl")
ETC_NETWORK = ("resolv.conf", "hosts", "nsswitch.conf", "host.conf", "gai.conf")
PATH_INSIDE = "/opt/bin:/usr/local/bin:/usr/bin:/bin"


class SandboxUnavailable(Exception):
    """bubblewrap is not installed (or cannot create namespaces here)."""


@dataclass
class SandboxHandle:
    spec: StageSpec
    process: subprocess.Popen[bytes] | None
    started: float
    deadline: float
    outcome: Outcome | None = None
    next_quota_check: float = 0.0
    fds: list[int] = field(default_factory=list)


class SandboxRunner:
    name = "sandbox"

    def __init__(self, *, bwrap: str | None = None, python: str | None = None) -> None:
        found = bwrap or shutil.which("bwrap")
        if not found:
            raise SandboxUnavailable(
                "bubblewrap (bwrap) is not installed: `apt-get install bubblewrap`"
            )
        self.bwrap = found
        self.python = python or _system_python()
        self.drop_to_nobody = os.geteuid() == 0

    def describe(self, spec: StageSpec) -> str:
        user = f"uid {NOBODY}" if self.drop_to_nobody else f"uid {os.geteuid()}"
        network = "with network" if spec.network else "no network"
        line = f"bubblewrap sandbox, {user}, {network}, read-only system, /data writable"
        if spec.image:
            line += (
                f"; image {spec.image} not used: no container runtime here, so the host's "
                f"interpreters run the entrypoint ({self.python} as python)"
            )
        return line

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
            for parent in (folder.resolve(), *folder.resolve().parents):
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
        log = os.open(spec.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o640)
        try:
            data = os.open(spec.data, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW)
            handle.fds.append(data)
            binds = []
            for host, inside, writable in spec.extra_binds:
                fd = os.open(host, os.O_PATH | os.O_NOFOLLOW)
                handle.fds.append(fd)
                binds += ["--bind-fd" if writable else "--ro-bind-fd", str(fd), inside]
            argv = self._argv(spec, data, binds)
            handle.process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=handle.fds,
                start_new_session=True,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},  # nothing of the engine's own
            )
        except OSError as exc:
            handle.outcome = Outcome(Ending.FAILED, None, now, time.time(), detail=str(exc))
            self._close(handle)
        finally:
            os.close(log)
        return handle

    def poll(self, handle: SandboxHandle) -> Outcome | None:
        if handle.outcome is not None:
            return handle.outcome
        assert handle.process is not None
        code = handle.process.poll()
        if code is not None:
            return self._ended(handle, Ending.EXITED, code)
        now = time.time()
        if now >= handle.deadline:
            return self._kill(handle, Ending.TIMEOUT)
        if now >= handle.next_quota_check:
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

    def _argv(self, spec: StageSpec, data_fd: int, binds: list[str]) -> list[str]:
        limits = spec.limits
        argv: list[str] = []
        if self.drop_to_nobody:
            # bwrap run by root keeps uid 0 outside the sandbox; as nobody it owns nothing.
            argv += ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
            argv += ["--inh-caps=-all"]
        argv += [self.bwrap, "--unshare-all", "--unshare-user", "--disable-userns"]
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
        argv += ["--proc", "/proc", "--dev", "/dev", "--size", str(TMP_BYTES), "--tmpfs", TMP]
        argv += ["--dir", "/opt/bin", "--symlink", self.python, "/opt/bin/python"]
        argv += ["--symlink", self.python, "/opt/bin/python3"]
        argv += ["--bind-fd", str(data_fd), "/data", *binds, "--remount-ro", "/"]
        argv += ["--chdir", "/data"]
        for name, value in {"PATH": PATH_INSIDE, "HOME": TMP, **spec.env}.items():
            argv += ["--setenv", name, value]
        cpu_seconds = math.ceil(limits.seconds * limits.cpus) + 1
        argv += [
            "prlimit",
            f"--as={limits.memory_bytes}",
            f"--cpu={cpu_seconds}",
            f"--nproc={limits.processes}",
            f"--nofile={limits.open_files}",
            f"--fsize={limits.disk_bytes}",
            "--core=0",
            "--",
            *spec.argv,
        ]
        return argv

    def _kill(self, handle: SandboxHandle, ending: Ending, detail: str = "") -> Outcome:
        process = handle.process
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        return self._ended(handle, ending, None if process is None else process.returncode, detail)

    def _ended(
        self, handle: SandboxHandle, ending: Ending, code: int | None, detail: str = ""
    ) -> Outcome:
        handle.outcome = Outcome(ending, code, handle.started, time.time(), detail=detail)
        self._close(handle)
        return handle.outcome

    def _close(self, handle: SandboxHandle) -> None:
        for fd in handle.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        handle.fds.clear()


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
