"""The glue between a training run and its bill: price the run, open the ledger, close it.

Kept apart from train.py so that the training flow reads as a short list of phases, and so the
same pricing rules serve `arzan train`, `arzan estimate` and the benchmarks.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import yaml

from arzan.cost.ledger import (
    LIVE_LEDGER_S,
    Ledger,
    ModelInfo,
    detect_hardware,
    live_writer_age,
    money_for,
    new_ledger,
    read_ledger,
)
from arzan.cost.budget import mean_step_seconds, session_overhead_s, suggest_cap
from arzan.cost.meter import CostMeter
from arzan.cost.prices import Exchange, Price, resolve_exchange, resolve_price
from arzan.errors import ArzanError
from arzan.recipe import BudgetSection, Recipe, load_recipe
from arzan.runfolder import RunFolder, eval_in_progress


def _detected_gpu() -> str | None:
    try:
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # a broken driver must not stop the bill from being written
        return None


def price_for(recipe: Recipe) -> tuple[Price, Exchange]:
    """The recipe's price (a user figure beats the catalog); on a GPU nobody named, the catalog's
    cheapest entry for the GPU that is actually there, if the catalog knows it."""
    c = recipe.cost
    exchange = resolve_exchange(c.usd_kzt)
    gpu = c.gpu
    if gpu is None and c.usd_per_gpu_hour is None and c.kzt_per_gpu_hour is None:
        detected = _detected_gpu()
        if detected:
            try:
                from arzan.cost.prices import canonical_gpu

                gpu = canonical_gpu(detected)
            except ArzanError:
                gpu = None
    price = resolve_price(gpu=gpu, provider=c.provider, usd_per_gpu_hour=c.usd_per_gpu_hour,
                          kzt_per_gpu_hour=c.kzt_per_gpu_hour, gpu_count=c.gpu_count,
                          overhead_s=c.overhead_minutes * 60, pricing=c.pricing, exchange=exchange)
    return price, exchange


def cap_line(recipe: Recipe) -> str | None:
    """The caps this session runs under, as read: `--budget 1,500h` is 1,500 hours, and a misread
    figure must show before it costs anything."""
    from arzan.numbers import amount

    b = recipe.budget
    caps = [f"{amount(v)} {unit}" for v, unit in ((b.max_kzt, "₸"), (b.max_usd, "$"), (b.max_hours, "h"))
            if v is not None]
    return f"budget cap: {', '.join(caps)}" if caps else None


def price_line(recipe: Recipe) -> str:
    """What this session is billed at and where that figure comes from, said before it starts:
    `--gpu A100` alone takes the catalog's cheapest A100 offer, which may be a spot machine the
    user is not renting."""
    from arzan.cost.prices import load_catalog
    from arzan.numbers import fixed

    price, exchange = price_for(recipe)
    per_hour = f"{price.usd_per_gpu_hour:.2f} $/h ≈ {fixed(price.usd_per_gpu_hour * exchange.usd_kzt, 0)} ₸/h"
    count = f" × {price.gpu_count} GPUs" if price.gpu_count > 1 else ""
    if price.pricing == "user":
        if price.usd_per_gpu_hour == 0:
            return "billed at 0 ₸: no price for this machine (--price USD_PER_GPU_HOUR bills your own rate)"
        return f"billed at your price: {per_hour}{count}"
    offers = [e for e in load_catalog().prices if e.gpu == price.gpu and e.min_gpus <= price.gpu_count]
    line = (f"billed as {price.gpu}{count} at {price.provider} ({price.pricing}): {per_hour} per GPU "
            f"(catalog, {price.source}, {price.as_of})")
    if recipe.cost.provider is None and len(offers) > 1:
        others = sorted({e.provider for e in offers} - {price.provider})
        line += (f"; the cheapest of {len(offers)} offers, not necessarily yours: --provider "
                 f"{'/'.join(others[:3])} or --price USD_PER_GPU_HOUR")
    return line


def unbindable_cap(recipe: Recipe) -> str | None:
    """A money cap at a price of 0 (a CPU, a GPU the catalog does not know, no --price) never stops
    anything: say so before the run, instead of letting the user believe the cap guards them."""
    b = recipe.budget
    money_caps = [f"{n} {v:g}" for n, v in (("max_kzt", b.max_kzt), ("max_usd", b.max_usd)) if v is not None]
    if not money_caps or price_for(recipe)[0].usd_per_gpu_hour > 0:
        return None
    return (f"{' and '.join(money_caps)} cannot stop this run: its price is 0 (no GPU price is known here); "
            "give --price USD_PER_GPU_HOUR, --gpu with --provider, or cap the time with --budget 2h")


def given_terms(cost_overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The price flags the command line actually gave (--price, --gpu, --provider; None is "not given")."""
    return {k: v for k, v in (cost_overrides or {}).items() if v is not None}


def with_terms(recipe: Recipe, budget: BudgetSection | None = None,
               cost_overrides: dict[str, Any] | None = None) -> Recipe:
    """The recipe with the command line's price and budget folded in.

    The run folder's recipe.yaml is written from this, so it records the terms the run started on
    and `--resume` keeps them. `--budget 5000KZT` sets one cap and keeps the recipe's others.
    """
    r = recipe.model_copy(deep=True)
    update = given_terms(cost_overrides)
    if update.get("usd_per_gpu_hour") is not None:
        update["kzt_per_gpu_hour"] = None  # one price: the one given last
    elif update.get("gpu") is not None or update.get("provider") is not None:
        update["usd_per_gpu_hour"] = update["kzt_per_gpu_hour"] = None  # a catalog GPU: its catalog price
    if update:
        r.cost = r.cost.model_copy(update=update)
    if budget is not None:
        r.budget = r.budget.model_copy(update=budget.model_dump(include=budget.model_fields_set))
    return r


def resume_terms(folder: RunFolder, budget: BudgetSection | None,
                 cost_overrides: dict[str, Any] | None) -> tuple[Recipe, Ledger, dict[str, Any]]:
    """What a resumed session runs: the folder's recipe, under the caps and price the last session ran with.

    The ledger holds the caps of the last session, so a cap raised on one `--resume` holds for the
    next; so do the price flags a resume gave (a new machine's `--price`): the next `--resume` keeps
    them unless it gives its own. Returns the recipe, the ledger and those price flags.
    """
    ledger = read_ledger(folder.ledger)
    where = folder.root
    if ledger.status == "finished":
        p = ledger.progress
        raise ArzanError(f"{where}: this run finished at step {p.step}/{p.max_steps}; there is nothing to resume "
                         "(start it again with --overwrite, which keeps this folder aside)")
    age = live_writer_age(ledger)
    if age is not None:
        raise ArzanError(f"{where}: another arzan process is training into this folder (ledger written "
                         f"{age:.0f} s ago); if it is gone, retry in {LIVE_LEDGER_S - age:.0f} s")
    if (busy := eval_in_progress(where)) is not None:
        raise ArzanError(busy)
    b = ledger.budget
    caps = BudgetSection(max_kzt=b.max_kzt, max_usd=b.max_usd, max_hours=b.max_hours)
    if budget is not None:
        caps = caps.model_copy(update=budget.model_dump(include=budget.model_fields_set))
    given = given_terms(cost_overrides)
    # the last training session's flags: an `arzan eval` session in between has none of its own
    trained = [x for x in ledger.sessions if x.phases.setup > 0 or x.phases.train > 0 or x.terms]
    last = trained[-1].terms if trained else None
    terms = given or dict(last or {})
    recipe = with_terms(load_recipe(folder.recipe), None, terms)
    recipe.budget = caps
    return recipe, ledger, terms


def check_same_recipe(given: Recipe, run_dir: Path, given_path: Path) -> None:
    """`arzan train RECIPE --resume --out DIR` runs DIR's recipe.yaml; a RECIPE that says something
    else (an edited learning rate, more steps, other data) is refused, not silently ignored.

    Price and caps are not compared: --resume takes them from its own flags and the ledger.
    """
    from arzan.runfolder import is_run_folder

    if not is_run_folder(run_dir):
        return  # resume_terms names what is missing
    ours = yaml.safe_load(given.resolved_yaml())
    theirs = yaml.safe_load(load_recipe(run_dir / "recipe.yaml").resolved_yaml())
    changed = []
    for section, value in ours.items():
        if section in ("cost", "budget"):
            continue
        if isinstance(value, dict):
            other = theirs.get(section) or {}
            changed += [f"{section}.{key}" for key in value if value[key] != other.get(key)]
        elif value != theirs.get(section):
            changed.append(section)
    if changed:
        shown = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
        raise ArzanError(f"{given_path}: differs from {run_dir / 'recipe.yaml'} in {shown}; a resumed "
                         f"run keeps the recipe it started with (arzan train --resume {run_dir}); to train the "
                         "changed recipe, start a new run (another --out, or --overwrite)")


def preflight_resume(recipe: Recipe, ledger: Ledger, where: Path) -> None:
    """Refuse a resume that could not afford one more step: its setup would be money for nothing.

    The step's cost comes from the steps already paid for (train seconds per step), at this
    session's price, plus what a session pays before its first step and after its last (model
    load, tokenizing, saving, as last time) and the provider's overhead.
    """
    b = recipe.budget
    if b.max_kzt is None and b.max_usd is None and b.max_hours is None:
        return
    price, exchange = price_for(recipe)
    step_s = mean_step_seconds(ledger)
    next_s = step_s + price.overhead_s + session_overhead_s(ledger)
    usd, kzt = money_for(next_s, price, exchange)
    checks = (("max_kzt", b.max_kzt, ledger.money.kzt, kzt, "₸"), ("max_usd", b.max_usd, ledger.money.usd, usd, "$"),
              ("max_hours", b.max_hours, ledger.billed_seconds / 3600, next_s / 3600, "h"))
    from arzan.numbers import amount, fixed

    for kind, cap, spent, step, unit in checks:
        if cap is not None and spent + step > cap:
            hint = suggest_cap(kind, ledger, step_s, price, exchange)
            digits = 3 if unit == "h" else 2
            raise ArzanError(f"refusing to resume: {kind} {amount(cap)} {unit}: {fixed(spent, digits)} {unit} spent so "
                             f"far, and the next session's setup and first step (~{fixed(step, digits)} {unit}) would "
                             f"pass it; raise the cap: arzan train --resume {where} --budget {hint}")


CHECKPOINTED = {"interrupted", "stopped_budget"}  # statuses whose stop saved a checkpoint of its last step


def check_resume_point(folder: RunFolder, ledger: Ledger) -> None:
    """The checkpoint a resume starts from must be there and readable, before anything is paid for.

    A signal or a budget stop always checkpoints its last step; if that checkpoint is gone (deleted,
    not copied back from Drive), the Trainer would silently start at step 0 and bill every step again.
    A damaged one (a copy cut short) would fail inside the Trainer after the model load.
    """
    import json

    ckpt = folder.last_checkpoint()
    step = ledger.progress.step
    if ckpt is None:
        if ledger.status in CHECKPOINTED and step > 0:
            raise ArzanError(f"{folder.checkpoints}: no checkpoint, but the run stopped ({ledger.status}) at step "
                             f"{step} with one saved; resuming would train and bill all {step} steps again. Put "
                             "checkpoint-* back (e.g. from Google Drive), or start over with --overwrite")
        return
    state = ckpt / "trainer_state.json"
    try:
        doc = json.loads(state.read_text(encoding="utf-8"))
        if not isinstance(doc, dict) or not isinstance(doc.get("global_step"), int):
            raise ValueError("no global_step")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ArzanError(f"{state}: damaged ({exc}); move {ckpt.name} aside to resume from the checkpoint "
                         "before it") from None
    weights = ckpt / "adapter_model.safetensors"
    if weights.is_file():
        from safetensors import safe_open

        try:
            with safe_open(str(weights), framework="pt") as f:
                f.keys()
        except Exception as exc:  # safetensors raises its own error type for a cut-short file
            raise ArzanError(f"{weights}: damaged ({type(exc).__name__}); move {ckpt.name} aside to resume from "
                             "the checkpoint before it") from None


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


def rewound(ledger: Ledger, folder: RunFolder) -> Ledger:
    """The ledger as of the checkpoint the Trainer resumes from (see `rewind_to_checkpoint`), with
    the time a hard kill kept out of it recovered first (see `recover_killed_session`)."""
    from arzan.cost.ledger import recover_killed_session, rewind_to_checkpoint

    ledger = recover_killed_session(ledger, last_metrics_row(folder.metrics))
    ckpt = folder.last_checkpoint()
    if ckpt is None:
        return rewind_to_checkpoint(ledger, None, 0)
    copy = ckpt / "arzan_ledger.json"
    if not copy.is_file():  # a checkpoint arzan did not write: nothing to rewind by
        return ledger
    return rewind_to_checkpoint(ledger, read_ledger(copy), int(ckpt.name.split("-")[-1]))


def last_metrics_row(path: Path) -> dict[str, Any] | None:
    """The last whole row of metrics.jsonl (a kill may have cut the very last line short)."""
    import json

    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            return row
    return None


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


def is_final_checkpoint(ckpt: Path | None) -> bool:
    """True when the checkpoint holds every step: transformers checks max_steps only after a step,
    so resuming from it would train (and bill) one step beyond the plan."""
    import json

    if ckpt is None:
        return False
    state = json.loads((ckpt / "trainer_state.json").read_text(encoding="utf-8"))
    return state.get("max_steps", 0) > 0 and state.get("global_step", 0) >= state["max_steps"]


def load_checkpoint_adapter(model: Any, ckpt: Path) -> None:
    """The trained LoRA weights of a final checkpoint, into the freshly built PEFT model."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = ckpt / "adapter_model.safetensors"
    if not path.is_file():
        raise ArzanError(f"{ckpt}: no adapter_model.safetensors in the last checkpoint to finish the run from")
    result = set_peft_model_state_dict(model, load_file(str(path)))
    if getattr(result, "unexpected_keys", None):
        raise ArzanError(f"{path}: does not fit this recipe's LoRA (e.g. {result.unexpected_keys[0]}); "
                         "was recipe.yaml edited after the run started?")


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

        return "score it with: " + eval_command(run_dir, recipe.eval_tasks(), recipe.eval.limit, recipe.eval_data_dir())
    return f"the adapter is saved in {run_dir / 'adapter'}"


def finish(meter: CostMeter, folder: RunFolder, recipe: Recipe, status: str, reason: str | None) -> dict[str, Any]:
    """Close the ledger, then write the model card from it, so the card shows the final bill."""
    ledger = meter.finish(status, reason).model_dump(mode="json")
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

    ev = recipe.eval
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


def evaluate_after_training(recipe: Recipe, folder: RunFolder, meter: CostMeter) -> None:
    """lm-eval on the saved adapter; the scores go into the ledger this meter owns (one writer)."""
    from arzan.evaluation import run_eval

    ev = recipe.eval
    result = run_eval(folder.root, tasks=recipe.eval_tasks(), limit=ev.limit, update_ledger=False,
                      data_dir=recipe.eval_data_dir(), guard=lambda fn: meter.capped(fn, "the next evaluation batch"))
    meter.ledger.summary.eval = result.get("summary")
