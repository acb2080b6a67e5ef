"""Continuing a run folder: the terms the last session ran under, the refusals that cost nothing
(a different recipe, a cap that cannot pay for one more step, a checkpoint gone or damaged), and
the ledger rewound to the checkpoint the Trainer resumes from.

A resume must never pay twice for the same step nor train on a run it cannot finish: everything
here runs before the model loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from arzan.billing import given_terms, price_for, with_terms
from arzan.cost.budget import mean_step_seconds, session_overhead_s, suggest_cap
from arzan.cost.ledger import (
    LIVE_LEDGER_S,
    Ledger,
    live_writer_age,
    money_for,
    read_ledger,
)
from arzan.errors import ArzanError, described
from arzan.recipe import BudgetSection, Recipe, load_recipe
from arzan.runfolder import RunFolder, eval_in_progress


def resume_terms(folder: RunFolder, budget: BudgetSection | None,
                 cost_overrides: dict[str, Any] | None) -> tuple[Recipe, Ledger, dict[str, Any]]:
    """What a resumed session runs: the folder's recipe, under the caps and price the last session ran with.

    The ledger holds the caps of the last session, so a cap raised on one `--resume` holds for the
    next; so do the price flags a resume gave (a new machine's `--price`): the next `--resume` keeps
    them unless it gives its own. Returns the recipe, the ledger and those price flags.
    """
    from arzan.evaluation.session import say_killed_billed

    say_killed_billed(folder.root)  # an eval killed outright in this folder: its time, before the totals are read
    ledger = read_ledger(folder.ledger)
    where = folder.root
    if ledger.status == "finished":
        p = ledger.progress
        if ledger.status_reason:  # trained; an eval or merge after it was cut or failed: it names its own redo
            raise ArzanError(f"{where}: this run's training finished at step {p.step}/{p.max_steps}, so there is "
                             f"no training to resume; what was left after it: {ledger.status_reason}")
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

    Price and caps are not compared: --resume takes them from its own flags and the ledger; nor is
    output.dir, which says where the run is, not what it trains (--out may have moved it).
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
            changed += [f"{section}.{key}" for key in value if value[key] != other.get(key)
                        and f"{section}.{key}" != "output.dir"]
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
            said = (ledger.resume_command or "").partition(" --budget ")[2]
            if not step_s and said.endswith({"max_kzt": "KZT", "max_usd": "USD", "max_hours": "h"}[kind]):
                hint = said  # no step measured: the stop priced the steps by the estimate, which this cannot redo
            digits = 3 if unit == "h" else 2
            others = [k for k, c, *_ in checks if c is not None and k != kind]
            alone = f" (the {' and '.join(others)} cap does not lift this one: each binds on its own)" if others else ""
            raise ArzanError(f"refusing to resume: {kind} {amount(cap)} {unit}: {fixed(spent, digits)} {unit} spent so "
                             f"far, and the next session's setup and first step (~{fixed(step, digits)} {unit}) would "
                             f"pass it; raise the cap: arzan train --resume {where} --budget {hint}{alone}")


CHECKPOINTED = {"interrupted", "stopped_budget"}  # statuses whose stop saved a checkpoint of its last step
# ...unless a second Ctrl-C cut the first one's save short: such a run has no checkpoint to lose
SECOND_SIGNAL = "interrupted by a second signal"


def set_aside_incomplete(folder: RunFolder) -> list[Path]:
    """Checkpoint folders a save never finished (no trainer_state.json: a full disk, a kill mid-save)
    are renamed `incomplete-checkpoint-N.at-<time>` before the resume trains: the Trainer would
    otherwise write the same step's checkpoint into them, over what is there. The new name is one
    neither arzan nor the Trainer's checkpoint rotation takes for a checkpoint."""
    import re

    from arzan.runfolder import aside_name

    moved = []
    if folder.checkpoints.is_dir():
        for path in sorted(folder.checkpoints.glob("checkpoint-*")):
            if path.is_dir() and re.fullmatch(r"checkpoint-\d+", path.name) and \
                    not (path / "trainer_state.json").is_file():
                aside = aside_name(path.with_name(f"incomplete-{path.name}"), "at")
                path.rename(aside)
                moved.append(aside)
    return moved


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
        if ledger.status in CHECKPOINTED and step > 0 and not (ledger.status_reason or "").startswith(SECOND_SIGNAL):
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
    for name in TORCH_STATE:  # optimizer, scheduler, RNG: the Trainer loads each after the model, with a traceback
        _check_torch_file(ckpt / name, ckpt.name)


# what the Trainer saves beside the adapter with torch.save (a zip archive each), where present
TORCH_STATE = ("optimizer.pt", "scheduler.pt", "rng_state.pth", "scaler.pt", "training_args.bin")


def _check_torch_file(path: Path, ckpt_name: str) -> None:
    """A torch.save file cut short (a copy from Drive stopped half-way) or emptied: its zip index,
    at the end of the file, is gone. Reading the index is milliseconds, even for a 2 GB optimizer."""
    import zipfile

    if not path.is_file():
        return
    try:
        with zipfile.ZipFile(path) as z:
            z.namelist()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise ArzanError(f"{path}: damaged ({described(exc)}); move {ckpt_name} aside to "
                         "resume from the checkpoint before it") from None


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


def check_same_data(sources: list[Any], ledger: Ledger) -> None:
    """A resume trains on the data the run started with: a local file changed since (rows cut, a
    file replaced) would train the rest on other rows, and the ledger and the card would name only
    the new file. Compared source by source, in the recipe's order (the run folder's recipe.yaml
    names a relative path absolutely), by the file's sha256 as recorded; a Hub dataset's
    fingerprint depends on the machine's cache, so it is not compared."""
    before = [d for d in ledger.summary.data or [] if isinstance(d, dict)]
    if len(before) != len(sources):
        return  # an older ledger, or one edited: nothing to set side by side
    for was, src in zip(before, sources, strict=True):
        old = str(was.get("fingerprint") or "")
        if old.startswith("sha256:") and src.fingerprint.startswith("sha256:") and old != src.fingerprint:
            raise ArzanError(f"{src.name}: changed since this run started ({old} then, {src.fingerprint} now); a "
                             "resume must train on the same data: put the original file back, or start a new run")
