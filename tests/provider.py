"""Requests signed exactly the way Ocean's Provider signs them (contract section 2), and the
workflow the Provider sends."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opclient.signing import Signer

# The contract's test vector key, whose address is 0xe17D2A07EFD5b112F4d675ea2d122ddb145d117B.
PROVIDER_KEY = "0x1f990f8b013fc5c7955e0f8746f11ded231721b9cf3f99ff06cdc03492b28090"
STRANGER_KEY = "0x" + "42" * 32
OWNER = "0xC41808BBef371AD5CFc76466dDF9dEe228d2BdAA"


@dataclass(frozen=True, repr=False)
class Provider(Signer):
    """opclient's signer (the project's one implementation of the Provider's signing), with
    the test owner as default and extra request fields merged in."""

    def signed(  # type: ignore[override]
        self, owner: str = OWNER, job_id: str | None = None, nonce: int | None = None, **extra: Any
    ) -> dict[str, Any]:
        return {**super().signed(owner, job_id, nonce), **extra}


PROVIDER = Provider(PROVIDER_KEY)
STRANGER = Provider(STRANGER_KEY)


def stage(**changes: Any) -> dict[str, Any]:
    """A stage 0 the way the Provider sends it."""
    base: dict[str, Any] = {
        "index": 0,
        "input": [
            {"id": "did:op:input0", "url": ["https://example.org/data.csv"], "index": 0},
        ],
        "compute": {"Instances": 1, "maxtime": 3600},
        "algorithm": {
            "id": "did:op:algo",
            "url": "https://example.org/algo.py",
            "rawcode": "",
            "container": {"image": "python", "tag": "3.11", "entrypoint": "python $ALGO"},
        },
        "output": {"metadataUri": "https://aquarius.example.org", "owner": OWNER},
    }
    base.update(changes)
    return base


def start_body(
    agreement_id: str, *, environment: str = "ocean-compute", **extra: Any
) -> dict[str, Any]:
    workflow = extra.pop("workflow", {"stages": [stage()]})
    signer = extra.pop("provider", PROVIDER)
    return {
        "workflow": workflow,
        "agreementId": agreement_id,
        "environment": environment,
        **signer.signed(**extra),
    }
