import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))
# train.dtype=auto picks bf16 on CPUs with bf16 matrix units: the suite pins float32 (inherited by the CLI runs it
# starts) so that its results do not depend on the CPU; tests of the choice itself unset it.
os.environ["PONDER_AUTO_DTYPE"] = "float32"



@pytest.fixture(autouse=True)
def restore_threads():
    """A run with train.threads=N sets torch's thread count for the process: undone after each test, so that no test
    changes the summation order (and so the last bits) of the ones after it."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is absent (a fresh clone has no shared data)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A tiny Sudoku dataset (helpers.TINY), built once per test module."""
    from helpers import TINY

    from ponder.config import resolve
    from ponder.tasks import build_dataset

    return build_dataset(resolve("demo", TINY).data, tmp_path_factory.mktemp("data"))
