"""The TrainerCallbacks a paying user needs around SFTTrainer, besides the cost meter.

Kept out of train.py so that importing `arzan.train` (the Python API the notebooks use) does not
import transformers: unsloth must be imported before transformers, trl and peft for its patches
to apply, and `load_recipe` does that as soon as it knows the backend.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any, Callable

from transformers import TrainerCallback


class TokenCounter:
    """Tokens of the optimizer steps this session completed (never eval batches).

    Micro-batches are held as pending until their optimizer step ends: a run stopped in the
    middle of a gradient-accumulation step redoes those micro-batches after `--resume`, and their
    tokens must be counted once, when the step that uses them completes.
    """

    def __init__(self) -> None:
        self.seen = self.trained = 0
        self._pending_seen: Any = 0  # int, or a tensor on the batch's device until the step commits
        self._pending_trained: Any = 0

    def add(self, inputs: dict[str, Any]) -> None:
        # sums stay on the GPU: an int() here would wait for the device twice per micro-batch
        mask = inputs.get("attention_mask")
        self._pending_seen = self._pending_seen + (mask.sum() if mask is not None else inputs["input_ids"].numel())
        labels = inputs.get("labels")
        if labels is not None:
            self._pending_trained = self._pending_trained + (labels != -100).sum()

    def commit(self) -> None:
        """Called at the end of each optimizer step (by the cost meter, which runs first): one device sync."""
        self.seen += int(self._pending_seen)
        self.trained += int(self._pending_trained)
        self._pending_seen = self._pending_trained = 0


def metered_trainer_class() -> type:
    """SFTTrainer that counts tokens in compute_loss, the one place every training micro-batch passes.

    Counting in the collator would be off by a prefetched batch and would also see eval batches.
    """
    from trl import SFTTrainer

    class MeteredSFTTrainer(SFTTrainer):
        token_counter: TokenCounter

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            if model.training:
                self.token_counter.add(inputs)
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)

        def _maybe_log_save_evaluate(self, tr_loss, grad_norm, model, trial, *args, **kwargs):
            # the evaluation runs after the step's optimizer update, so the state it cut short is a
            # complete step: checkpoint it exactly as the Trainer's own save would have
            try:
                return super()._maybe_log_save_evaluate(tr_loss, grad_norm, model, trial, *args, **kwargs)
            except EvaluationCut:
                self.control.should_training_stop = True
                self._save_checkpoint(model, trial)
                self.control = self.callback_handler.on_save(self.args, self.state, self.control)

        def create_model_card(self, *args, **kwargs):
            # TRL writes its generic card into checkpoints/ at every save: "a fine-tuned version of
            # [None]" for a local base, and not a word of the bill. The run's card is adapter/README.md.
            return None

        def _save_checkpoint(self, model, trial):
            # A stop right after a save, or right after resuming, asks for the same step again; the
            # Trainer would rewrite that checkpoint in place, and a kill half-way through would break
            # the one good checkpoint a resume needs. A complete one is never written twice.
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

            done = Path(self.args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            if not (done / "trainer_state.json").is_file():
                if getattr(self, "ledger_copy", None) is not None:  # the meter's copy before the checkpoint
                    done.mkdir(parents=True, exist_ok=True)  # is complete (see CostMeter.copy_into)
                    self.ledger_copy(done)
                super()._save_checkpoint(model, trial)

    return MeteredSFTTrainer


class EvaluationCut(Exception):
    """Raised from on_prediction_step: a stop signal or the budget ends an in-training evaluation.

    An evaluation pass over a large eval split can take minutes; a preempted machine has ~30 s and a
    capped budget none. The metered trainer catches it and checkpoints the step the evaluation
    followed; the cut evaluation is not logged, and a resumed run does not redo it.
    """


class Interrupted(BaseException):
    """A stop signal arrived outside the training loop: there is nothing to checkpoint yet.

    A BaseException, like KeyboardInterrupt: library code that falls back on `except Exception`
    (an unsloth import, a hub call) must not swallow it and carry on past the machine's 30 s.
    """

    def __init__(self, signum: int, where: str) -> None:
        self.signum, self.where = signum, where
        super().__init__(f"received {signal.Signals(signum).name} during {where}")


class StopOnSignal(TrainerCallback):
    """SIGTERM/SIGINT (spot preemption, Colab stop, Ctrl-C) within the ~30 s a machine gets.

    Inside the training loop the run stops after the current micro-batch (not the whole
    accumulated step) and the Trainer saves a checkpoint, skipping an evaluation that was due and
    cutting one already running (`EvaluationCut`); during setup or data loading there is
    nothing worth saving, so the run stops at once (`Interrupted`) and the ledger is closed. While
    an adapter is being written (`protect()`), the signal waits for the write to finish.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.in_loop = False
        self.protected: str | None = None
        self.exit_after_protected = False
        self.phase = "setup"
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:  # a second signal: the user means it, once the file being written is whole
            if self.protected is not None:
                self.exit_after_protected = True
                return
            raise KeyboardInterrupt
        self.received = signum
        if not self.in_loop and self.protected is None:
            raise Interrupted(signum, self.phase)

    def protect(self, what: str) -> "_Protected":
        return _Protected(self, what)

    def on_train_begin(self, args, state, control, **kwargs):
        self.in_loop = True
        if self.received is not None:  # arrived between setup and the first step
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        self.in_loop = False

    def _stop(self, control: Any) -> None:
        if self.received is not None:
            control.should_save = True  # the metered trainer skips a step that is already saved
            control.should_training_stop = True
            control.should_evaluate = False  # the checkpoint first: an evaluation would eat the 30 s

    def on_step_end(self, args, state, control, **kwargs):
        self._stop(control)

    def on_substep_end(self, args, state, control, **kwargs):
        self._stop(control)

    def on_epoch_end(self, args, state, control, **kwargs):
        self._stop(control)  # an epoch-end evaluation is skipped too

    def on_prediction_step(self, args, state, control, **kwargs):
        if self.received is not None and self.in_loop:
            self._stop(control)
            raise EvaluationCut(f"received {signal.Signals(self.received).name} during an evaluation")


class _Protected:
    def __init__(self, stopper: StopOnSignal, what: str) -> None:
        self.stopper, self.what = stopper, what

    def __enter__(self) -> None:
        self.stopper.protected = self.what

    def __exit__(self, *exc: Any) -> None:
        self.stopper.protected = None
        if self.stopper.exit_after_protected:
            self.stopper.exit_after_protected = False
            raise KeyboardInterrupt


class SaveOnClock(TrainerCallback):
    """Checkpoint every N minutes as well as every N steps: a preempted run loses minutes, not hours."""

    def __init__(self, minutes: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = minutes * 60 if minutes else None
        self.clock = clock
        self.last = clock()

    def on_step_end(self, args, state, control, **kwargs):
        if self.seconds and self.clock() - self.last >= self.seconds:
            control.should_save = True

    def on_save(self, args, state, control, **kwargs):
        self.last = self.clock()


class PrintProgress(TrainerCallback):
    """One line per logging step, with the money in it: works in a terminal, a log file and Colab."""

    def __init__(self, meter: Any, console: Any) -> None:
        self.meter, self.console = meter, console

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        loss = f" · loss {logs['loss']:.3f}" if "loss" in logs else ""
        if "eval_loss" in logs:
            loss += f" · eval_loss {logs['eval_loss']:.3f}"
        if loss and self.console is not None:
            self.console.print(self.meter.progress_line() + loss, highlight=False)
