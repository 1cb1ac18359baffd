"""docs/configuration.md against the code that reads the configuration: every variable
`Settings.from_env` reads is in the table, with the default it gets when unset, and every key of
the documented engine.yaml is one `EngineConfig.parse` reads, and the other way round. What the
code reads is recorded as it reads it, so a variable or key added anywhere is caught."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from common.config import Settings
from engine.config import EngineConfig
from tests.conftest import ROOT
from tests.provider import PROVIDER

DOC = (ROOT / "docs" / "configuration.md").read_text()
# Set by the platform, not the operator: Kubernetes sets it in every pod (CLUSTER=auto reads it).
PLATFORM = {"KUBERNETES_SERVICE_HOST"}
# Documented here, read by another program than the functions.
READ_ELSEWHERE = {"ENGINE_CONFIG": ROOT / "engine" / "__main__.py"}
# Variables whose names are not their setting's.
ATTRIBUTES = {"X-API-KEY": "ipfs_api_key", "CLIENT-ID": "ipfs_client_id"}


class Recording(dict[str, Any]):
    """A mapping that notes every key looked up in it, present or not."""

    def __init__(self, values: dict[str, Any], seen: set[str]) -> None:
        super().__init__(values)
        self.seen = seen

    def get(self, key: str, default: Any = None) -> Any:
        self.seen.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> Any:
        self.seen.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.seen.add(str(key))
        return super().__contains__(key)


def section(title: str) -> str:
    start = DOC.index(f"\n## {title}\n")
    end = DOC.find("\n## ", start + 1)
    return DOC[start : end if end > 0 else len(DOC)]


def documented_variables() -> dict[str, str]:
    """{name: the default cell} of the Variables table."""
    rows = {}
    for line in section("Variables").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        for name in re.findall(r"`([^`]+)`", cells[0]):
            rows[name] = cells[1]
    return rows


def test_every_variable_read_is_documented_and_every_documented_one_is_read() -> None:
    seen: set[str] = set()
    minimal = {"POSTGRES_HOST": "db", "ALLOWED_PROVIDERS": json.dumps([PROVIDER.address])}
    Settings.from_env(Recording(minimal, seen))
    documented = set(documented_variables())
    assert seen - PLATFORM - documented == set(), "read, not in docs/configuration.md"
    assert documented - seen - set(READ_ELSEWHERE) == set(), "documented, never read"
    for name, source in READ_ELSEWHERE.items():
        assert f'"{name}"' in source.read_text(), f"{name} is not read by {source}"


def test_each_documented_default_is_the_one_an_unset_variable_gets() -> None:
    # As the engine reads them: with nothing but the database named (no allowlist needed).
    settings = Settings.from_env({"POSTGRES_HOST": "db"}, serves_api=False)
    checked = 0
    for name, default in documented_variables().items():
        literal = re.fullmatch(r"`([^`]*)`", default)
        attribute = ATTRIBUTES.get(name, name.lower())
        if literal is None or name == "CLUSTER" or not hasattr(settings, attribute):
            continue  # a default in words ("none", "required", or what auto resolves to)
        assert _shown(getattr(settings, attribute)) == literal.group(1), name
        checked += 1
    assert checked >= 10  # the table's literal defaults were found and compared


def test_every_engine_yaml_key_documented_is_read_and_every_key_read_is_documented(
    tmp_path: Path,
) -> None:
    block = section("engine.yaml").split("```yaml\n", 1)[1].split("```", 1)[0]
    documented: set[str] = set()
    seen: set[str] = set()
    raw = _recording(yaml.safe_load(block), seen, documented)
    settings = Settings.from_env({"POSTGRES_HOST": "db"}, serves_api=False)
    EngineConfig.parse(raw, settings, work_root=tmp_path)
    assert seen - documented == set(), "read, not in the documented engine.yaml"
    assert documented - seen == set(), "documented, never read"


def _recording(value: Any, seen: set[str], documented: set[str], where: str = "") -> Any:
    """The YAML with every mapping a Recording; keys named by their path (engine.kubernetes.uid,
    environments.id), in `documented` and, once read, in `seen`."""
    if isinstance(value, list):
        return [_recording(item, seen, documented, where) for item in value]
    if not isinstance(value, dict):
        return value
    inner = {}
    for key, item in value.items():
        documented.add(f"{where}{key}")
        inner[key] = _recording(item, seen, documented, f"{where}{key}.")
    return _PathRecording(inner, seen, where)


class _PathRecording(Recording):
    def __init__(self, values: dict[str, Any], seen: set[str], where: str) -> None:
        super().__init__(values, seen)
        self.where = where

    def get(self, key: str, default: Any = None) -> Any:
        self.seen.add(self.where + key)
        return dict.get(self, key, default)

    def __getitem__(self, key: str) -> Any:
        self.seen.add(self.where + key)
        return dict.__getitem__(self, key)

    def __contains__(self, key: object) -> bool:
        self.seen.add(self.where + str(key))
        return dict.__contains__(self, key)


def _shown(value: Any) -> str:
    """A setting as the table writes its default."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, frozenset | tuple | list):
        return json.dumps(sorted(value))
    return str(value)
