"""A closed-loop HTTP load generator: `concurrency` workers on keep-alive connections, each
sending its next request when the last one answered, for a fixed time, loopback only.

Requests are prepared (and signed, through opclient.signing like the Provider) before the clock
starts, so the generator spends its CPU on sending, not on signing.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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


def run(
    base: str,
    scenario: str,
    requests: Sequence[Request] | Callable[[], Request],
    concurrency: int,
    seconds: float,
    max_requests: int = 1_000_000,
) -> Result:
    if callable(requests):
        next_request = requests
    else:
        pool = iter(requests)
        next_request = lambda: next(pool)  # noqa: E731 - a prepared pool, consumed once
    latencies, statuses, elapsed = asyncio.run(
        _run(base, next_request, concurrency, seconds, max_requests)
    )
    return Result(scenario, concurrency, elapsed, latencies, statuses)
