import os

import pytest
import torch

# Small models and inputs: two threads is what the CI machine has; avoid oversubscription.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# benchmarks/ holds the model zoo and sweep runner the robustness test shares
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
