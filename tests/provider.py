"""Requests signed exactly the way Ocean's Provider signs them (contract section 2).

The Provider hashes the message with keccak256, signs the 32-byte hash as an EIP-191 personal
message with eth_keys, and sends r + s + v with v as 0/1. Tests use this so that what passes
here passes for the real Provider.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils.crypto import keccak

# The contract's test vector key, whose address is 0xe17D2A07EFD5b112F4d675ea2d122ddb145d117B.
PROVIDER_KEY = "0x1f990f8b013fc5c7955e0f8746f11ded231721b9cf3f99ff06cdc03492b28090"
STRANGER_KEY = "0x" + "42" * 32
OWNER = "0xC41808BBef371AD5CFc76466dDF9dEe228d2BdAA"


@dataclass(frozen=True)
class Provider:
    key: str

    @property
    def address(self) -> str:
        return str(Account.from_key(self.key).address)

    def sign(self, message: str, *, ethers_v: bool = False) -> str:
        signed = Account.sign_message(encode_defunct(primitive=keccak(text=message)), self.key)
        raw = bytes(signed.signature)
        v = raw[64] if ethers_v else raw[64] - 27  # eth_keys gives 0/1, ethers 27/28
        return "0x" + (raw[:64] + bytes([v])).hex()

    def signed(self, owner: str = OWNER, job_id: str | None = None, **extra: Any) -> dict[str, Any]:
        """owner, nonce, providerSignature (and jobId when given) for one call."""
        nonce = extra.pop("nonce", time.time_ns())
        data: dict[str, Any] = {"owner": owner, "nonce": nonce, **extra}
        if job_id is not None:
            data["jobId"] = job_id
        data["providerSignature"] = self.sign(f"{owner}{job_id or ''}{nonce}")
        return data


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
