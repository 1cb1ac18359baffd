"""A job's statuses, as Ocean's operator-engine stores them in `jobs.status` and the Provider
reads them (contract §4): the numbers and texts are the wire; the names are ours.

A leaf module: the engine's stage machine and the functions both read it, without loading
anything else of either.
"""

from __future__ import annotations

from enum import IntEnum


class Status(IntEnum):
    WARMING_UP = 1
    STARTED = 10
    CONFIGURING = 20
    PROVISIONED = 30
    DATA_FAILED = 31
    ALGORITHM_FAILED = 32
    RUNNING = 40
    FILTERING = 50
    PUBLISHING = 60
    FINISHED = 70

    @property
    def text(self) -> str:
        return TEXTS[self]


TEXTS = {
    Status.WARMING_UP: "Warming up",
    Status.STARTED: "Job started",
    Status.CONFIGURING: "Configuring volumes",
    Status.PROVISIONED: "Provisioning success",
    Status.DATA_FAILED: "Data provisioning failed",
    Status.ALGORITHM_FAILED: "Algorithm provisioning failed",
    Status.RUNNING: "Running algorithm ",  # sic: the trailing space is the wire, clients match it
    Status.FILTERING: "Filtering results",
    Status.PUBLISHING: "Publishing results",
    Status.FINISHED: "Job finished",
}
