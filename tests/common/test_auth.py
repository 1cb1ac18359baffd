"""The Provider's signature scheme, pinned to the contract's test vector."""

from __future__ import annotations

import random

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils.crypto import keccak

from common import auth
from common.auth import Nonce
from common.config import Settings
from common.errors import BadRequest, Unauthorized
from opclient.signing import Signer

KEY = "0x1f990f8b013fc5c7955e0f8746f11ded231721b9cf3f99ff06cdc03492b28090"
ADDRESS = "0xe17D2A07EFD5b112F4d675ea2d122ddb145d117B"
OWNER = "0xC41808BBef371AD5CFc76466dDF9dEe228d2BdAA"
NONCE = "1700000000000000000"
SIGNATURE = (
    "0x9e454935daaf88e27b303e410e988926a37422430cb313256682b5ce4349a61f"
    "66b0fa4d412ff8a877fa7023d3d7f9982483537dbd2ac9a27c9eda0f518d746f01"
)


def test_the_signed_message_is_owner_job_and_nonce() -> None:
    nonce = Nonce(NONCE, 0)  # type: ignore[arg-type]
    assert auth.signed_message(OWNER, None, nonce) == OWNER + NONCE
    assert auth.signed_message(OWNER, "job", nonce) == OWNER + "job" + NONCE


def test_the_contract_vector_recovers_in_both_v_forms() -> None:
    assert auth.recover_signer(OWNER + NONCE, SIGNATURE) == ADDRESS
    assert auth.recover_signer(OWNER + NONCE, SIGNATURE[:-2] + "1c") == ADDRESS


def test_the_upstream_bug_recovers_someone_else() -> None:
    assert auth.recover_signer(OWNER, SIGNATURE) == "0x977f64ec6c9a37ef79142bc8666563aD4A10dF48"


def test_the_client_signs_the_vector_exactly() -> None:
    signer = Signer.from_hex(KEY)
    assert signer.address == ADDRESS
    assert signer.sign(OWNER + NONCE) == SIGNATURE
    assert signer.sign(OWNER + NONCE, ethers_v=True) == SIGNATURE[:-2] + "1c"
    assert KEY not in repr(signer)


def test_the_client_signs_the_bytes_eth_account_signs() -> None:
    rng = random.Random(11)  # noqa: S311 - reproducible test keys, not secrets
    for _ in range(50):
        key = "0x" + rng.randbytes(32).hex()
        text = f"0x{rng.randbytes(20).hex()}{rng.getrandbits(63)}"
        expected = Account.sign_message(encode_defunct(primitive=keccak(text=text)), key)
        assert Signer.from_hex(key).sign(text, ethers_v=True) == "0x" + bytes(
            expected.signature
        ).hex().removeprefix("0x")


@pytest.mark.parametrize("bad", ["", "0x", "zz", SIGNATURE[:-4]])
def test_unreadable_signatures(bad: str) -> None:
    with pytest.raises(BadRequest, match="Failed to recover address"):
        auth.recover_signer(OWNER + NONCE, bad)


def test_a_signature_no_key_could_make_is_unauthorized() -> None:
    with pytest.raises(Unauthorized, match="Failed to recover address"):
        auth.recover_signer(OWNER + NONCE, "0x" + "00" * 65)


def test_recovery_agrees_with_eth_account_on_signed_and_tampered_signatures() -> None:
    """Our recovery goes to libsecp256k1 directly; eth-account's `recover_message`, the one the
    contract names, is the oracle. Tampered signatures must fail alike or recover alike."""
    rng = random.Random(7)  # noqa: S311 - reproducible test keys, not secrets
    for i in range(200):
        signer = Signer.from_hex("0x" + rng.randbytes(32).hex())
        message = f"0x{rng.randbytes(20).hex()}{'job-é' * (i % 3)}{rng.getrandbits(63)}"
        signature = signer.sign(message, ethers_v=bool(i % 2))
        assert auth.recover_signer(message, signature) == signer.address
        raw = bytearray.fromhex(signature[2:])
        raw[rng.randrange(64)] ^= 1 << rng.randrange(8)
        tampered = "0x" + raw.hex()
        expected = _eth_account_recovers(message, tampered)
        if expected is None:
            with pytest.raises(Unauthorized):
                auth.recover_signer(message, tampered)
        else:
            assert auth.recover_signer(message, tampered) == expected


@pytest.mark.parametrize("v", [2, 26, 29, 37, 255])
def test_recovery_ids_no_signer_makes_are_unauthorized(v: int) -> None:
    with pytest.raises(Unauthorized, match="Failed to recover address"):
        auth.recover_signer(OWNER + NONCE, SIGNATURE[:-2] + f"{v:02x}")


def test_r_or_s_beyond_the_curve_order_is_unauthorized() -> None:
    with pytest.raises(Unauthorized, match="Failed to recover address"):
        auth.recover_signer(OWNER + NONCE, "0x" + "ff" * 64 + "00")


def _eth_account_recovers(message: str, signature: str) -> str | None:
    try:
        address: str = Account.recover_message(
            encode_defunct(primitive=keccak(text=message)), signature=signature
        )
    except Exception:
        return None
    return address


def test_admin_header_checks() -> None:
    settings = Settings(
        postgres_host="x",
        allowed_admins=("one", "two"),
        allowed_providers=frozenset({ADDRESS.lower()}),
    )
    auth.authenticate_admin(settings, "two")
    with pytest.raises(BadRequest):
        auth.authenticate_admin(settings, "")
    with pytest.raises(Unauthorized):
        auth.authenticate_admin(settings, "three")
