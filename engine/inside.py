"""The programs run inside a job's sandbox for its configure and publish stages.

    python3 -I inside.py configure     # /data/ddos/workflow.json -> algorithm and inputs
    python3 -I inside.py publish       # /data/outputs -> /results/outputs + manifest.json

The standard library only, since a sandbox sees the system's Python and nothing of the
project's environment; the engine passes this file's source to the interpreter. Everything
printed goes to the stage's log. Configure exits 0, or 31 (an input failed) or 32 (the
algorithm failed) with the reason printed; the engine turns those into the job's status.
"""

from __future__ import annotations

import functools
import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DATA = Path("/data")
RESULTS = Path("/results")
WORKFLOW = DATA / "ddos" / "workflow.json"  # written by the engine, read once by configure
DATA_FAILED, ALGORITHM_FAILED = 31, 32
CHUNK = 64 * 1024
READ_SECONDS = 10  # a server silent this long fails the download
RATE_GRACE_SECONDS = 10
MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)
# Where no fetch goes unless an environment's allowNetworks lists it: this host, private and
# carrier-grade NAT networks, link-local (cloud metadata at 169.254.169.254), multicast,
# reserved and unspecified addresses. IPv6 forms that embed an IPv4 address are checked as it.
BLOCKED = (
    ("0.0.0.0/8", "an unspecified address"),
    ("10.0.0.0/8", "a private address"),
    ("100.64.0.0/10", "a carrier-grade NAT address"),
    ("127.0.0.0/8", "a loopback address"),
    ("169.254.0.0/16", "a link-local address"),
    ("172.16.0.0/12", "a private address"),
    ("192.0.0.0/24", "an IETF protocol address"),
    ("192.168.0.0/16", "a private address"),
    ("198.18.0.0/15", "a benchmarking address"),
    ("224.0.0.0/4", "a multicast address"),
    ("240.0.0.0/4", "a reserved address"),
    ("::1/128", "a loopback address"),
    ("::/96", "an unspecified or IPv4-compatible address"),
    ("fc00::/7", "a private address"),
    ("fe80::/10", "a link-local address"),
    ("fec0::/10", "a site-local address"),
    ("ff00::/8", "a multicast address"),
)


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
    stage = json.loads(WORKFLOW.read_text())
    budget = Budget(int(os.environ.get("MAX_INPUT_BYTES", str(1024**3))))
    roots = [Path(p) for p in json.loads(os.environ.get("INPUT_ROOTS", "[]"))]
    fetcher = Fetcher(
        roots=roots,
        allowed=json.loads(os.environ.get("ALLOW_NETWORKS", "[]")),
        seconds=float(os.environ.get("FETCH_SECONDS", "300")),
        min_rate=float(os.environ.get("FETCH_MIN_RATE", "16384")),
    )
    for name in ("inputs", "transformations", "outputs", "logs", "ddos"):
        (DATA / name).mkdir(exist_ok=True)
    try:
        fetch_algorithm(stage.get("algorithm") or {}, budget, fetcher)
        for position, item in enumerate(stage.get("input") or []):
            fetch_input(item, position, budget, fetcher)
    except StageFailure as failure:
        print(f"configure: {failure.reason}", flush=True)
        return failure.code
    finally:
        # What the algorithm finds of its workflow: never a URL, a header or a query. In
        # Compute-to-Data whoever has a dataset's URL has the data.
        WORKFLOW.unlink()
    (DATA / "ddos" / "workflow.json").write_text(json.dumps(without_urls(stage)))
    print("configure: done", flush=True)
    return 0


def without_urls(stage: dict[str, Any]) -> dict[str, Any]:
    """The stage as the algorithm may see it: ids, positions and the container, no more."""
    algorithm = stage.get("algorithm") or {}
    container = algorithm.get("container") if isinstance(algorithm, dict) else None
    kept = {
        "index": stage.get("index", 0),
        "input": [
            {"id": item.get("id"), "index": item.get("index", position)}
            for position, item in enumerate(stage.get("input") or [])
            if isinstance(item, dict)
        ],
        "algorithm": {"id": algorithm.get("id") if isinstance(algorithm, dict) else None},
    }
    if isinstance(container, dict):
        kept["algorithm"]["container"] = {
            key: container[key]
            for key in ("image", "tag", "entrypoint", "checksum")
            if isinstance(container.get(key), str)
        }
    return kept


def fetch_algorithm(algorithm: dict[str, object], budget: Budget, fetcher: Fetcher) -> None:
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
        size = fetcher.download(url, target, budget)
    except Exception as exc:  # whatever failed, the log gets no traceback
        raise StageFailure(
            ALGORITHM_FAILED, f"algorithm {redact(url)}: {failed(exc, url)}"
        ) from None
    target.chmod(0o755)  # an entrypoint of plain `$ALGO` executes it
    print(f"algorithm: {redact(url)}, {size} bytes", flush=True)


def fetch_input(item: object, position: int, budget: Budget, fetcher: Fetcher) -> None:
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
            size = fetcher.download(url, folder / str(number), budget)
        except Exception as exc:  # whatever failed, the log gets no traceback
            raise StageFailure(
                DATA_FAILED, f"input {position} {redact(url)}: {failed(exc, url)}"
            ) from None
        print(f"input {position}: {redact(url)}, {size} bytes", flush=True)


class Refused(Exception):
    """A URL this engine will not fetch: its scheme, or the address it leads to."""


class Fetcher:
    """Downloads URLs as hostile input: http(s) at every hop (and file:// under the input
    roots, never after a redirect), every name resolved once and each of its addresses
    checked against the networks no fetch may reach, then the connection made to the address
    that was checked, so a second lookup cannot rebind the name (DNS rebinding). Each download
    has a deadline and, past its first seconds, a minimum rate."""

    def __init__(
        self, *, roots: list[Path], allowed: list[str], seconds: float, min_rate: float
    ) -> None:
        import ipaddress  # here, not at the top: publish never needs it

        self.roots = roots
        self.allowed = [ipaddress.ip_network(net, strict=False) for net in allowed]
        self.seconds = seconds
        self.min_rate = min_rate

    def download(self, url: str, target: Path, budget: Budget) -> int:
        # Imported here, not at the top: urllib alone costs a no-op job 50 ms per stage.
        import urllib.parse

        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme == "file":
            path = Path(urllib.parse.unquote(parsed.path)).resolve()
            if not any(path.is_relative_to(root) for root in self.roots):
                raise Refused("file:// URLs are allowed only under the engine's inputRoots")
            with path.open("rb") as source:
                return self.save(source, target, budget, deadline=None)
        deadline = Deadline(self.seconds, self.min_rate)
        for _ in range(MAX_REDIRECTS + 1):
            response = self.get(url)
            if response.status in REDIRECTS:
                location = response.getheader("Location") or ""
                response.close()
                url = urllib.parse.urljoin(url, location)
                continue
            if response.status != 200:
                response.close()
                raise Refused(f"HTTP {response.status}")
            with response:
                return self.save(response, target, budget, deadline=deadline)
        raise Refused(f"more than {MAX_REDIRECTS} redirects")

    def get(self, url: str) -> Any:
        import urllib.parse

        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https"):
            raise Refused(f"the scheme {parsed.scheme!r} is not fetched (http and https only)")
        host = parsed.hostname or ""
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        address = self.checked_address(host, port)
        connection = _pinned_connection()(
            host, port, address=address, tls=parsed.scheme == "https", timeout=READ_SECONDS
        )
        path = urllib.parse.urlunsplit(("", "", parsed.path or "/", parsed.query, ""))
        connection.request(
            "GET", path, headers={"User-Agent": "operator-engine", "Accept-Encoding": "identity"}
        )
        response = connection.getresponse()
        response.connection = connection  # closed with the response
        return response

    def checked_address(self, host: str, port: int) -> str:
        """The one address to connect to, once every address the name has was checked."""
        import socket

        if not host:
            raise Refused("the URL names no host")
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = [str(info[4][0]) for info in found]
        for address in addresses:
            why = self.forbidden(address)
            if why:
                raise Refused(
                    f"{address} is {why}: not fetched unless the environment's allowNetworks "
                    "lists it"
                )
        return addresses[0]

    def forbidden(self, text: str) -> str:
        """Why an address may not be reached, or "" when it may."""
        import ipaddress

        address = ipaddress.ip_address(text.split("%")[0])
        if any(address in net for net in self.allowed):
            return ""
        if isinstance(address, ipaddress.IPv6Address):
            embedded = address.ipv4_mapped or address.sixtofour or _nat64(address)
            if embedded is not None:
                return self.forbidden(str(embedded))
        for network, what in _blocked():
            if address in network:
                return what
        return ""

    def save(self, source: Any, target: Path, budget: Budget, deadline: Deadline | None) -> int:
        written = 0
        with target.open("wb") as out:
            while chunk := source.read1(CHUNK):  # what has arrived, not a full chunk
                budget.take(len(chunk), "download")
                out.write(chunk)
                written += len(chunk)
                if deadline is not None:
                    deadline.check(written)
        return written


class Deadline:
    """A download's time: at most `seconds` in all, and at least `min_rate` bytes a second
    on average once the first RATE_GRACE_SECONDS are past, so a trickling server cannot
    hold a job's slot for the whole stage."""

    def __init__(self, seconds: float, min_rate: float) -> None:
        import time

        self.clock = time.monotonic
        self.started = self.clock()
        self.seconds = seconds
        self.min_rate = min_rate

    def check(self, written: int) -> None:
        took = self.clock() - self.started
        if took > self.seconds:
            raise Refused(f"the download took more than {self.seconds:g} s")
        if took > RATE_GRACE_SECONDS and written < self.min_rate * took:
            raise Refused(f"the download is slower than {self.min_rate:g} bytes a second")


@functools.cache
def _pinned_connection() -> Any:
    """The HTTP(S) connection class that connects to one checked address and uses the name
    for Host and for TLS only; made on the first download (http.client and ssl load slowly)."""
    import http.client
    import socket
    import ssl

    class PinnedConnection(http.client.HTTPConnection):
        def __init__(self, host: str, port: int, *, address: str, tls: bool, timeout: float):
            super().__init__(host, port, timeout=timeout)
            self.address = address
            self.tls = tls

        def connect(self) -> None:
            sock = socket.create_connection((self.address, self.port), self.timeout)
            if self.tls:
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host)
            self.sock = sock

    return PinnedConnection


@functools.cache
def _blocked() -> list[tuple[Any, str]]:
    import ipaddress

    return [(ipaddress.ip_network(net), what) for net, what in BLOCKED]


def _nat64(address: Any) -> Any:
    """The IPv4 address a NAT64 address (64:ff9b::/96) stands for, else None."""
    import ipaddress

    if address in ipaddress.ip_network("64:ff9b::/96"):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def failed(exc: Exception, url: str) -> str:
    """An exception as one log line: its class and message, and not even that when the
    message quotes a part of the URL that may be a secret (credentials, a token)."""
    import urllib.parse

    if isinstance(exc, Refused):  # ours: it never quotes the URL
        return str(exc)
    text = f"{type(exc).__name__}: {exc}"
    parsed = urllib.parse.urlsplit(url)
    secrets = [parsed.query, parsed.fragment, parsed.netloc.rpartition("@")[0]]
    secrets += [urllib.parse.unquote(part) for part in secrets]
    if "://" in text or any(part and part in text for part in secrets):
        return f"{type(exc).__name__} (its message quotes the URL, so it is not shown)"
    return text


def redact(url: str) -> str:
    """The URL without its query and credentials: signed URLs carry secrets there."""
    import urllib.parse

    parsed = urllib.parse.urlsplit(url)
    host = parsed.hostname or ""
    try:
        port = parsed.port
    except ValueError:  # a port that is not a number: the fetch fails, the log still shows it
        port = None
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port else host
    return urllib.parse.urlunsplit((parsed.scheme, netloc, parsed.path, "", ""))


def publish() -> int:
    """Copy the regular files of /data/outputs to /results/outputs, within the quota and the
    number of outputs, and write what was copied (name, size, sha256) to
    /results/manifest.json. Nothing is reached through a link: the folder is opened without
    following one, and every file beneath it relative to its folder's descriptor, so links and
    special files are skipped, never followed. Names that are not UTF-8 or hold control
    characters are skipped too: they would break the logs and the answers that list them."""
    budget = Budget(int(os.environ.get("QUOTA_BYTES", str(1024**3))))
    most = int(os.environ.get("MAX_OUTPUTS", "1000"))
    try:
        root = os.open(DATA / "outputs", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        print("publish: /data/outputs is not a folder: nothing published", flush=True)
        root = -1
    published: list[dict[str, Any]] = []
    for name, folder in [] if root < 0 else entries_beneath(root):
        shown = ascii(name)[1:-1]
        if not publishable(name):
            print(f"publish: skipped {shown}: its name is not plain UTF-8 text", flush=True)
        elif len(published) >= most:
            print(f"publish: skipped {shown}: the job publishes {most} outputs at most", flush=True)
        else:
            entry = publish_one(name, folder, budget)
            if entry is not None:
                published.append(entry)
    (RESULTS / "manifest.json").write_text(json.dumps(published))
    print(f"publish: {len(published)} output file(s)", flush=True)
    return 0


def entries_beneath(root: int) -> Iterator[tuple[str, int]]:
    """(path relative to the outputs folder, descriptor of its folder) of every entry that is
    not a folder, links to folders included, in name order; no link is followed. Each
    descriptor is open only until the walk moves on."""
    for folder, dirs, files, folder_fd in os.fwalk(".", dir_fd=root, follow_symlinks=False):
        dirs.sort()
        links = [n for n in dirs if stat.S_ISLNK(os.lstat(n, dir_fd=folder_fd).st_mode)]
        prefix = "" if folder == "." else folder.removeprefix("./") + "/"
        for name in sorted(files + links):
            yield prefix + name, folder_fd


def publishable(name: str) -> bool:
    try:
        name.encode("utf-8")  # undecodable bytes came in as lone surrogates
    except UnicodeEncodeError:
        return False
    return not any(ord(char) < 32 or 127 <= ord(char) < 160 for char in name)


def publish_one(name: str, folder: int, budget: Budget) -> dict[str, Any] | None:
    import hashlib  # only when there is something to publish: it loads OpenSSL

    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK  # a FIFO must not block publishing
    try:
        fd = os.open(os.path.basename(name), flags, dir_fd=folder)
    except OSError:
        print(f"publish: skipped {name}: not a regular file", flush=True)
        return None
    with os.fdopen(fd, "rb") as source:
        size = os.fstat(fd).st_size
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            print(f"publish: skipped {name}: not a regular file", flush=True)
            return None
        try:
            budget.take(size, name)
        except OverflowError:
            print(f"publish: skipped {name}: over the job's quota", flush=True)
            return None
        target = RESULTS / "outputs" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        copied = 0
        with target.open("wb") as out:
            while copied <= size and (chunk := source.read(CHUNK)):
                digest.update(chunk)
                out.write(chunk)
                copied += len(chunk)
    if copied != size:  # it changed while it was copied: what was counted is not what is there
        target.unlink()
        print(f"publish: skipped {name}: it changed while it was copied", flush=True)
        return None
    print(f"publish: {name}, {size} bytes", flush=True)
    return {"filename": name, "filesize": size, "sha256": digest.hexdigest()}


if __name__ == "__main__":
    programs = {"configure": configure, "publish": publish}
    if len(sys.argv) != 2 or sys.argv[1] not in programs:
        print(f"usage: inside.py {'|'.join(programs)}", file=sys.stderr)
        sys.exit(2)
    try:
        sys.exit(programs[sys.argv[1]]())
    except Exception as exc:  # the log is the consumer's: a class and a line, no traceback
        message = "" if "://" in str(exc) else f": {exc}"
        print(f"{sys.argv[1]} failed: {type(exc).__name__}{message}", flush=True)
        sys.exit(1)
