"""Gradient accumulation: K micro-steps of batch B are one optimiser step of batch K*B."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.trainer.test_loop import exported, weights
from tests.trainer.trainer_helpers import config, known_batches
from trainer.loop import load_pipeline, train

pytestmark = pytest.mark.slow


def test_two_accumulated_micro_batches_equal_one_batch_of_two(tmp_path, ckpt):
    # Adam's eps well above the float noise of a different summation order (see test_loop's
    # two-process test); the noise and timesteps of each sample come from its place in the
    # step's global batch, so both runs draw the same.
    kw = {"optim": {"lr": 1e-3, "schedule": "constant", "eps": 1e-4}}
    whole = train(config(tmp_path / "whole", ckpt, data={"shards": "unused", "batch_size": 2},
                         train={"steps": 3, "point_dropout": 0.5}, **kw),
                  batches=known_batches(2))
    split = train(config(tmp_path / "split", ckpt, data={"shards": "unused", "batch_size": 1},
                         train={"steps": 3, "point_dropout": 0.5, "grad_accum": 2}, **kw),
                  batches=known_batches(1))  # micro-batches 2s and 2s+1 are step s's two rows
    assert (whole["step"], whole["batches"], whole["samples"]) == (3, 3, 6)
    assert (split["step"], split["batches"], split["samples"]) == (3, 6, 6)
    assert np.allclose(whole["losses"], split["losses"], atol=1e-5), (whole["losses"],
                                                                      split["losses"])
    a = weights(exported(tmp_path / "whole", ckpt))
    b = weights(exported(tmp_path / "split", ckpt))
    torch.manual_seed(0)  # the loop's seed before it builds the fresh model
    start = weights(load_pipeline(config(tmp_path / "x", ckpt), "cpu"))
    moved = max((a[k] - start[k]).abs().max().item() for k in a)
    assert moved > 1e-3, "training moved no weight: the comparison would prove nothing"
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
