"""`opctl verify`: a job's receipt checked as a consumer would, trusting nobody's word.

The receipt's signature must recover to the operator's address (the service's OPERATOR_ADDRESS
from `GET /`, or `--operator`), and every output and log it lists must hash, as getResult
serves it, to the sha256 it names. Offline (`--receipt file`) only the signature can be checked.
Each check is one row; `ok` is False for any row that does not match.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_hash.auto import keccak

from opclient.client import Client


@dataclass(frozen=True)
class Check:
    what: str
    ok: bool
    detail: str

    def row(self) -> dict[str, str]:
        return {
            "check": self.what,
            "result": "ok" if self.ok else "MISMATCH",
            "detail": self.detail,
        }


def signature(signed: dict[str, Any], operator: str) -> Check:
    """Whether the receipt was signed by `operator`, over its canonical JSON."""
    receipt = signed.get("receipt")
    text = json.dumps(receipt, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    try:
        signer = Account.recover_message(
            encode_defunct(primitive=keccak(text.encode())), signature=signed.get("signature")
        )
    except (TypeError, ValueError) as exc:
        return Check("signature", False, f"no valid signature: {exc}")
    if signer.lower() != operator.lower():
        return Check("signature", False, f"signed by {signer}, not the operator {operator}")
    return Check("signature", True, f"signed by the operator {operator}")


def online(client: Client, job_id: str, *, operator: str | None, owner: str | None) -> list[Check]:
    """The receipt as getResult serves it, and every file it lists."""
    [job] = client.status(job_id=job_id, owner=owner) or [{}]
    results = job.get("results") or []
    found = [i for i, entry in enumerate(results) if entry.get("type") == "receipt"]
    if not found:
        return [Check("receipt", False, f"job {job_id} published no receipt")]
    index = found[-1]
    raw = _download(client, job_id, index, owner)
    checks = [_hashed("receipt.json", raw, results[index].get("sha256"))]
    signed = json.loads(raw)
    operator = operator or client.about().get("address")
    if not operator:
        checks.append(Check("signature", False, "the service names no OPERATOR_ADDRESS"))
    else:
        checks.append(signature(signed, operator))
    receipt = signed.get("receipt") or {}
    listed = {(e.get("filename"), e.get("type")): i for i, e in enumerate(results)}
    for entry in (receipt.get("outputs") or []) + (receipt.get("logs") or []):
        name = f"{entry.get('type')} {entry.get('filename')}"
        position = listed.get((entry.get("filename"), entry.get("type")))
        if position is None:
            checks.append(Check(name, False, "listed in the receipt, not in the job's results"))
            continue
        data = _download(client, job_id, position, owner)
        checks.append(_hashed(name, data, entry.get("sha256")))
    return checks


def _download(client: Client, job_id: str, index: int, owner: str | None) -> bytes:
    return b"".join(client.result(job_id=job_id, index=index, owner=owner).chunks())


def _hashed(name: str, data: bytes, expected: Any) -> Check:
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        return Check(name, False, f"sha256 {actual}, the receipt says {expected}")
    return Check(name, True, f"sha256 {actual}, {len(data)} bytes")
