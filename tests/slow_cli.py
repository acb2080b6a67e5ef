"""`arzan` exactly as the console script runs it, with every optimizer step held for ARZAN_TEST_STEP_S.

A test that signals a real training subprocess "mid-run" races the tiny model: on a quiet core its
steps take milliseconds, so the run can finish between the test seeing step N and the signal
landing (CI saw exactly that). Holding each step makes "mid-run" last for seconds on any machine,
while the signal handling, checkpointing and ledger are the real ones.
"""

from __future__ import annotations

import os
import time

from transformers import TrainerCallback

import arzan.train as training


class HoldEachStep(TrainerCallback):
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(self.seconds)


def _train_with_held_steps(*args, callbacks=None, _train=training.train, **kwargs):
    hold = HoldEachStep(float(os.environ.get("ARZAN_TEST_STEP_S", "0.5")))
    return _train(*args, callbacks=[*(callbacks or []), hold], **kwargs)


if __name__ == "__main__":
    training.train = _train_with_held_steps  # cli.py imports it when the command runs
    from arzan.cli import run

    run()
