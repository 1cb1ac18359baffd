from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.local.test_run import LocalRun, launch


@pytest.fixture(scope="package")
def local_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRun]:
    """One `python -m local.run` for the package, its data in <tmp>/.data like a checkout's."""
    with launch(tmp_path_factory.mktemp("local") / ".data", control_plane="off") as run:
        yield run
