"""The engine.yaml `make run` writes into its data folder: once, or over an earlier version's
default nobody edited (which pinned maxJobDuration and storageExpiry over the variables); and
what the engine says of a file with a key it does not know."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from common.config import Settings
from common.errors import ConfigError
from engine.config import EngineConfig
from local.compute import write_default_config

# What versions before 2026-12-05 wrote, byte for byte.
EARLIER_DEFAULT = """\
# The environments the local engine serves (README: The engine). Written once by `make run`;
# edit it and restart `make run` to change them.
environments:
  - id: ocean-compute
    description: bubblewrap sandboxes on this machine
    maxJobs: 2            # jobs running at once
    cpuNumber: 1
    ramGB: 1              # address space of the algorithm
    diskGB: 1             # the job folder (inputs, outputs) and its published results
    maxJobDuration: 600   # seconds of algorithm; default ALGO_POD_TIMEOUT
    storageExpiry: 604800 # seconds results are kept; default STORAGE_EXPIRY
    priceMin: 0
    network: false        # whether algorithms may reach the network
engine:
  leaseSeconds: 15
"""


def test_the_default_pins_neither_duration_nor_expiry_and_reads_inputs_here(
    tmp_path: Path,
) -> None:
    config = yaml.safe_load(write_default_config(tmp_path).read_text())
    [env] = config["environments"]
    assert "maxJobDuration" not in env and "storageExpiry" not in env
    assert config["engine"]["inputRoots"] == [str(tmp_path / "inputs")]
    assert (tmp_path / "inputs").is_dir()


def test_an_earlier_default_nobody_edited_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "engine.yaml").write_text(EARLIER_DEFAULT)
    config = yaml.safe_load(write_default_config(tmp_path).read_text())
    assert "maxJobDuration" not in config["environments"][0]


def test_an_edited_file_is_the_operators_and_stays(tmp_path: Path) -> None:
    edited = EARLIER_DEFAULT.replace("maxJobs: 2", "maxJobs: 3")
    (tmp_path / "engine.yaml").write_text(edited)
    assert write_default_config(tmp_path).read_text() == edited


def test_the_default_and_every_earlier_one_parse(tmp_path: Path) -> None:
    settings = Settings.from_env({"POSTGRES_HOST": "db"}, serves_api=False)
    for text in (write_default_config(tmp_path).read_text(), EARLIER_DEFAULT):
        raw = yaml.safe_load(text)
        raw["engine"]["resultsRoot"] = str(tmp_path / "results")
        EngineConfig.parse(raw, settings, work_root=tmp_path)


def test_a_key_the_engine_does_not_know_is_refused_by_its_path(tmp_path: Path) -> None:
    """A typo would otherwise leave the limit it meant at its default, without a word."""
    raw = yaml.safe_load(write_default_config(tmp_path).read_text())
    raw["environments"][0]["maxJobduration"] = 60
    raw["engine"]["kubernetes"] = {"image": "i", "jobsClaim": "j", "resultsClaim": "r", "uidd": 1}
    raw["engines"] = {}
    settings = Settings.from_env({"POSTGRES_HOST": "db"}, serves_api=False)
    with pytest.raises(ConfigError) as refused:
        EngineConfig.parse(raw, settings, work_root=tmp_path, source="engine.yaml")
    message = str(refused.value)
    assert "environments[0].maxJobduration: unknown key" in message
    assert "engine.kubernetes.uidd: unknown key" in message
    assert "engines: unknown key" in message
