"""The cost figures reach the user's tracker during training, not only cost.json."""

from __future__ import annotations

import pytest

from arzan.recipe import load_recipe
from arzan.train import train
from tests.conftest import base_recipe


def test_cost_scalars_reach_tensorboard(tmp_path, write_recipe):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recipe = load_recipe(write_recipe(base_recipe(
        train={"max_length": 64, "max_steps": 4, "per_device_train_batch_size": 4, "logging_steps": 1,
               "save_steps": 100, "report_to": ["tensorboard"]},
        cost={"usd_per_gpu_hour": 3.0}, eval={"generation_check": False})))
    result = train(recipe, out=tmp_path / "run")
    events = [p for p in (tmp_path / "run" / "checkpoints" / "runs").rglob("events.out.tfevents.*")]
    assert events, "no TensorBoard event file written"
    acc = EventAccumulator(str(events[0].parent))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/cost/spent_kzt", "train/cost/tokens_trained", "train/loss"} <= tags, tags
    spent = [e.value for e in acc.Scalars("train/cost/spent_kzt")]
    assert len(spent) >= 4 and spent == sorted(spent) and spent[-1] > 0  # 4 steps + the end-of-training log
    assert spent[-1] <= result.ledger["money"]["kzt"] + 1e-6
    trained = [e.value for e in acc.Scalars("train/cost/tokens_trained")]
    assert trained[-1] == result.ledger["tokens"]["trained"]
