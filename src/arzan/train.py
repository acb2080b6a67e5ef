"""One training run: recipe in, run folder out (adapter + model card + cost ledger).

The whole flow reads top to bottom in `train()`. TRL's SFTTrainer does the training; arzan adds
only what a paying user needs around it: the cost meter, a progress line with money in it,
checkpoints on the clock and on SIGTERM, and a run folder that is never silently overwritten.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from transformers import TrainerCallback
from transformers.trainer_callback import PrinterCallback

from arzan.errors import ArzanError
from arzan.recipe import BudgetSection, Recipe, load_recipe
from arzan.runfolder import RunFolder, open_run_folder


class TokenCounter:
    """Tokens of the batches the model actually trained on in this session (not eval batches)."""

    def __init__(self) -> None:
        self.seen = 0
        self.trained = 0

    def add(self, inputs: dict[str, Any]) -> None:
        mask = inputs.get("attention_mask")
        self.seen += int(mask.sum()) if mask is not None else int(inputs["input_ids"].numel())
        labels = inputs.get("labels")
        self.trained += int((labels != -100).sum()) if labels is not None else 0


def _metered_trainer_class() -> type:
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

    return MeteredSFTTrainer


class StopOnSignal(TrainerCallback):
    """SIGTERM/SIGINT (spot preemption, Colab stop, Ctrl-C): checkpoint at the next step end, then stop."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.received is not None:  # a second signal: the user means it
            raise KeyboardInterrupt
        self.received = signum

    def on_step_end(self, args, state, control, **kwargs):
        if self.received is not None:
            control.should_save = True
            control.should_training_stop = True


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


@dataclass
class RunResult:
    run_dir: Path
    status: str
    ledger: dict[str, Any]
    note: str | None = None


def sft_config(recipe: Recipe, folder: RunFolder, on_cuda: bool, has_eval: bool, backend: str = "hf") -> Any:
    import torch
    from trl import SFTConfig

    kw = recipe.train.sft_kwargs()
    if backend != "unsloth" and kw.get("padding_free") and not kw.get("packing"):
        # TRL refuses padding-free batches without packing; unsloth keeps attention per sample, the
        # hf path (sdpa) would not, so plain padding is the correct fallback, not an error
        kw["padding_free"] = False
    bf16_ok = on_cuda and torch.cuda.is_bf16_supported()
    kw["bf16"] = kw.get("bf16", bf16_ok) and on_cuda  # SFTConfig defaults bf16=True, which a CPU cannot do
    kw["fp16"] = kw.get("fp16", on_cuda and not bf16_ok) and on_cuda
    kw.setdefault("gradient_checkpointing", on_cuda)  # SFTConfig defaults to True; on a CPU it only costs time
    if has_eval:
        kw.setdefault("eval_strategy", "steps" if kw.get("eval_steps") else "epoch")
    # TensorBoard (report_to) writes under checkpoints/runs/ unless TENSORBOARD_LOGGING_DIR is set
    return SFTConfig(output_dir=str(folder.checkpoints), use_cpu=not on_cuda, disable_tqdm=True,
                     dataloader_pin_memory=on_cuda, save_strategy="steps", **kw)


def train(recipe: Recipe, out: str | Path | None = None, mode: str = "new", console: Any = None,
          budget: BudgetSection | None = None, allow_over_budget: bool = False,
          cost_overrides: dict[str, Any] | None = None, callbacks: list[Any] | None = None,
          clock: Callable[[], float] | None = None) -> RunResult:
    """Train a recipe into a run folder. `callbacks` are extra TrainerCallbacks; `clock` replaces
    time.monotonic for the bill (tests use it to make money deterministic)."""
    from arzan import runtime

    if mode != "resume":  # a resumed run has spent part of its budget already; the meter knows how much
        from arzan.estimate import preflight_budget

        planned = recipe.model_copy(deep=True)
        if cost_overrides:
            planned.cost = planned.cost.model_copy(update={k: v for k, v in cost_overrides.items() if v is not None})
        if budget is not None:
            planned.budget = budget
        over = preflight_budget(planned, allow_over_budget)  # raises ArzanError("refusing to start: ...")
        if over and console is not None:
            console.print(f"[yellow]warning:[/] {over}", highlight=False)
    folder, note = open_run_folder(recipe.run_dir(out), mode)
    if mode == "resume":
        recipe = load_recipe(folder.recipe)
    else:
        folder.recipe.write_text(recipe.resolved_yaml(), encoding="utf-8")
    if cost_overrides:
        recipe.cost = recipe.cost.model_copy(update={k: v for k, v in cost_overrides.items() if v is not None})
    if budget is not None:
        recipe.budget = budget
    counter = TokenCounter()
    meter = runtime.make_meter(recipe, folder, counter, resume=mode == "resume", clock=clock)
    stopper = StopOnSignal()
    status, reason = "failed", None
    stopper.install()
    try:
        from arzan.data import load_data, tokenize_data
        from arzan.model import load_model

        with meter.phase("data"):  # rows are checked before any model is downloaded
            raw = load_data(recipe.data, recipe.base_dir)
        with meter.phase("setup"):
            model, tokenizer, info = load_model(recipe)
            runtime.record_backend(meter, info)
        with meter.phase("data"):
            data = tokenize_data(raw, tokenizer, recipe.data, recipe.train.max_length)
            runtime.record_data(meter, data)
        trainer = _metered_trainer_class()(
            model=model, args=sft_config(recipe, folder, info.device == "cuda", data.eval is not None, info.name),
            train_dataset=data.train, eval_dataset=data.eval, processing_class=tokenizer,
            callbacks=[meter, SaveOnClock(recipe.train.save_every_minutes), stopper, PrintProgress(meter, console),
                       *(callbacks or [])])
        trainer.token_counter = counter
        trainer.remove_callback(PrinterCallback)  # its raw dicts would drown the money line
        meter.attach(trainer)
        with meter.phase("train"):
            trainer.train(resume_from_checkpoint=str(ckpt) if (ckpt := folder.last_checkpoint()) else None)
        with meter.phase("save"):
            trainer.model.save_pretrained(folder.adapter)
            tokenizer.save_pretrained(folder.adapter)
        stopped_early = stopper.received is not None or meter.ledger.budget.stop_reason is not None
        if not stopped_early:  # a preempted machine has seconds left, a capped budget nothing
            with meter.phase("eval"):
                if recipe.eval.generation_check:
                    runtime.check_generation(recipe, meter, trainer.model, tokenizer, console)
                if recipe.eval.tasks:
                    model = trainer = None  # lm-eval loads base + adapter afresh: free the GPU first
                    runtime.free_accelerator_memory()
                    runtime.evaluate_after_training(recipe, folder, meter)
            if recipe.output.save_merged:
                with meter.phase("save"):  # merged into the 16-bit base, never into 4-bit weights
                    model = trainer = None
                    runtime.free_accelerator_memory()
                    from arzan.export import merge_adapter

                    merge_adapter(folder.root, folder.merged, dtype="bfloat16" if info.device == "cuda" else "float32")
        status, reason = runtime.final_status(meter, stopper)
    except ArzanError:
        reason = "stopped by an error before training finished"
        raise
    except KeyboardInterrupt:
        status, reason = "interrupted", "interrupted by a second signal before a checkpoint was saved"
        raise
    except Exception as exc:
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        raise
    finally:
        stopper.uninstall()
        ledger = runtime.finish(meter, folder, recipe, status, reason)
    if status == "finished" and recipe.output.push_to_hub:  # after finish, so the card shows the final bill
        from arzan.export import push_to_hub

        push_to_hub(folder.root, recipe.output.hub_model_id, private=recipe.output.hub_private,
                    merged=recipe.output.save_merged)
    return RunResult(folder.root, status, ledger, note)


def train_from_recipe(path: str | Path, overrides: list[str] | None = None, **kwargs: Any) -> RunResult:
    """The Python API the notebooks use: the same path as `arzan train`."""
    return train(load_recipe(path, overrides), **kwargs)
