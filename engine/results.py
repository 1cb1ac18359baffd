"""The results store on this machine: one folder per job under the results root, laid out
as common/layout.py says.

getResult serves these as `file://` URLs under RESULTS_ROOT. The logs folder is never visible
inside a sandbox, so no algorithm can rewrite its own log or turn it into a link; the engine
still opens every log without following links.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from common import layout
from engine import receipts
from engine.receipts import OperatorKey
from engine.runner import Stage

# The original engine's `type` of each log, `configrationLog` sic: clients match it.
LOG_TYPES = {
    Stage.CONFIGURE: "configrationLog",
    Stage.ALGORITHM: "algorithmLog",
    Stage.PUBLISH: "publishLog",
}


class ResultsStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, job_id: str) -> Path:
        return layout.job_folder(self.root, job_id)

    def log(self, job_id: str, stage: Stage) -> Path:
        path = layout.log_path(self.root, job_id, stage)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def log_size(self, job_id: str, stage: Stage) -> int:
        try:
            return layout.log_path(self.root, job_id, stage).lstat().st_size
        except OSError:
            return 0

    def note(self, job_id: str, stage: Stage, text: str) -> None:
        """One line of the engine's own in a stage's log: what it did and why."""
        moment = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        line = f"{moment} engine: {text}\n".encode()
        fd = os.open(
            self.log(job_id, stage), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o640
        )
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def staging(self, job_id: str) -> Path:
        """An empty folder for the publish stage to copy outputs into."""
        published = self.folder(job_id) / "published"
        remove_tree(published)
        published.mkdir(parents=True)
        return published

    def entries(self, job_id: str, *, with_outputs: bool) -> list[dict[str, Any]]:
        """outputsurl: the published outputs, then the logs, each with its size and sha256."""
        found: list[dict[str, Any]] = []
        published = self.folder(job_id) / "published"
        if with_outputs:
            for item in _manifest(published / "manifest.json"):
                path = published / "outputs" / item["filename"]
                found.append(
                    {
                        "filename": item["filename"],
                        "filesize": item["filesize"],
                        "url": path.resolve().as_uri(),
                        "type": "output",
                        "sha256": item["sha256"],
                    }
                )
        for stage, kind in LOG_TYPES.items():
            path = layout.log_path(self.root, job_id, stage)
            if path.is_file() and not path.is_symlink():
                found.append(
                    {
                        "filename": path.name,
                        "filesize": path.stat().st_size,
                        "url": path.resolve().as_uri(),
                        "type": kind,
                        "sha256": sha256(path),
                    }
                )
        return found

    def receipt(
        self, job_id: str, receipt: dict[str, Any], operator: OperatorKey | None
    ) -> dict[str, Any]:
        """Write the job's signed receipt beside its logs; its outputsurl entry."""
        signed = {
            "receipt": receipt,
            "signature": operator.sign(receipt) if operator else None,
            "signer": operator.address if operator else None,
        }
        path = self.folder(job_id) / receipts.FILE_NAME
        path.unlink(missing_ok=True)
        path.write_bytes(receipts.canonical(signed))
        return {
            "filename": receipts.FILE_NAME,
            "filesize": path.stat().st_size,
            "url": path.resolve().as_uri(),
            "type": "receipt",
            "sha256": sha256(path),
        }

    def delete(self, job_id: str) -> None:
        remove_tree(self.folder(job_id))


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(64 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def _manifest(path: Path) -> list[dict[str, Any]]:
    """What the publish stage wrote; entries that do not name a plain relative file are
    dropped, so a manifest can only ever point inside the job's published folder."""
    try:
        items = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    valid = []
    for item in items if isinstance(items, list) else []:
        name = item.get("filename") if isinstance(item, dict) else None
        if not isinstance(name, str) or name.startswith("/") or ".." in Path(name).parts:
            continue
        try:
            size, digest = int(item["filesize"]), str(item["sha256"])
        except (KeyError, TypeError, ValueError):
            continue  # a stage cut short can leave an entry half written
        valid.append({"filename": name, "filesize": size, "sha256": digest})
    return valid


def remove_tree(folder: Path) -> None:
    """Delete a job's folder even where its algorithm took away its own permissions. Only what
    is inside the folder, and the folder, is ever unlocked: where the folder itself cannot go
    (a mount point, something held), its parent (the engine's work root) keeps its mode."""
    top = os.path.abspath(folder)

    def unlock(function: Any, path: str, _: Any) -> None:
        with contextlib.suppress(OSError):
            parent = os.path.dirname(os.path.abspath(path))
            if parent == top or parent.startswith(top + os.sep):
                os.chmod(parent, 0o700)
            os.chmod(path, 0o700)
            function(path)

    if folder.exists():
        shutil.rmtree(folder, onerror=unlock)
