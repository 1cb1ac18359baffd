"""The configure and publish stages: programs that run inside a job's sandbox.

    python3 -I stage.py configure     # /data/ddos/workflow.json -> algorithm and inputs
    python3 -I stage.py publish       # /data/outputs -> /results/outputs + manifest.json

The standard library only, since a sandbox sees the system's Python and nothing of the
project's environment; the engine passes this file's source to the interpreter. Everything
printed goes to the stage's log. Configure exits 0, or 31 (an input failed) or 32 (the
algorithm failed) with the reason printed; the engine turns those into the job's status.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

DATA = Path("/data")
RESULTS = Path("/results")
DATA_FAILED, ALGORITHM_FAILED = 31, 32
CHUNK = 64 * 1024
FETCH_TIMEOUT = 30


class StageFailure(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Budget:
    """Bytes a stage may still write, across every file it writes."""

    def __init__(self, limit: int) -> None:
        self.left = limit

    def take(self, size: int, what: str) -> None:
        self.left -= size
        if self.left < 0:
            raise OverflowError(f"{what}: the size limit was reached")


def configure() -> int:
    stage = json.loads((DATA / "ddos" / "workflow.json").read_text())
    budget = Budget(int(os.environ.get("MAX_INPUT_BYTES", str(1024**3))))
    roots = [Path(p) for p in json.loads(os.environ.get("INPUT_ROOTS", "[]"))]
    for name in ("inputs", "transformations", "outputs", "logs", "ddos"):
        (DATA / name).mkdir(exist_ok=True)
    try:
        fetch_algorithm(stage.get("algorithm") or {}, budget, roots)
        for position, item in enumerate(stage.get("input") or []):
            fetch_input(item, position, budget, roots)
    except StageFailure as failure:
        print(f"configure: {failure.reason}", flush=True)
        return failure.code
    print("configure: done", flush=True)
    return 0


def fetch_algorithm(algorithm: dict[str, object], budget: Budget, roots: list[Path]) -> None:
    target = DATA / "transformations" / "algorithm"
    raw = algorithm.get("rawcode")
    if isinstance(raw, str) and raw:
        data = raw.encode()
        try:
            budget.take(len(data), "algorithm")
        except OverflowError as exc:
            raise StageFailure(ALGORITHM_FAILED, str(exc)) from None
        target.write_bytes(data)
        target.chmod(0o755)
        print(f"algorithm: raw code, {len(data)} bytes", flush=True)
        return
    url = algorithm.get("url")
    if not isinstance(url, str) or not url:
        raise StageFailure(ALGORITHM_FAILED, "the algorithm has neither rawcode nor url")
    try:
        size = download(url, target, budget, roots)
    except (OSError, ValueError, OverflowError) as exc:
        raise StageFailure(ALGORITHM_FAILED, f"algorithm {redact(url)}: {exc}") from None
    target.chmod(0o755)  # an entrypoint of plain `$ALGO` executes it
    print(f"algorithm: {redact(url)}, {size} bytes", flush=True)


def fetch_input(item: object, position: int, budget: Budget, roots: list[Path]) -> None:
    if not isinstance(item, dict):
        raise StageFailure(DATA_FAILED, f"input {position} is not an object")
    index = item.get("index", position)
    folder = DATA / "inputs" / str(index if isinstance(index, int) else position)
    folder.mkdir(parents=True, exist_ok=True)
    if item.get("remote"):
        raise StageFailure(DATA_FAILED, f"input {position}: remote inputs need a Provider")
    urls = item.get("url")
    if isinstance(urls, str):
        urls = [urls]
    if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
        raise StageFailure(DATA_FAILED, f"input {position} has no url list")
    for number, url in enumerate(urls):
        try:
            size = download(url, folder / str(number), budget, roots)
        except (OSError, ValueError, OverflowError) as exc:
            raise StageFailure(DATA_FAILED, f"input {position} {redact(url)}: {exc}") from None
        print(f"input {position}: {redact(url)}, {size} bytes", flush=True)


def download(url: str, target: Path, budget: Budget, roots: list[Path]) -> int:
    # Imported here, not at the top: urllib.request alone costs a no-op job 50 ms per stage.
    import urllib.parse
    import urllib.request

    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "file":
        path = Path(urllib.parse.unquote(parsed.path)).resolve()
        if not any(path.is_relative_to(root) for root in roots):
            raise ValueError("file:// URLs are allowed only under the engine's inputRoots")
        source = path.open("rb")
    elif parsed.scheme in ("http", "https"):
        # The scheme is checked just above: only http(s) reaches urlopen.
        request = urllib.request.Request(url, headers={"User-Agent": "operator-engine"})  # noqa: S310
        source = urllib.request.urlopen(request, timeout=FETCH_TIMEOUT)  # noqa: S310
    else:
        raise ValueError(f"unsupported URL scheme {parsed.scheme!r}")
    written = 0
    with source, target.open("wb") as out:
        while chunk := source.read(CHUNK):
            budget.take(len(chunk), "download")
            out.write(chunk)
            written += len(chunk)
    return written


def redact(url: str) -> str:
    """The URL without its query and credentials: signed URLs carry secrets there."""
    import urllib.parse

    parsed = urllib.parse.urlparse(url)
    host = parsed.hostname or ""
    try:
        port = parsed.port
    except ValueError:  # a port that is not a number: the fetch fails, the log still shows it
        port = None
    netloc = f"{host}:{port}" if port else host
    return urllib.parse.urlunparse((parsed.scheme, netloc, parsed.path, "", "", ""))


def publish() -> int:
    """Copy every regular file of /data/outputs to /results/outputs, within the quota, and
    write what was copied (name, size, sha256) to /results/manifest.json. Links and special
    files are skipped: they could point anywhere."""
    budget = Budget(int(os.environ.get("QUOTA_BYTES", str(1024**3))))
    outputs = DATA / "outputs"
    published = []
    for path in sorted(walk(outputs)):
        name = str(path.relative_to(outputs))
        info = path.lstat()
        if not stat.S_ISREG(info.st_mode):
            print(f"publish: skipped {name}: not a regular file", flush=True)
            continue
        try:
            budget.take(info.st_size, name)
        except OverflowError:
            print(f"publish: skipped {name}: over the job's quota", flush=True)
            continue
        target = RESULTS / "outputs" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = copy(path, target)
        published.append({"filename": name, "filesize": target.stat().st_size, "sha256": digest})
        print(f"publish: {name}, {info.st_size} bytes", flush=True)
    (RESULTS / "manifest.json").write_text(json.dumps(published))
    print(f"publish: {len(published)} output file(s)", flush=True)
    return 0


def walk(root: Path) -> list[Path]:
    found = []
    for folder, dirs, files in os.walk(root):  # does not follow links to folders
        found += [Path(folder) / name for name in files]
        found += [Path(folder) / name for name in dirs if (Path(folder) / name).is_symlink()]
    return found


def copy(source: Path, target: Path) -> str:
    import hashlib  # only when there is something to publish: it loads OpenSSL

    digest = hashlib.sha256()
    fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as src, target.open("wb") as out:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


if __name__ == "__main__":
    programs = {"configure": configure, "publish": publish}
    if len(sys.argv) != 2 or sys.argv[1] not in programs:
        print(f"usage: stage.py {'|'.join(programs)}", file=sys.stderr)
        sys.exit(2)
    sys.exit(programs[sys.argv[1]]())
