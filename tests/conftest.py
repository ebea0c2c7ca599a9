import os
from pathlib import Path

import pytest

# Tests run many small torch ops; one thread each keeps them fast and repeatable on 2 cores.
os.environ.setdefault("OMP_NUM_THREADS", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "cifar10-jpeg-test.tar.gz").exists():
        pytest.skip(f"offline data not found at {SHARED_DATA}")
    return SHARED_DATA
