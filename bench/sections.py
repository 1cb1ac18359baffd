"""The sections of bench/RESULTS.md that a benchmark of its own writes (`bench.engine`,
`bench.profile`, `bench.claims`) between two markers, and that every other writer of the file
keeps."""

from __future__ import annotations

from pathlib import Path

PROFILE = "profile"  # bench.profile's
ENGINE = "engine benchmark"  # bench.engine's
CLAIMS = "claim cost"  # bench.claims'
KEPT = (PROFILE, ENGINE, CLAIMS)  # in this order, after what bench.run writes


def _marks(name: str) -> tuple[str, str]:
    return f"<!-- {name}: begin -->", f"<!-- {name}: end -->"


def kept(path: Path, name: str) -> str:
    """Section `name` of the file at `path`, or "" when it has none."""
    begin, end = _marks(name)
    text = path.read_text() if path.exists() else ""
    if begin not in text:
        return ""
    return "\n" + text[text.index(begin) : text.index(end) + len(end)] + "\n"


def write(path: Path, name: str, body: str) -> None:
    """Replace section `name` of the file with `body`, or add it at the end."""
    begin, end = _marks(name)
    section = f"{begin}\n{body.strip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    if begin in text:
        text = text[: text.index(begin)] + section + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    path.write_text(text)
