"""python -m common.chores: the service's chores, each run once, then exit.

They run beside the requests in the functions that serve them (the stop function sweeps the
WorkFlows the original engine finished; every function prunes old nonces), but a function
scaled to zero serves no request and so runs no chore: on Knative a CronJob runs this module
(deploy/knative/engine.yaml, as the stop function's ServiceAccount, which may delete
WorkFlows), so the chores never wait for traffic. Exit 0 when every chore ran, 1 otherwise.
"""

from __future__ import annotations

import logging
import sys

from common import jobs, runtime
from common.errors import ConfigError, ServiceError

log = logging.getLogger("common.chores")

CHORES = (runtime.NONCE_PRUNING, jobs.WORKFLOW_SWEEP)


def main() -> int:
    try:
        rt = runtime.current()
    except ConfigError as exc:
        print(f"chores: {exc}", file=sys.stderr)
        return 2
    failed = 0
    for chore in CHORES:
        try:
            chore.run(rt)
        except ServiceError as exc:
            log.warning("%s failed: %s", chore.name, exc.message)
            failed += 1
        else:
            log.info("%s done", chore.name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
