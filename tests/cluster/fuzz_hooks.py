"""schemathesis hooks (loaded through SCHEMATHESIS_HOOKS): sign each generated call the way the
Provider would, with the local run's key, so that the fuzzing reaches past the signature check
into every handler instead of stopping at 401.

Whatever schemathesis generated for owner and jobId is what gets signed. Only calls generated
to be valid are signed: an invalid one may be invalid by its nonce or owner, which signing would
repair behind schemathesis's back; it goes out as it was, as does a call without a
providerSignature or with an owner that is not text.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import schemathesis
from schemathesis.generation import GenerationMode

from opclient.signing import Signer, message

SIGNER = Signer.from_hex(os.environ["FUZZ_PROVIDER_KEY"])
ENVIRONMENT = os.environ["FUZZ_ENVIRONMENT"]
_last_nonce = 0
_starts = 0
_lock = threading.Lock()


def fresh_nonce() -> int:
    """Now in nanoseconds, like the Provider, and never the same twice across workers."""
    global _last_nonce
    with _lock:
        _last_nonce = max(time.time_ns(), _last_nonce + 1)
        return _last_nonce


@schemathesis.hook
def before_call(ctx: Any, case: Any, kwargs: dict[str, Any]) -> None:
    global _starts
    if case.method == "POST" and isinstance(case.body, dict) and "environment" in case.body:
        # Every other start names the environment the run announced, so that starts get past
        # that check and store jobs; the others keep the environment they were generated with.
        _starts += 1
        if _starts % 2:
            case.body["environment"] = ENVIRONMENT
    if case.meta is not None and case.meta.generation.mode is not GenerationMode.POSITIVE:
        return
    for fields in (case.query, case.body):
        if isinstance(fields, dict) and _sign(fields, starts_a_job=case.method == "POST"):
            return


def _sign(fields: dict[str, Any], *, starts_a_job: bool) -> bool:
    owner = fields.get("owner")
    if "providerSignature" not in fields or not isinstance(owner, str):
        return False
    job_id = fields.get("jobId")
    # A start names no jobId in what it signs (contract section 2); every other call does.
    signed_job = job_id if isinstance(job_id, str) and not starts_a_job else None
    nonce = fresh_nonce()
    fields["nonce"] = nonce if isinstance(fields.get("nonce"), int) else str(nonce)
    fields["providerSignature"] = SIGNER.sign(message(owner, signed_job, str(nonce)))
    return True
