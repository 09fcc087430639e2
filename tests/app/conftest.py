"""One torch thread for the app tests: the CI box has 2 shared cores and OpenMP spinning on an
oversubscribed machine makes a 2-thread tiny model ~5x slower than a 1-thread one."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
