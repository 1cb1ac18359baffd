"""Who may call: the Provider by an Ethereum signature, operators by the Admin header.

The signed message format lives in `signed_message` alone. Checks run in the order that keeps a
forged request from costing anything: signature, then allowlist, and only then the nonce is
checked (within NONCE_WINDOW of our clock) and consumed (once per signer), so a stranger cannot
burn the Provider's nonces. A call that changes something consumes its nonce in the transaction
of its change; a read, in a commit of its own that does not wait for the disk. Everything
fails closed.
"""

from __future__ import annotations

import hmac
import logging
import time
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache

from coincurve import PublicKey
from eth_hash.auto import keccak
from eth_utils.address import to_checksum_address

from common import metrics, store
from common.config import Settings
from common.db import Database, Transaction
from common.errors import BadRequest, ServiceError, Unauthorized

log = logging.getLogger(__name__)

SIGNATURE_MISSING = "`providerSignature` of agreementId is required."
UNRECOVERABLE = "Failed to recover address"
PERSONAL_SIGN_PREFIX = b"\x19Ethereum Signed Message:\n32"
MILLISECOND_DIGITS = 13  # Unix time in ms has 13 digits until the year 2286


@dataclass(frozen=True)
class Nonce:
    """A nonce as the Provider sent it: `text` is what it signed, `value` what we compare."""

    text: str
    value: Decimal


@dataclass(frozen=True)
class SignedCall:
    """What one Provider call signed, and the signature it carried. `kind` is the call (start,
    stop, delete, status, result); `provider_address` the signer it claims to be, if it says."""

    owner: str
    job_id: str | None
    signature: str | None
    nonce: Nonce
    kind: str = "status"
    provider_address: str | None = None


def signed_message(owner: str, job_id: str | None, nonce: Nonce) -> str:
    """What the Provider signs: owner + jobId + nonce, the jobId only when the call names one."""
    return f"{owner}{job_id or ''}{nonce.text}"


# What Ocean Node (v0.2.x, C2DEngineOPFK8) signs for each call, as its TypeScript builds it.
OCEAN_NODE_FORMATS = {
    "start": "String(nonce)",
    "stop": "String(nonce)",
    "status": "String(nonce + owner + jobId)",
    "result": "owner + jobId (no nonce)",
}


def ocean_node_message(call: SignedCall) -> str | None:
    """The message Ocean Node signs for `call`; None for a call it never makes (delete)."""
    if call.kind in ("start", "stop"):
        return call.nonce.text
    if call.kind == "status":
        # JavaScript's `nonce + owner + jobId`: a missing jobId is "undefined", and a number
        # plus a missing owner is NaN.
        job = call.job_id if call.job_id is not None else "undefined"
        return f"{call.nonce.text}{call.owner}{job}" if call.owner else f"NaN{call.job_id or ''}"
    if call.kind == "result":
        return f"{call.owner}{call.job_id or ''}"
    return None


def recover_signer(message: str, signature: str) -> str:
    """The address that signed keccak256(message) as an EIP-191 personal message, v 0/1
    (eth_keys) or 27/28 (ethers). Straight through libsecp256k1 (coincurve): the same answer
    as eth-account's `recover_message` (the tests hold it to that), at a third of the cost."""
    return _recover(PERSONAL_SIGN_PREFIX + keccak(message.encode()), signature)


def recover_ocean_node_signer(message: str, signature: str) -> str:
    """The address that signed `message` as Ocean Node does: the personal message is
    keccak256(message) through ethers' toBeArray, which drops its leading zero bytes (one
    hash in 256 is signed as 31 bytes, with a prefix saying 31)."""
    digest = keccak(message.encode()).lstrip(b"\0")
    return _recover(b"\x19Ethereum Signed Message:\n%d" % len(digest) + digest, signature)


def _recover(personal_message: bytes, signature: str) -> str:
    try:
        raw = bytes.fromhex(signature.removeprefix("0x"))
    except ValueError:
        raw = b""
    if len(raw) != 65:  # not a signature at all: the caller's mistake
        raise _refused("signature_invalid", BadRequest(UNRECOVERABLE))
    v = raw[64] - 27 if raw[64] >= 27 else raw[64]
    if v not in (0, 1):  # no recovery id a signer could have made
        raise _refused("signature_invalid", Unauthorized(UNRECOVERABLE))
    digest = keccak(personal_message)
    try:
        public = PublicKey.from_signature_and_message(raw[:64] + bytes([v]), digest, hasher=None)
    except ValueError:  # shaped like a signature, but no key signs like that: not authentic
        raise _refused("signature_invalid", Unauthorized(UNRECOVERABLE)) from None
    return _checksummed(keccak(public.format(compressed=False)[1:])[-20:].hex())


@lru_cache(maxsize=256)
def _checksummed(address: str) -> str:
    """EIP-55 spelling of an address; cached, as the same few Providers sign every call."""
    return to_checksum_address(address)


@dataclass(frozen=True)
class Verified:
    """A Provider call whose signature, signer and nonce window checked out. Its nonce is
    consumed by `consume`: in its own asynchronous commit for a call that changes nothing,
    in the transaction of the change for one that does (contract section 2)."""

    signer: str
    nonce_ns: int  # as stored: see _fingerprint for Ocean Node's
    nonce_text: str
    fresh: bool = True  # False when the call signed no nonce: nothing to consume


def verify_provider(settings: Settings, call: SignedCall) -> Verified | None:
    """Check the signature, the allowlist and the nonce's window; raise when the call may not
    proceed. None with SIGNATURE_REQUIRED=0 (legacy): nothing is checked, no signer is known.
    A call whose providerAddress is an Ocean Node signer is verified in Ocean Node's format
    for that call, and only in it; every other call in the Provider's."""
    if not settings.signature_required:
        return None
    if not call.signature:
        raise _refused("signature_missing", BadRequest(SIGNATURE_MISSING))
    claimed = (call.provider_address or "").lower()
    ocean_node = ocean_node_message(call) if claimed in settings.ocean_node_signers else None
    if ocean_node is not None:
        signer = recover_ocean_node_signer(ocean_node, call.signature)
        expected = f"Ocean Node's message for this call, {OCEAN_NODE_FORMATS[call.kind]}"
    else:
        signer = recover_signer(signed_message(call.owner, call.job_id, call.nonce), call.signature)
        expected = "the Provider's message for this call, owner + jobId + nonce"
    if signer.lower() not in settings.allowed_providers or (
        ocean_node and signer.lower() != claimed
    ):
        log.info("rejected a request signed by %s: not in ALLOWED_PROVIDERS", signer)
        if claimed in settings.allowed_providers:
            raise _refused(
                "signer_not_allowed",
                Unauthorized(
                    f"The signature does not match providerAddress {call.provider_address}: "
                    f"it must sign {expected}"
                ),
            )
        raise _refused(
            "signer_not_allowed",
            Unauthorized(
                f"The signing ethereum account {signer} is not authorized to use this service."
            ),
        )
    nonce_ns = nanoseconds(call.nonce)
    if ocean_node is not None and call.kind == "result":
        # Ocean Node signs no nonce for getResult: nothing to check or consume.
        return Verified(signer, nonce_ns, call.nonce.text, fresh=False)
    window = settings.nonce_window
    if abs(nonce_ns - time.time_ns()) > window * 10**9:
        raise _refused(
            "nonce_outside_window",
            Unauthorized(
                f"Nonce {call.nonce.text} is not within {window} s of the service's clock "
                "(a nonce is the caller's time.time_ns())"
            ),
        )
    if ocean_node is not None:
        nonce_ns += _fingerprint(ocean_node)
    return Verified(signer, nonce_ns, call.nonce.text)


def _fingerprint(message: str) -> int:
    """Where Ocean Node's nonce (a millisecond) is stored, the sub-millisecond digits hold a
    fingerprint of what the call signed: two calls of one millisecond for different jobs are
    both fresh (one pair in a million collides, and the later gets 401), while a replay of the
    same call finds its nonce used."""
    return int.from_bytes(keccak(message.encode())[:8], "big") % 10**6


def authenticate_provider(settings: Settings, db: Database, call: SignedCall) -> str | None:
    """For a call that changes nothing (getResult; a status consumes its nonce in its read):
    verify it, and consume its nonce in a commit of its own that does not wait for the disk.
    A database crash can forget the last moment of such nonces, which lets a read be replayed
    once: harmless, and it spares every read an fsync. Returns the signer (None in legacy
    mode)."""
    verified = verify_provider(settings, call)
    if verified is None:
        return None
    if verified.fresh:
        consume(db, verified)
    return verified.signer


def consume(db: Database | Transaction, verified: Verified) -> None:
    """Use the nonce up, once per signer: on a Database, in an asynchronous commit of its
    own; in a Transaction, as part of it (committed with the change, or rolled back with it)."""
    if isinstance(db, Transaction):
        fresh = store.consume_nonce_in(db, verified.signer, verified.nonce_ns)
    else:
        fresh = store.consume_nonce(db, verified.signer, verified.nonce_ns)
    if not fresh:
        raise reused(verified)


def reused(verified: Verified) -> ServiceError:
    """The refusal of a call whose nonce was used before."""
    return _refused("nonce_reused", Unauthorized(f"Nonce {verified.nonce_text} was already used"))


def nanoseconds(nonce: Nonce) -> int:
    """The nonce as Unix time in nanoseconds: the Provider's time_ns(); a value of 13 digits
    or fewer before any fraction is milliseconds (Date.now() of JavaScript clients)."""
    whole = len(nonce.text.split(".")[0].lstrip("0") or "0")
    return int(nonce.value * 10**6) if whole <= MILLISECOND_DIGITS else int(nonce.value)


def authenticate_admin(settings: Settings, header: str | None) -> None:
    if not header:
        raise _refused("admin_missing", BadRequest("The Admin header is required"))
    # Compare with every secret, always: the time taken says nothing about which one matched.
    given = header.encode()
    matched = False
    for secret in settings.allowed_admins:
        matched |= hmac.compare_digest(given, secret.encode())
    if not matched:
        raise _refused("admin_invalid", Unauthorized("Invalid Admin header"))


def _refused(reason: str, error: ServiceError) -> ServiceError:
    """`error`, counted under `reason` (common.metrics.AUTH_REASONS) before it is raised."""
    metrics.rejected(reason)
    return error
