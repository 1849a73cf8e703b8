"""The same code on a GPU: skipped where torch sees no CUDA device."""

import numpy as np
import pytest
import torch

from coevo import config
from coevo.evolution.loop import coevolve
from coevo.evolution.problem import build
from coevo.observers import LogbookRecorder

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_cuda_run_matches_cpu_run(tiny_overrides):
    logs = {}
    for device in ("cpu", "cuda"):
        cfg = config.load(None, tiny_overrides + [f"run.device={device}", "run.generations=2"])
        rec = LogbookRecorder()
        state = coevolve(build(cfg), [rec])
        assert state.encoders.params.device.type == device
        logs[device] = np.array(rec.logbook.select("train_loss_median"))
    assert np.allclose(logs["cpu"], logs["cuda"], rtol=1e-3, atol=1e-4)
