"""Container images and a registry for the engine's container tests, made here: no registry on
the internet is reachable from these machines.

The image is a root file system of one static busybox with an /etc/os-release of its own,
`podman import`ed; the registry is Debian's `docker-registry` (distribution 2.8), started on
loopback (or in a stand-in host's namespace, tests/netns.py) with storage in a temporary folder.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.container import GLOBAL
from engine.results import remove_tree

APPLETS = (
    *("sh", "echo", "cat", "ls", "sleep", "id", "readlink", "touch", "wget", "dd", "head"),
    *("unshare", "nc", "printf", "date", "tr"),
)
OS_RELEASE = 'ID=operator-test\nPRETTY_NAME="the operator tests\' busybox image"\n'
REGISTRY_CONFIG = """version: 0.1
log:
  accesslog:
    disabled: false
  level: info
storage:
  filesystem:
    rootdirectory: {root}
  delete:
    enabled: true
http:
  addr: {address}
"""


def podman(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["podman", *GLOBAL, *args], capture_output=True, text=True, timeout=120, check=False
    )


def require_podman() -> None:
    missing = [tool for tool in ("podman", "runc") if shutil.which(tool) is None]
    if missing or not Path("/bin/busybox").exists() or os.geteuid() != 0:
        why = f"podman tests need root, podman, runc and busybox-static (missing: {missing})"
        if os.environ.get("REQUIRE_SANDBOX_TIER") == "1":
            pytest.fail(why, pytrace=False)
        pytest.skip(why)


def import_busybox(reference: str) -> None:
    """A busybox image under `reference`, in podman's store here."""
    root = Path(tempfile.mkdtemp(prefix="busybox-root-"))
    try:
        (root / "bin").mkdir()
        (root / "etc").mkdir()
        (root / "etc" / "os-release").write_text(OS_RELEASE)
        shutil.copy("/bin/busybox", root / "bin" / "busybox")
        for applet in APPLETS:
            (root / "bin" / applet).symlink_to("busybox")
        tarball = root.parent / f"{root.name}.tar"
        subprocess.run(["tar", "-C", str(root), "-cf", str(tarball), "."], check=True)
        made = podman("import", str(tarball), reference)
        assert made.returncode == 0, made.stderr
        tarball.unlink()
    finally:
        remove_tree(root)


@dataclass
class Registry:
    address: str  # host:port
    log: Path  # its access log, among the rest of what it says

    def push(self, local: str, repository: str, tag: str) -> str:
        """`local` pushed as <registry>/<repository>:<tag>, then removed from this machine;
        the manifest digest the registry has."""
        remote = f"{self.address}/{repository}:{tag}"
        digest_file = self.log.with_name(f"digest-{repository.replace('/', '-')}-{tag}")
        for args in (
            ("tag", local, remote),
            ("push", "--tls-verify=false", "--digestfile", str(digest_file), remote),
            ("rmi", "--force", local, remote),  # gone from here: the engine must pull it
        ):
            done = podman(*args)
            assert done.returncode == 0, done.stderr
        return digest_file.read_text().strip()

    def forget_pulled(self) -> None:
        """Every image pulled from this registry gone from this machine."""
        listed = podman("images", "--format", "{{.ID}} {{.Repository}}")
        for line in listed.stdout.splitlines():
            image_id, _, name = line.partition(" ")
            if name.startswith(f"{self.address}/"):
                podman("rmi", "--force", image_id)

    def manifest_requests(self, repository: str) -> int:
        """How many times the registry was asked for the repository's manifest."""
        text = self.log.read_text(errors="replace")
        return text.count(f"GET /v2/{repository}/manifests/")


@contextmanager
def registry(address: str = "127.0.0.1", *, netns: str | None = None) -> Iterator[Registry]:
    """A docker-registry on `address` (a free port on it), in `netns` when given."""
    binary = shutil.which("docker-registry")
    if binary is None:
        why = "the image tests need Debian's docker-registry (`apt-get install docker-registry`)"
        if os.environ.get("REQUIRE_SANDBOX_TIER") == "1":
            pytest.fail(why, pytrace=False)
        pytest.skip(why)
    folder = Path(tempfile.mkdtemp(prefix="registry-"))
    port = _free_port() if netns is None else 5000
    config = folder / "config.yml"
    root = folder / "storage"
    config.write_text(REGISTRY_CONFIG.format(root=root, address=f"{address}:{port}"))
    log = folder / "registry.log"
    argv = [binary, "serve", str(config)]
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    served = Registry(address=f"{address}:{port}", log=log)
    try:
        _wait_listening(log, process)
        yield served
    finally:
        process.kill()
        process.wait()
        served.forget_pulled()
        remove_tree(folder)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _wait_listening(log: Path, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if "listening on" in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            raise AssertionError(f"docker-registry ended: {log.read_text()[-2000:]}")
        time.sleep(0.1)
    raise AssertionError("docker-registry did not start listening in 20 s")
