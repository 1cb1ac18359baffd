"""Closed-loop HTTP load: `concurrency` workers on keep-alive connections, each sending its next
request when the last one answered, for a fixed time, loopback only.

Requests are prepared (and signed, through opclient.signing like the Provider) before the clock
starts, so the generator spends its CPU on sending, not on signing. `run` drives them from the
Go generator in bench/loadgen (a few microseconds of CPU a request, so that the server is what
limits a run on 2 cores); `smoke` from Python's aiohttp, for a functional probe.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    params: dict[str, Any] | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Result:
    scenario: str
    concurrency: int
    seconds: float
    latencies_ms: list[float]
    statuses: Counter[int]
    generator_cpu_s: float | None = None  # the Go generator's own, in the timed window

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies_ms) or [0.0]

        def pct(p: float) -> float:
            return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 2)

        return {
            "scenario": self.scenario,
            "concurrency": self.concurrency,
            "requests": len(self.latencies_ms),
            "rps": round(len(self.latencies_ms) / self.seconds, 1),
            "p50_ms": pct(0.50),
            "p90_ms": pct(0.90),
            "p99_ms": pct(0.99),
            "max_ms": round(ordered[-1], 2),
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
        }


async def _run(
    base: str,
    next_request: Callable[[], Request],
    concurrency: int,
    seconds: float,
    max_requests: int,
) -> tuple[list[float], Counter[int], float]:
    if not base.startswith(("http://127.", "http://localhost")):
        raise ValueError("the load generator only targets loopback")
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(base, connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        deadline = started + seconds

        async def worker() -> None:
            while time.perf_counter() < deadline and len(latencies) < max_requests:
                req = next_request()
                t0 = time.perf_counter()
                try:
                    async with session.request(
                        req.method, req.path, params=req.params, json=req.body, headers=req.headers
                    ) as response:
                        await response.read()
                        statuses[response.status] += 1
                except aiohttp.ClientError:
                    statuses[0] += 1
                latencies.append((time.perf_counter() - t0) * 1000)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return latencies, statuses, elapsed


LOADGEN = Path(__file__).resolve().parent / "loadgen"


def loadgen() -> Path:
    """The Go generator, built once per version of its source into the user's cache."""
    source = (LOADGEN / "main.go").read_bytes() + (LOADGEN / "go.mod").read_bytes()
    digest = hashlib.sha256(source).hexdigest()[:12]
    binary = Path.home() / ".cache" / "operator-service" / f"loadgen-{digest}"
    if not binary.exists():
        binary.parent.mkdir(parents=True, exist_ok=True)
        built = binary.with_suffix(".tmp")
        subprocess.run(
            ["go", "build", "-o", str(built), "."], cwd=LOADGEN, check=True, capture_output=True
        )
        built.replace(binary)
    return binary


def wire(request: Request) -> str:
    """One line of the generator's input."""
    path = request.path
    if request.params:
        path += "?" + urllib.parse.urlencode(request.params)
    body = None if request.body is None else json.dumps(request.body)
    return json.dumps(
        {"method": request.method, "path": path, "headers": request.headers, "body": body}
    )


def run(
    base: str, scenario: str, requests: Sequence[Request], concurrency: int, seconds: float
) -> Result:
    """The prepared requests, each sent once at most, from the Go generator; its CPU counts
    in this process's children once it has ended."""
    address = urllib.parse.urlsplit(base).netloc
    argv = [str(loadgen()), "-addr", address, "-c", str(concurrency), "-d", str(seconds)]
    pool = "\n".join(wire(request) for request in requests) + "\n"
    # One thread of Go's runtime: fewer wake-ups between its threads, the least CPU a request
    # (0.13 ms against 0.15 with two, on this machine; wrk's is 0.08), and still ten times what
    # any server here answers.
    env = {**os.environ, "GOMAXPROCS": "1"}
    done = subprocess.run(
        argv, input=pool, env=env, capture_output=True, text=True, timeout=seconds + 60, check=True
    )
    report = json.loads(done.stdout)
    latencies = [us / 1000 for us in report["latencies_us"] or []]
    statuses = Counter({int(k): v for k, v in report["statuses"].items()})
    return Result(
        scenario, concurrency, report["seconds"], latencies, statuses, report["cpu_seconds"]
    )


def smoke(
    base: str,
    scenario: str,
    requests: Sequence[Request] | Callable[[], Request],
    concurrency: int,
    seconds: float,
    max_requests: int = 1_000_000,
) -> Result:
    """The same, from Python (aiohttp): heavier on CPU, for checking that requests work."""
    if callable(requests):
        next_request = requests
    else:
        pool = iter(requests)
        next_request = lambda: next(pool)  # noqa: E731 - a prepared pool, consumed once
    latencies, statuses, elapsed = asyncio.run(
        _run(base, next_request, concurrency, seconds, max_requests)
    )
    return Result(scenario, concurrency, elapsed, latencies, statuses)
