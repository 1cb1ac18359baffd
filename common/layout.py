"""Where a job's files live under the results root, for the engine that writes them and the
result function that serves them from the same machine:

    <root>/<jobId>/logs/<stage>.log        written by the engine (stage output and its notes)
    <root>/<jobId>/published/outputs/...   copied there by the publish stage
    <root>/<jobId>/published/manifest.json what the publish stage copied: name, size, sha256
"""

from __future__ import annotations

from pathlib import Path


def job_folder(root: Path, job_id: str) -> Path:
    return root / job_id


def log_path(root: Path, job_id: str, stage: str) -> Path:
    """A stage's log (`stage`: configure, algorithm or publish)."""
    return job_folder(root, job_id) / "logs" / f"{stage}.log"
