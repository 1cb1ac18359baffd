"""An algorithm is hostile code: each test runs one that tries to get out, and checks from
outside the sandbox that it did not. The job itself still ends at 70 with its logs."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient

from common.config import Settings
from common.db import Database
from engine.engine import Engine
from tests import storage
from tests.engine.conftest import (
    Dirs,
    algorithm_stage,
    start_job,
)
from tests.jobrows import log_of, published_path, wait_finished
from tests.netns import serving_host

SECRET = "sandbox-test-secret-" + os.urandom(6).hex()


@pytest.fixture(params=["bwrap", "unshare"])
def sandbox_tool(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def run_algorithm(
    start: FlaskClient, db: Database, run_engine: Callable[..., Engine], code: str, **env: object
) -> dict[str, Any]:
    run_engine(**env)
    row = wait_finished(db, start_job(start, algorithm_stage(code)), timeout=60)
    assert row["status"] == 70
    return row


def test_the_algorithm_cannot_reach_a_server_on_the_host(
    start: FlaskClient, db: Database, run_engine: Callable[..., Engine]
) -> None:
    with storage.serve({"x": b"reached"}) as server:
        code = (
            "import urllib.request\n"
            "try:\n"
            f"    print(urllib.request.urlopen('{server.url}/x', timeout=5).read())\n"
            "except OSError as exc:\n"
            "    print('refused:', exc)\n"
        )
        row = run_algorithm(start, db, run_engine, code)
        assert server.seen_headers == []  # no request reached the host's loopback
    assert "refused:" in log_of(row, "algorithmLog")


def test_with_network_the_algorithm_reaches_the_internet_and_nothing_of_the_hosts(
    start: FlaskClient, db: Database, run_engine: Callable[..., Engine]
) -> None:
    # A listener on an abstract socket of the host's network namespace, as D-Bus and others
    # keep them: reachable from every process that shares the namespace.
    abstract = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abstract.bind(b"\0operator-engine-test")
    abstract.listen()
    with (
        serving_host("optest-pub", "203.0.113", {"x": b"reached the internet"}) as public,
        serving_host("optest-prv", "192.168.77", {"x": b"reached a private host"}) as private,
        storage.serve({"x": b"reached the host"}) as host,
    ):
        targets = [
            f"{public.url}/x",
            f"{private.url}/x",
            f"{host.url}/x",
            f"http://{public.gateway}:{host.url.rsplit(':', 1)[1]}/x",  # the host, by its link
            "http://169.254.169.254/latest/meta-data/",
        ]
        code = (
            "import socket, urllib.request\n"
            f"for url in {targets!r}:\n"
            "    try:\n"
            "        print(url, urllib.request.urlopen(url, timeout=2).read())\n"
            "    except OSError as exc:\n"
            "        print(url, 'unreachable', type(exc).__name__)\n"
            "unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
            "try:\n"
            "    unix.connect(b'\\0operator-engine-test')\n"
            "    print('abstract socket REACHED')\n"
            "except OSError as exc:\n"
            "    print('abstract socket unreachable', exc.strerror)\n"
        )
        row = run_algorithm(start, db, run_engine, code, network=True, allowNetworks=[])
        assert host.seen_headers == []
    abstract.close()
    text = log_of(row, "algorithmLog")
    assert f"{targets[0]} b'reached the internet'" in text
    for url in targets[1:]:
        assert f"{url} unreachable" in text, text
    assert "abstract socket unreachable" in text


def test_configure_fetches_through_its_own_namespace(
    start: FlaskClient, db: Database, run_engine: Callable[..., Engine]
) -> None:
    code = "print(open('/data/inputs/0/0').read(), open('/data/inputs/1/0').read())"
    with (
        serving_host("optest-pub", "203.0.113", {"x": b"public data"}) as public,
        serving_host("optest-prv", "192.168.77", {"x": b"on-premises data"}) as private,
    ):
        run_engine(allowNetworks=["192.168.77.0/24"])
        stage = algorithm_stage(code, inputs=[f"{public.url}/x", f"{private.url}/x"])
        row = wait_finished(db, start_job(start, stage))
    assert "public data on-premises data" in log_of(row, "algorithmLog")
    assert "its own network namespace, filtered egress" in log_of(row, "configrationLog")


def test_the_algorithm_writes_nowhere_but_data(
    start: FlaskClient, db: Database, run_engine: Callable[..., Engine], dirs: Dirs
) -> None:
    targets = ["/usr/escaped", "/etc/escaped", "/escaped", f"{dirs.results}/escaped"]
    code = (
        f"for path in {targets!r}:\n"
        "    try:\n"
        "        open(path, 'w').write('x')\n"
        "        print('WROTE', path)\n"
        "    except OSError as exc:\n"
        "        print('refused', path, exc.strerror)\n"
    )
    row = run_algorithm(start, db, run_engine, code)
    text = log_of(row, "algorithmLog")
    assert "WROTE" not in text and text.count("refused") == len(targets)
    assert not any(os.path.exists(path) for path in targets)


def test_the_algorithm_sees_no_secret_of_the_service(
    start: FlaskClient,
    db: Database,
    run_engine: Callable[..., Engine],
    dirs: Dirs,
    settings: Settings,
) -> None:
    # A world-readable secret beside the engine's folders, as the service's data folder is:
    # only the sandbox's own file system view keeps it out of reach.
    secret_file = dirs.work.parent / "admin-secret"
    secret_file.write_text(SECRET)
    secret_file.chmod(0o644)
    os.environ["ENGINE_TEST_SECRET"] = SECRET  # in the engine's own environment too
    try:
        code = (
            "import os, glob\n"
            "seen = [str(os.environ)]\n"
            f"for path in [{str(secret_file)!r}, {str(settings.postgres_host)!r}] + glob.glob('/proc/*/environ'):\n"
            "    try:\n"
            "        seen.append(open(path).read())\n"
            "    except OSError as exc:\n"
            "        print('refused', path, exc.strerror)\n"
            "open(os.environ['OUTPUTS'] + '/seen.txt', 'w').write('\\n'.join(seen))\n"
        )
        row = run_algorithm(start, db, run_engine, code)
    finally:
        del os.environ["ENGINE_TEST_SECRET"]
    seen = published_path(row["outputs"][0]).read_text()
    assert SECRET not in seen and "POSTGRES" not in seen and "ENGINE_TEST" not in seen
    assert f"refused {secret_file}" in log_of(row, "algorithmLog")


def test_the_algorithm_cannot_signal_the_engine(
    start: FlaskClient, db: Database, run_engine: Callable[..., Engine]
) -> None:
    # The engine runs in this test's process: a kill that got through would end the test run.
    code = (
        "import os, signal\n"
        "try:\n"
        f"    os.kill({os.getpid()}, signal.SIGKILL)\n"
        "    print('SIGNALLED')\n"
        "except OSError as exc:\n"
        "    print('refused', exc.strerror)\n"
        "try:\n"
        "    os.kill(-1, signal.SIGKILL)\n"  # every process it may signal: only its own
        "except OSError as exc:\n"
        "    print('refused', exc.strerror)\n"
    )
    row = run_algorithm(start, db, run_engine, code)
    assert "SIGNALLED" not in log_of(row, "algorithmLog")


QUOTA = int(0.05 * 1024**3)


def test_the_job_folder_holds_no_more_than_its_disk_however_it_is_written(
    start: FlaskClient, db: Database, run_engine: Callable[..., Engine]
) -> None:
    # Files deleted while held open still take room; they must take the job's, not the host's.
    code = (
        "import os\nblock = os.urandom(1 << 20)\nheld, written = [], 0\n"
        "try:\n"
        "    for i in range(1000):\n"
        "        path = os.path.join(os.environ['OUTPUTS'], f'fill{i}')\n"
        "        out = open(path, 'wb')\n"
        "        if i % 2:\n"
        "            os.unlink(path)\n"
        "        held.append(out)\n"
        "        for _ in range(8):\n"
        "            out.write(block)\n"
        "            out.flush()\n"
        "            written += len(block)\n"
        "except OSError as exc:\n"
        "    print('stopped:', exc.strerror, 'after', written)\n"
    )
    row = run_algorithm(start, db, run_engine, code, diskGB=0.05)
    text = log_of(row, "algorithmLog")
    written = int(text.split("stopped: No space left on device after ")[1].split()[0])
    assert written <= QUOTA
    published = sum(e["filesize"] for e in row["outputs"] if e["type"] == "output")
    assert published <= QUOTA


def test_countless_empty_files_stop_at_the_jobs_file_limit(
    start: FlaskClient, db: Database, run_engine: Callable[..., Engine]
) -> None:
    code = (
        "import os\nmade = 0\n"
        "try:\n"
        "    for i in range(100000):\n"
        "        open(f'/data/logs/empty{i}', 'w').close()\n"
        "        made += 1\n"
        "except OSError as exc:\n"
        "    print('stopped:', exc.strerror, 'after', made)\n"
    )
    row = run_algorithm(start, db, run_engine, code, maxFiles=2000)
    text = log_of(row, "algorithmLog")
    made = int(text.split("stopped: No space left on device after ")[1].split()[0])
    assert made < 2000 * 1.05  # ext4 rounds the inode count up to fill its inode tables


def test_sparse_outputs_are_not_published_past_the_disk(
    start: FlaskClient, db: Database, run_engine: Callable[..., Engine]
) -> None:
    # Thirty files that each claim almost the whole disk and occupy none of it.
    code = (
        "import os\n"
        "for i in range(30):\n"
        "    with open(os.path.join(os.environ['OUTPUTS'], f'sparse{i:02}'), 'wb') as out:\n"
        f"        out.truncate({QUOTA // 2})\n"
    )
    row = run_algorithm(start, db, run_engine, code, diskGB=0.05)
    published = sum(e["filesize"] for e in row["outputs"] if e["type"] == "output")
    assert 0 < published <= QUOTA
    assert "skipped sparse29: over the job's quota" in log_of(row, "publishLog")


def test_allocating_beyond_the_memory_limit_kills_the_algorithm(
    start: FlaskClient, db: Database, run_engine: Callable[..., Engine]
) -> None:
    code = "block = bytearray(2 * 1024**3)\nprint('ALLOCATED')"
    row = run_algorithm(start, db, run_engine, code, ramGB=0.25)
    text = log_of(row, "algorithmLog")
    assert "ALLOCATED" not in text
    assert f"out of memory: its limit is {int(0.25 * 1024**3)} bytes" in text


def test_memory_is_bounded_for_the_sandbox_as_a_whole(
    start: FlaskClient, db: Database, run_engine: Callable[..., Engine]
) -> None:
    # Three processes of 150 MiB each, and 150 MiB more in an anonymous memory file: each
    # below the limit alone, together far above it.
    code = (
        "import os, time\n"
        "fd = os.memfd_create('hoard')\n"
        "os.write(fd, b'x' * (150 << 20))\n"
        "for _ in range(3):\n"
        "    if os.fork() == 0:\n"
        "        block = b'y' * (150 << 20)\n"
        "        time.sleep(30)\n"
        "        os._exit(0)\n"
        "time.sleep(5)\n"
        "print('ALL ALIVE')\n"
    )
    row = run_algorithm(start, db, run_engine, code, ramGB=0.25)
    text = log_of(row, "algorithmLog")
    assert "ALL ALIVE" not in text and "out of memory" in text


def test_dev_is_read_only_and_shared_memory_small(
    start: FlaskClient, db: Database, run_engine: Callable[..., Engine]
) -> None:
    code = (
        "import os\n"
        "for path in ('/dev/planted', '/dev/shm/hoard'):\n"
        "    try:\n"
        "        with open(path, 'wb') as out:\n"
        "            for _ in range(256):\n"
        "                out.write(b'z' * (1 << 20))\n"
        "        print('WROTE', path)\n"
        "    except OSError as exc:\n"
        "        print('refused', path, exc.strerror)\n"
    )
    row = run_algorithm(start, db, run_engine, code)
    text = log_of(row, "algorithmLog")
    assert "refused /dev/planted Read-only file system" in text
    assert "refused /dev/shm/hoard No space left on device" in text


SYSCALLS = {  # x86-64 numbers, called through libc's syscall() as an exploit would
    "ptrace": (101, 0, 1, 0, 0),  # PTRACE_ATTACH to pid 1, the sandbox's first process
    "io_uring_setup": (425, 8, 0),
    "keyctl": (250, 0, -4, 0),
    "bpf": (321, 0, 0, 0),
    "userfaultfd": (323, 0),
    "perf_event_open": (298, 0, 0, -1, -1, 0),
    "unshare": (272, 0x10000000),  # a user namespace, the usual first step
    "setns": (308, 0, 0),
    "mount": (165, 0, 0, 0, 0, 0),
    "clone with CLONE_NEWUSER": (56, 0x10000000 | 17, 0, 0, 0, 0),
}


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the numbers below are x86-64's")
def test_the_system_calls_that_break_out_of_sandboxes_are_refused(
    start: FlaskClient, db: Database, run_engine: Callable[..., Engine]
) -> None:
    code = (
        "import ctypes, os, subprocess\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        f"for name, call in {SYSCALLS!r}.items():\n"
        "    result = libc.syscall(*[ctypes.c_long(a) for a in call])\n"
        "    print(name, 'ALLOWED' if result >= 0 else os.strerror(ctypes.get_errno()))\n"
        "print('fork', subprocess.run(['true']).returncode)\n"  # ordinary processes still start
    )
    row = run_algorithm(start, db, run_engine, code)
    text = log_of(row, "algorithmLog")
    for name in SYSCALLS:
        assert f"{name} Operation not permitted" in text, text
    assert "ALLOWED" not in text and "fork 0" in text
