"""The local run's engine: `python -m engine` as a child process, on the run's database.

It writes a default environment file once (the data folder's engine.yaml, edited freely
afterwards), starts the engine with the run's own variables, and waits for its first heartbeat,
so a job started right after the banner finds its environment. The engine dies with the run.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from common import store
from common.config import Settings
from common.db import Database
from engine.sandbox import SandboxRunner, SandboxUnavailable
from local.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
HEARTBEAT_WAIT_SECONDS = 30
PR_SET_PDEATHSIG = 1

DEFAULT_CONFIG = """\
# The environments the local engine serves (docs/configuration.md: engine.yaml). Written once
# by `make run`; edit it and restart `make run` to change them. maxJobDuration and
# storageExpiry are left out, so ALGO_POD_TIMEOUT and STORAGE_EXPIRY (or the engine's
# defaults) decide them.
environments:
  - id: ocean-compute
    description: bubblewrap sandboxes on this machine
    maxJobs: 2            # jobs running at once
    cpuNumber: 1
    ramGB: 1              # memory of the algorithm, tmpfs and shared memory included
    diskGB: 1             # the job folder (inputs, outputs) and its published results
    priceMin: 0
    network: false        # whether algorithms may reach the network
    allowNetworks: []     # private networks inputs may come from, e.g. [10.1.0.0/16]
engine:
  leaseSeconds: 15
  inputRoots: [INPUTS]    # file:// inputs come from here
"""
# The sha256 of the default earlier versions wrote: such a file, never edited, pinned
# maxJobDuration: 600 and storageExpiry: 604800 over the variables, and is replaced.
EARLIER_DEFAULTS = {"08f0990ef23958f97ad18966c0ca78156c49a32ad4badba41a2edbc692cd4809"}


@dataclass
class LocalEngine:
    process: subprocess.Popen[bytes]
    config: Path
    status_url: str  # its /metrics and /healthz

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def available() -> str | None:
    """Why the engine cannot run on this machine, or None when it can: the engine's own
    checks (bubblewrap or unshare, a system Python for the stages)."""
    try:
        SandboxRunner()
    except SandboxUnavailable as exc:
        return str(exc)
    return None


def start(env: Mapping[str, str], data: Path, settings: Settings) -> LocalEngine:
    config = write_default_config(data)
    listen = f"127.0.0.1:{free_port()}"
    process = subprocess.Popen(
        [sys.executable, "-m", "engine", "--work-root", str(data / "engine"), "--listen", listen],
        cwd=ROOT,
        # Its metrics are its own, at its own address: none of the API's counting files.
        env={k: v for k, v in env.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        | {"ENGINE_CONFIG": str(config)},
        preexec_fn=_die_with_parent,  # safe: the run has no other thread yet
    )
    engine = LocalEngine(process=process, config=config, status_url=f"http://{listen}")
    if not _heartbeat_seen(settings, process):
        engine.stop()
        raise RuntimeError(f"the engine did not start (exit code {process.returncode})")
    return engine


def write_default_config(data: Path) -> Path:
    """The data folder's engine.yaml: written when missing, or when it is an earlier
    version's default that nobody edited; an edited one is the operator's and stays."""
    config = data / "engine.yaml"
    inputs = data / "inputs"
    inputs.mkdir(exist_ok=True)
    try:
        written = hashlib.sha256(config.read_bytes()).hexdigest()
    except FileNotFoundError:
        written = None
    if written is None or written in EARLIER_DEFAULTS:
        config.write_text(DEFAULT_CONFIG.replace("INPUTS", json.dumps(str(inputs))))
    return config


def _heartbeat_seen(settings: Settings, process: subprocess.Popen[bytes]) -> bool:
    db = Database(settings)
    started = time.time() - 1  # the database runs on this machine's clock
    try:
        deadline = time.monotonic() + HEARTBEAT_WAIT_SECONDS
        while time.monotonic() < deadline and process.poll() is None:
            if any(float(env["lastSeen"]) >= started for env in store.environments(db)):
                return True
            time.sleep(0.1)
        return False
    finally:
        db.close()


def _die_with_parent() -> None:
    """The engine gets SIGTERM when the run dies, even by SIGKILL: no orphaned engine."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:  # the run died before prctl took effect
        os._exit(1)
