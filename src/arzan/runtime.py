"""The glue between a training run and its bill: open the ledger, record what ran, close it, and
the work after training (generation check, lm-eval) that joins the same bill.

Kept apart from train.py so that the training flow reads as a short list of phases. Pricing and
caps are billing.py; continuing a run folder is resume.py.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from arzan.billing import price_for
from arzan.cost.ledger import ModelInfo, detect_hardware, new_ledger, read_ledger
from arzan.cost.meter import CostMeter
from arzan.errors import Failed, described, out_of_memory
from arzan.recipe import Recipe
from arzan.resume import is_final_checkpoint, rewound
from arzan.runfolder import RunFolder


def make_meter(recipe: Recipe, folder: RunFolder, counter: Any, resume: bool,
               clock: Callable[[], float] | None = None, terms: dict[str, Any] | None = None) -> CostMeter:
    """`terms`: the command line's price flags this session runs under (kept for a later --resume)."""
    price, exchange = price_for(recipe)
    if resume:
        ledger = rewound(read_ledger(folder.ledger), folder)
        ledger.hardware = detect_hardware()  # a resume may run on another machine: the card shows this one
    else:
        ledger = new_ledger(recipe.name, price, exchange, ModelInfo(base=recipe.model.name))
    b = recipe.budget
    return CostMeter(folder.ledger, ledger, price, exchange, max_kzt=b.max_kzt, max_usd=b.max_usd,
                     max_hours=b.max_hours, token_counter=counter, metrics_path=folder.metrics,
                     grid_kg_co2_per_kwh=recipe.cost.grid_kg_co2_per_kwh, terms=terms,
                     **({"clock": clock} if clock else {}))


def record_backend(meter: CostMeter, info: Any) -> None:
    version = info.version + (f" (auto fell back to hf: {info.fallback_reason})" if info.fallback_reason else "")
    meter.ledger.model = meter.ledger.model.model_copy(update={
        "method": info.method, "backend": info.name, "backend_version": version, "dtype": info.dtype,
        "trainable_params": info.trainable_params, "total_params": info.total_params})


def record_data(meter: CostMeter, data: Any) -> None:
    meter.ledger.summary.data = [asdict(s) for s in data.sources]
    meter.ledger.summary.data_truncation = {split: asdict(t) for split, t in data.truncation.items()} or None


def final_status(meter: CostMeter, stopper: Any, after: str | None = None,
                 checkpoint: Path | None = None) -> tuple[str, str | None]:
    """`after`: why the work after a complete training (eval, merge) was cut short, if it was;
    `checkpoint`: the last one in the run folder, which a resume starts from."""
    import signal

    if after:
        return "finished", after
    if stopper.received is not None:
        name = signal.Signals(stopper.received).name
        if checkpoint is None:  # cut before the first step's checkpoint (an eval_on_start pass)
            return "interrupted", f"received {name} before the first checkpoint; --resume starts over"
        return "interrupted", f"received {name}; checkpoint saved at step {meter.ledger.progress.step}"
    if meter.ledger.budget.stop_reason:
        return "stopped_budget", meter.ledger.budget.stop_reason
    return "finished", None


def skipped_after_training(meter: CostMeter, stopper: Any, recipe: Recipe, run_dir: Path) -> str | None:
    """A signal after the last step: the training is complete and saved, so the run is finished;
    say what after-training work did not run and how to do it (a resume would have nothing to train)."""
    import signal

    p = meter.ledger.progress
    if stopper.received is None or not (p.max_steps and p.step >= p.max_steps):
        return None
    work = after_training_work(recipe)
    name = signal.Signals(stopper.received).name
    if not work:
        return f"training finished; received {name} after the last step"
    return f"training finished; received {name} before {' and '.join(work)} ({_redo_hints(work, run_dir, recipe)})"


def after_training_work(recipe: Recipe) -> list[str]:
    """The work train.py does on the saved adapter, in its order, named as `stopper.phase` names it."""
    return [w for w, on in (("the generation check", recipe.eval.generation_check),
                            ("the evaluation after training", bool(recipe.eval.tasks)),
                            ("the merge", recipe.output.save_merged)) if on]


def cut_by_budget(reason: str, where: str, recipe: Recipe, run_dir: Path) -> str:
    """The status line when a cap stopped the work after training at `where`: that piece and the
    ones after it did not run (the training is complete, so the run is finished)."""
    work = after_training_work(recipe)
    left = work[work.index(where):] if where in work else work
    return f"training finished; {reason}: {' and '.join(left)} not done ({_redo_hints(left, run_dir, recipe)})"


def _redo_hints(work: list[str], run_dir: Path, recipe: Recipe) -> str:
    return "; ".join([redo_hint(w, run_dir, recipe) for w in work if w != "the generation check"]
                     or [redo_hint("", run_dir, recipe)])


def redo_hint(where: str, run_dir: Path, recipe: Recipe) -> str:
    """How to redo the one piece of post-training work a signal or the cap cut short: for lm-eval,
    with the recipe's own tasks, limit and data folder (`arzan eval` alone scores the kazakh suite)."""
    if where == "the merge":
        return f"merge it with: arzan merge {run_dir}"
    if where == "the evaluation after training":
        from arzan.evaluation.targets import eval_command

        return "score it with: " + eval_command(run_dir, recipe.eval_tasks(), recipe.eval.limit, recipe.eval_data_dir(),
                                                chat_template=recipe.eval.chat_template)
    return f"the adapter is saved in {run_dir / 'adapter'}"


OOM_FIX = ("lower train.per_device_train_batch_size (raise gradient_accumulation_steps to keep the batch) or "
           "train.max_length, or set train.gradient_checkpointing: true; `arzan estimate` marks the GPUs it fits on")


def training_failed(folder: RunFolder, exc: BaseException, step: int) -> Failed:
    """What a training that broke part-way tells its user in one line: what broke, what is kept,
    where the traceback went (appended to error.log: an earlier session's is never overwritten) and
    how to go on. The ledger is closed with status failed by the caller."""
    from arzan.cost.ledger import utcnow
    from arzan.fileio import append_traceback

    saved = append_traceback(folder.root, exc, f"{utcnow().isoformat()} arzan train, at step {step}")
    ckpt, oom = folder.last_checkpoint(), out_of_memory(exc)
    if ckpt is None:
        then = "no checkpoint was saved, so fix it and start again with --overwrite (this folder is kept aside)"
    elif is_final_checkpoint(ckpt):  # every step is trained: the recipe's memory knobs are beside the point
        then, oom = f"the training is complete; arzan train --resume {folder.root} does only the work after it", False
    else:
        then = f"arzan train --resume {folder.root} continues from {ckpt.name}"
        if oom:
            then += " on a GPU with more memory (a resume keeps the recipe), or start again with --overwrite"
    fix = f"; {OOM_FIX}" if oom else ""
    return Failed(f"the run failed at step {step} ({described(exc)}){fix}; the ledger "
                  f"{folder.ledger} (status failed) and what was saved are kept; {saved}; {then}")


def finish(meter: CostMeter, folder: RunFolder, recipe: Recipe, status: str, reason: str | None) -> dict[str, Any]:
    """Close the ledger, then write the model card from it, so the card shows the final bill. A failed
    run names its resume only when it saved a checkpoint: without one a resume would pay its setup
    again to fail the same way (the recipe is fixed), so it is started again with --overwrite."""
    resumable = status == "failed" and folder.last_checkpoint() is not None
    ledger = meter.finish(status, reason, resumable).model_dump(mode="json")
    if (folder.adapter / "adapter_config.json").is_file():
        from arzan.modelcard import write_card

        write_card(folder.adapter / "README.md", recipe, ledger)
        if (folder.merged / "README.md").is_file() and recipe.output.save_merged:  # merged this session
            from arzan.export import training_merge_dtype, write_merged_card

            device = (ledger.get("hardware") or {}).get("device") or "cpu"
            write_merged_card(folder.merged, folder.adapter, folder.root, training_merge_dtype(device), device)
    return ledger


def check_generation(recipe: Recipe, meter: CostMeter, model: Any, tokenizer: Any, console: Any) -> None:
    """Answers before (adapter off) and after (adapter on): the most common complaint about a
    fine-tune is a model that never stops, and the summary says so when it happens."""
    from arzan.evaluation import generation_check

    from arzan.model import half_precision_autocast

    ev = recipe.eval
    with half_precision_autocast(model):
        with model.disable_adapter():
            before = generation_check(model, tokenizer, ev.prompts, max_new_tokens=ev.max_new_tokens)
        after = generation_check(model, tokenizer, ev.prompts, max_new_tokens=ev.max_new_tokens)
    for b, a in zip(before["prompts"], after["prompts"]):
        a["before"], a["before_stopped_at_eos"] = b["text"], b["stopped_at_eos"]
    meter.ledger.summary.generation_check = after
    if console is not None:
        from rich.table import Table

        table = Table(title="Generation check: base model vs fine-tune", show_lines=True)
        for col in ("prompt", "before training", "after training"):
            table.add_column(col, overflow="fold")
        for a in after["prompts"]:
            table.add_row(a["prompt"], a["before"][:200] + ("" if a["before_stopped_at_eos"] else " …"),
                          a["text"][:200] + ("" if a["stopped_at_eos"] else " …"))
        table.caption = "… = ran to the token limit without stopping"
        console.print(table)
        console.print(("[green]" if after["ok"] else "[yellow]") + after["summary"], highlight=False)


def free_accelerator_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def evaluate_after_training(recipe: Recipe, folder: RunFolder, meter: CostMeter) -> dict[str, Any]:
    """lm-eval on the saved adapter; the scores go into the ledger this meter owns (one writer).
    Returns what run_eval returns; `arzan train` shows it once the bill is closed (the table's cost
    column reads cost.json, which until then lacks this eval and the save after it)."""
    from arzan.evaluation import run_eval

    ev = recipe.eval
    result = run_eval(folder.root, tasks=recipe.eval_tasks(), limit=ev.limit, update_ledger=False,
                      chat_template=ev.chat_template,
                      data_dir=recipe.eval_data_dir(), guard=lambda fn: meter.capped(fn, "the next evaluation batch"))
    meter.ledger.summary.eval = result.get("summary")
    return result
