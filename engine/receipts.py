"""A receipt for every finished job: what ran, on what, for how long, and what came out, signed
by the operator, so that a consumer or a data owner can check it without trusting anyone's word.

The engine keeps what it saw while the job ran beside the job's logs (`<results>/<jobId>/
receipt/`, never visible to a stage): each stage's outcome and usage as the kernel counted it,
and after configure the sha256 and size of the algorithm and of every input file. Publishing
gathers these with the outputs and logs it publishes into `receipt.json`:

    {"receipt": {...}, "signature": "0x…", "signer": "0x…"}

`signature` is the EIP-191 personal signature of keccak256(canonical(receipt)), made with
OPERATOR_PRIVATE_KEY; canonical is JSON with keys sorted, no whitespace (separators `,` and
`:`), UTF-8 (ensure_ascii off), and no floating-point number (times are integer milliseconds,
sizes integer bytes). Anyone can recompute it:

    digest = keccak(json.dumps(body["receipt"], sort_keys=True, separators=(",", ":"),
                               ensure_ascii=False).encode())
    Account.recover_message(encode_defunct(primitive=digest), signature=body["signature"])
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coincurve import PrivateKey
from eth_hash.auto import keccak
from eth_utils.address import to_checksum_address

from engine.runner import Outcome, Stage

VERSION = 1
FILE_NAME = "receipt.json"
PERSONAL_SIGN_PREFIX = b"\x19Ethereum Signed Message:\n32"
CHUNK = 1024 * 1024


def canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class OperatorKey:
    """The operator's key: it signs receipts; its address is OPERATOR_ADDRESS."""

    key: PrivateKey

    @classmethod
    def from_hex(cls, text: str) -> OperatorKey:
        return cls(PrivateKey(bytes.fromhex(text.removeprefix("0x"))))

    @property
    def address(self) -> str:
        public = self.key.public_key.format(compressed=False)[1:]
        return str(to_checksum_address(keccak(public)[-20:].hex()))

    def sign(self, receipt: Mapping[str, Any]) -> str:
        digest = keccak(PERSONAL_SIGN_PREFIX + keccak(canonical(receipt)))
        raw = self.key.sign_recoverable(digest, hasher=None)
        return "0x" + (raw[:64] + bytes([raw[64] + 27])).hex()


def ms(seconds: float) -> int:
    return round(seconds * 1000)


def stage_record(outcome: Outcome) -> dict[str, Any]:
    """What a stage's receipt says of it: engine-observed times, how it ended, and what it
    used, with how that was found (`usageBasis`): "control group" where the kernel counted it
    (a sandbox's, a podman container's), "requests x wall time" for a Kubernetes pod (the
    kubelet's figures are not the engine's to read), null where nothing could be (a sandbox
    without a control group)."""
    return {
        "startedMs": ms(outcome.started),
        "finishedMs": ms(outcome.finished),
        "wallMs": ms(max(0.0, outcome.finished - outcome.started)),
        "ending": str(outcome.ending),
        "exitCode": outcome.exit_code,
        "cpuMs": None if outcome.cpu_seconds is None else ms(outcome.cpu_seconds),
        "peakMemoryBytes": outcome.peak_memory_bytes,
        "usageBasis": outcome.usage_basis,
    }


def fetched(data: Path, ocean_stage: Mapping[str, Any]) -> dict[str, Any]:
    """The sha256 and size of what configure left for the algorithm: its code and each input
    file, read without following a link (the engine is root; the folder is the job's)."""
    algorithm = ocean_stage.get("algorithm") or {}
    code = _hashed(data, ("transformations", "algorithm"))
    inputs = []
    for position, item in enumerate(ocean_stage.get("input") or []):
        if not isinstance(item, dict):
            continue
        index = item.get("index", position)
        folder = str(index if isinstance(index, int) else position)
        files = []
        for number in range(len(item.get("url") or [])):
            found = _hashed(data, ("inputs", folder, str(number)))
            if found is not None:
                files.append(found)
        inputs.append({"did": item.get("id"), "index": index, "files": files})
    return {
        "algorithm": {"did": algorithm.get("id") or None, "code": code},
        "inputs": inputs,
        "downloadedBytes": sum(f["size"] for i in inputs for f in i["files"]),
    }


def _hashed(root: Path, parts: tuple[str, ...]) -> dict[str, Any] | None:
    """sha256 and size of the regular file at root/parts, every component opened without
    following a link; None when there is none."""
    flags = os.O_RDONLY | os.O_NOFOLLOW
    try:
        fd = os.open(root, flags | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        for part in parts[:-1]:
            inner = os.open(part, flags | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = inner
        with os.fdopen(os.open(parts[-1], flags | os.O_NONBLOCK, dir_fd=fd), "rb") as source:
            if not stat.S_ISREG(os.fstat(source.fileno()).st_mode):
                return None
            digest = hashlib.sha256()
            size = 0
            while chunk := source.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
            return {"sha256": digest.hexdigest(), "size": size}
    except OSError:
        return None
    finally:
        os.close(fd)


class Notes:
    """What the engine saw of one job, kept as JSON files beside its logs until publishing."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def write(self, name: str, value: Any) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{name}.json"
        temporary = path.with_suffix(".tmp")
        temporary.write_bytes(canonical(value))
        temporary.replace(path)

    def read(self, name: str) -> Any:
        try:
            return json.loads((self.folder / f"{name}.json").read_text())
        except (OSError, ValueError):
            return None

    def stages(self) -> Iterator[tuple[str, Any]]:
        for stage in Stage:
            record = self.read(str(stage))
            if record is not None:
                yield str(stage), record
