"""`arzan eval`: lm-evaluation-harness on a run's base model plus its LoRA adapter.

Why through lm-eval and not our own scorer: the numbers have to mean what the same task name
means in everyone else's paper, so the harness owns prompts, few-shot sampling and metrics; arzan
only decides which model, which tasks, where the data comes from, and writes the result where
the bill is (eval.json next to cost.json, and a copy in the ledger's summary).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from arzan.cost.ledger import utcnow
from arzan.errors import ArzanError, described, first_line
from arzan.evaluation import suites
from arzan.evaluation.results import (
    extract_rows,
    headline,
    merge_with_previous,
    read_previous,
    relimited_note,
    set_aside_unreadable,
    write_json_atomic,
)
from arzan.evaluation.session import EvalInterrupted, bill, failed, interrupted, sigterm_as_ctrl_c, signals_held
from arzan.evaluation.targets import Target, evals_folder, resolve_target
from arzan.evaluation.taskdata import DATA_DIR_ENV
from arzan.fileio import sha256
from arzan.runfolder import check_writable, eval_in_progress, evaluating

EVAL_FILE = "eval.json"


class _QuietCustomDataset(logging.Filter):
    """lm-eval warns on every task with a `custom_dataset`, which is all of arzan's: noise."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Custom kwargs can be passed" not in record.getMessage()


logging.getLogger("lm_eval.api.task").addFilter(_QuietCustomDataset())


def run_eval(target: str | Path, tasks: list[str] | str = "kazakh", limit: int | None = None,
             out_dir: Path | None = None, data_dir: Path | None = None,
             batch_size: int | str | None = None, device: str | None = None,
             num_fewshot: int | None = None, update_ledger: bool = True,
             guard: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None,
             load_in_4bit: bool | None = None, chat_template: bool | None = None) -> dict:
    """Evaluates `target` (run folder, adapter folder, model folder or Hub id) on `tasks`.

    Writes `eval.json` in the run folder (or `out_dir`) and, when that folder has a cost.json and
    `update_ledger` is true, puts the headline scores into the ledger's `summary.eval` and the
    evaluation's time and money into it as an eval-only session, then refreshes the model card
    (`result["note"]` says so when the card could not be rewritten).
    train.py passes `update_ledger=False` and copies `result["summary"]` into its own in-memory
    ledger, so two writers never race on one file. Returns what eval.json holds.

    A Ctrl-C (KeyboardInterrupt) while scoring raises EvalInterrupted once the time it spent is in
    the ledger, as a session with status "interrupted"; nothing scored is kept.

    `guard` wraps each batch lm-eval sends to the model: the training's budget cap (`CostMeter.capped`)
    raises from it to cut an evaluation the cap cannot pay for.

    `load_in_4bit` None scores a run as it was trained (a QLoRA run on its NF4 base, which is also
    what lets an 8B model be scored on the T4 it was trained on); True or False says so for any target.

    `chat_template` renders each question with the model's chat template (lm-eval's
    apply_chat_template): how an instruct fine-tune saw its training data, and without which a
    fine-tune on chat-formatted answers can score no better than its base. None: as the run's recipe
    says (eval.chat_template), else off, as published scores are made. eval.json records it per
    task, and `arzan compare` sets a fine-tune only against a base scored the same way.
    """
    started, began = time.monotonic(), utcnow()
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ArzanError(f"limit: {limit!r} is not a whole number of items >= 1")
    if data_dir is None and os.environ.get(DATA_DIR_ENV):
        data_dir = Path(os.environ[DATA_DIR_ENV])
    if data_dir is not None and not Path(data_dir).is_dir():  # else arzan's tasks fall back to the hub quietly
        raise ArzanError(f"--data-dir {data_dir}: no such folder (it holds Belebele.jsonl, kkCOPA.jsonl, ...)")
    if batch_size is not None and batch_size != "auto" and not (str(batch_size).isdigit() and int(batch_size) > 0):
        raise ArzanError(f"--batch-size: '{batch_size}' is not a positive whole number or auto")
    tgt = resolve_target(target, Path(out_dir) if out_dir else None)
    if tgt.adapter is not None:
        from arzan.export import check_adapter

        check_adapter(tgt.adapter)  # before the base loads and the session is billed
    device = device or _default_device()
    four_bit, precision_note = _in_4bit(tgt, device, load_in_4bit)
    chat_template = tgt.trained_chat if chat_template is None else chat_template
    if (four_bit or chat_template) and tgt.kind == "model" and out_dir is None:  # beside the plain ones, never over
        tgt.out_dir = evals_folder(tgt.base_name, four_bit, chat_template)
    billed = update_ledger and (tgt.out_dir / "cost.json").is_file()
    if billed:
        _refuse_while_training(tgt.out_dir)
    check_writable(tgt.out_dir, "arzan eval writes eval.json there" + (" and its session into cost.json"
                   if billed else "") + "; copy the folder somewhere writable and score the copy")
    with evaluating(tgt.out_dir, device=device, phase="eval") if billed else nullcontext():  # no training starts here until the bill is in
        try:
            with sigterm_as_ctrl_c() if billed else nullcontext():
                plan = suites.resolve(tasks, data_dir)  # checks every local file before the model loads
                results, lm_info = _evaluate(tgt, plan, limit, data_dir, batch_size, device, num_fewshot, guard,
                                             four_bit, chat_template)
                how = {"load_in_4bit": four_bit, "chat_template": chat_template}
                doc = _document(target, tgt, tasks, plan, limit, results, {**lm_info, **how}, started, data_dir)
        except KeyboardInterrupt:
            if not update_ledger:  # the caller (a training) owns the ledger and its signals
                raise
            raise interrupted(tgt.out_dir, time.monotonic() - started, device, began, billed) from None
        except Exception as exc:  # a training's caller owns its ledger and its cap's BudgetCut
            if isinstance(exc, ArzanError) or not update_ledger:
                raise
            raise failed(tgt.out_dir, exc, time.monotonic() - started, device, began, billed) from exc
        note = None
        with signals_held() as got:  # the scores, their bill and the card: all three or none
            previous = read_previous(tgt.out_dir / EVAL_FILE)
            note = relimited_note(previous, doc)
            if (aside := set_aside_unreadable(tgt.out_dir / EVAL_FILE, previous)) is not None:
                note = f"the earlier {EVAL_FILE} could not be read; it is kept as {aside.name}"
            write_json_atomic(tgt.out_dir / EVAL_FILE, doc)
            if billed:
                ledger, card_note = bill(tgt.out_dir, doc["summary"], doc["seconds"], device, began)
                note = "; ".join(n for n in (note, card_note, past_cap_note(ledger)) if n) or None
    if got:
        raise EvalInterrupted(f"interrupted after the evaluation was saved: {tgt.out_dir / EVAL_FILE} and its bill "
                              "are complete")
    # where it went, and what the caller should tell the user: not part of eval.json
    note = "; ".join(n for n in (precision_note, note, cut_note(doc)) if n)
    return {**doc, "path": str(tgt.out_dir / EVAL_FILE), **({"note": note} if note else {})}


def _in_4bit(tgt: Target, device: str, asked: bool | None) -> tuple[bool, str | None]:
    """Whether the base loads in 4-bit, and a note when that is not how the run was trained. A 4-bit
    and a 16-bit base score a point or so apart, so eval.json and each task's headline record which
    it was, and `arzan compare` sets a fine-tune only against a base scored the same way."""
    import importlib.util

    on_cuda = device.startswith("cuda")
    if asked and not on_cuda:
        raise ArzanError("--load-in-4bit needs a CUDA GPU (bitsandbytes); on a CPU the base loads in 32-bit")
    if asked is None and tgt.trained_4bit and not on_cuda:
        return False, ("this run was trained on a 4-bit base; with no CUDA GPU here it was scored on the "
                       "full-precision base, which can score a little differently")
    four_bit = tgt.trained_4bit if asked is None else asked
    if four_bit and importlib.util.find_spec("bitsandbytes") is None:
        raise ArzanError("scoring on a 4-bit base needs bitsandbytes (pip install 'arzan[gpu]'), or --no-load-in-4bit")
    return four_bit, None


def _refuse_while_training(run_dir: Path, command: str = "arzan eval") -> None:
    """A training still running into the folder rewrites cost.json from memory every 10 s: the
    evaluation's (or merge's) session would be erased, and a resume could then start beside it.
    An earlier eval or merge killed outright is billed first (session.bill_if_killed)."""
    from arzan.cost.ledger import live_writer_age, read_ledger
    from arzan.evaluation.session import say_killed_billed

    say_killed_billed(run_dir)

    age = live_writer_age(read_ledger(run_dir / "cost.json"))
    if age is not None:
        raise ArzanError(f"{run_dir}: a training is still running into this folder (its ledger was written "
                         f"{age:.0f} s ago) and would erase this {command.split()[-1]}'s bill; run {command} "
                         "once it stops")
    if (busy := eval_in_progress(run_dir)) is not None:  # two evals would each write the ledger they read
        raise ArzanError(busy)


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _document(target, tgt: Target, tasks, plan: suites.Plan, limit, results: dict, lm_info: dict,
              started: float, data_dir: Path | None = None) -> dict:
    """eval.json's content: this eval's rows and headlines, merged into the earlier ones. Each
    headline keeps how it was asked for (`requested`, `data_dir`), so `arzan compare` can say the
    exact command that scores the base on the same items."""
    import lm_eval

    from arzan import __version__
    how = {"base_4bit": lm_info["load_in_4bit"], "chat_template": lm_info["chat_template"]}
    rows = [{**r, **how} for r in extract_rows(results, plan.data_source)]
    adapter = tgt.adapter
    created = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    doc = {
        "schema_version": 1,
        "created_at": created,
        "model": {"target": str(target), "kind": tgt.kind, "base": tgt.base_name,
                  "adapter": str(adapter) if adapter else None,
                  "adapter_sha256": sha256(adapter / "adapter_model.safetensors") if adapter else None,
                  **lm_info},
        "tasks_requested": tasks if isinstance(tasks, str) else list(tasks),
        "tasks_run": plan.tasks, "substituted": plan.substituted, "data_source": plan.data_source,
        "limit": limit, "seconds": round(time.monotonic() - started, 2),
        "versions": {"lm_eval": getattr(lm_eval, "__version__", None), "arzan": __version__},
        "rows": rows,
        "tasks": {t: {**h, "limit": limit, **how, "evaluated_at": created,
                      "requested": tasks if isinstance(tasks, str) else list(tasks),
                      "data_dir": str(Path(data_dir).resolve()) if data_dir else None}
                  for t, h in headline(rows, plan.tasks).items()},
    }
    doc = merge_with_previous(read_previous(tgt.out_dir / EVAL_FILE), doc)
    limits = [h.get("limit") for h in doc["tasks"].values()]
    doc["summary"] = {"tasks": doc["tasks"], "limit": max((x for x in limits if x), default=None),
                      "seconds": doc["seconds"], "eval_json": EVAL_FILE}
    return doc


def _gpu_dtype_name(tgt: Target) -> str:
    """The dtype the run trained its base in (the recipe's, else the GPU's 16-bit type, as `auto`
    chose in training): HFLM's own `auto` takes the checkpoint's bf16, emulated on a T4."""
    from arzan.model import gpu_dtype

    return tgt.dtype or str(gpu_dtype()).split(".")[-1]


def _four_bit_model(tgt: Target) -> tuple[Any, Any]:
    """lm-eval's HFLM takes a quantisation config only from the checkpoint's own config, so a 4-bit
    base is loaded here, as inference loads it (arzan.export), and handed to HFLM as a model."""
    if tgt.adapter is not None:
        from arzan.export import load_for_inference

        return load_for_inference(tgt.adapter, dtype=tgt.dtype or "auto", load_in_4bit=True, device="cuda",
                                  trust_remote_code=tgt.trust_remote_code)  # the run's base and revision
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from arzan.model import gpu_dtype, nf4_config

    dtype = gpu_dtype()
    model = AutoModelForCausalLM.from_pretrained(tgt.base, dtype=dtype, quantization_config=nf4_config(dtype),
                                                 device_map={"": 0}, revision=tgt.revision,
                                                 trust_remote_code=tgt.trust_remote_code)
    return model.eval(), AutoTokenizer.from_pretrained(tgt.tokenizer, revision=tgt.revision,
                                                       trust_remote_code=tgt.trust_remote_code)


def _load_tasks_first(tm, tasks: list[str], plan: suites.Plan | None = None) -> None:
    """Every task's data, before an 8B model is loaded for nothing: a dataset the hub will not serve
    (offline, gated) or a task listed beside its own group fails here, in one line. lm-eval loads
    them again inside simple_evaluate, from the datasets cache.

    When the whole list fails, each task is tried alone, so the message names the tasks that cannot
    load and the ones that can (lm-eval stops at the first failure and would blame them all)."""
    try:
        tm.load(tasks)
        return
    except Exception as e:  # the hub raises many types for lm-eval's own tasks, arzan's loader ArzanError
        together = e
    failed = {}
    for task in tasks:
        try:
            tm.load([task])
        except Exception as e:
            failed[task] = e
    if not failed:  # each loads alone: together they clash, e.g. "Duplicate task" for a group and its subtask
        raise ArzanError(f"lm-eval refused the tasks {', '.join(tasks)}: {first_line(together)}") from None
    raise ArzanError(_cannot_load(failed, [t for t in tasks if t not in failed], plan)) from None


def _cannot_load(failed: dict[str, Exception], loaded: list[str], plan: suites.Plan | None = None) -> str:
    """Which tasks cannot load and why (the first reason; offline, they are all the hub's), and
    which did, so the user can run those alone. A template lm-eval cannot render (a typo in a task
    YAML's doc_to_text) is the file's fault, not the network's: the file is named instead."""
    from jinja2 import TemplateError

    name, e = next(iter(failed.items()))
    why = first_line(e) if isinstance(e, ArzanError) else described(e)
    local = plan is not None and plan.data_source.get(name, "").startswith("local:")
    found = suites.task_file(name, plan.include_paths) if plan else None
    where = found[0] if found else f"task {name}"
    if isinstance(e, TemplateError):
        text = f"{where}: a template of task {name} (doc_to_text, doc_to_choice or doc_to_target) cannot be " \
               f"rendered: {why}"
    elif local and not isinstance(e, ArzanError):  # its file was read and checked: the YAML is what fails
        text = f"{where}: lm-eval cannot build task {name} from its local file ({why})"
        if found and "custom_dataset" not in found[1]:
            text += ("; a task YAML of your own needs `custom_dataset: !function arzan.evaluation.taskdata.load` "
                     "(README: Evaluate on your own multiple-choice set)")
    else:
        text = f"cannot load the data of {', '.join(failed)} ({name}: {why}); offline? arzan's own tasks read " \
               "local files from --data-dir"
    if loaded:
        text += f"; these loaded and can run alone: --tasks {','.join(loaded)}"
    return text


def _evaluate(tgt: Target, plan: suites.Plan, limit, data_dir, batch_size, device, num_fewshot, guard=None,
              four_bit: bool = False, chat_template: bool = False):
    import tempfile

    with tempfile.TemporaryDirectory(prefix="arzan-tasks-") as shadow:  # see suites.shallow
        return _evaluate_in(Path(shadow), tgt, plan, limit, data_dir, batch_size, device, num_fewshot, guard,
                            four_bit, chat_template)


def _task_manager(plan: suites.Plan, shadow: Path, data_dir: Any) -> Any:
    """lm-eval's index of the plan's tasks; a name it does not know is refused in one line."""
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=[str(p) for p in suites.shallow(plan.include_paths, shadow)],
                     include_defaults=plan.needs_lm_eval_registry,
                     metadata={"arzan_data_dir": str(data_dir)} if data_dir else None)
    missing = [t for t in plan.tasks if t not in tm.all_tasks]
    if missing:
        raise ArzanError(f"unknown task(s) {', '.join(missing)}; suites: {', '.join(suites.SUITES)}; "
                         "or name a task YAML file")
    return tm


def check_tasks(tasks: list[str] | str, data_dir: Any = None, field: str = "eval.tasks") -> None:
    """The tasks a training will score after its last step, checked before its first: a typo in a
    name, a bad row in a task file or a missing lm-eval used to surface only after the whole paid
    training. Names only lm-eval knows cost a few seconds of indexing its registry."""
    import importlib.util
    import tempfile

    if importlib.util.find_spec("lm_eval") is None:
        raise ArzanError(f"{field}: lm-eval is not installed here (pip install 'arzan[eval]'), or remove {field}")
    try:
        plan = suites.resolve(tasks, data_dir)  # every local file, row by row
        with tempfile.TemporaryDirectory(prefix="arzan-tasks-") as shadow:
            tm = _task_manager(plan, Path(shadow), data_dir)
            local = all(source.startswith("local:") for source in plan.data_source.values())
            # building tasks renders their templates and reads their data: in seconds when it is all local,
            # or offline (the hub's data can only come from the cache then, so nothing is downloaded)
            from arzan.hub import offline

            if (local and not plan.needs_lm_eval_registry) or offline():
                _load_tasks_first(tm, plan.tasks, plan)
    except ArzanError as exc:  # a recipe has no --data-dir flag: its folder is eval.data_dir
        said = str(exc).replace("--data-dir", "eval.data_dir") if field == "eval.tasks" else str(exc)
        raise ArzanError(f"{field}: {said}") from None


def _evaluate_in(shadow: Path, tgt: Target, plan: suites.Plan, limit, data_dir, batch_size, device, num_fewshot,
                 guard=None, four_bit: bool = False, chat_template: bool = False):
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    on_gpu = device.startswith("cuda")
    tm = _task_manager(plan, shadow, data_dir)
    _load_tasks_first(tm, plan.tasks, plan)
    batch_size = batch_size or ("auto" if on_gpu else 8)
    try:  # fp32 on CPU: bf16 matmuls are slow there, and adapter-vs-merged checks need exactness
        if four_bit:
            model, tokenizer = _four_bit_model(tgt)
            lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        else:
            lm = HFLM(pretrained=tgt.base, peft=str(tgt.adapter) if tgt.adapter else None,
                      tokenizer=tgt.tokenizer, device=device, dtype=_gpu_dtype_name(tgt) if on_gpu else "float32",
                      batch_size=batch_size, revision=tgt.revision or "main",
                      trust_remote_code=tgt.trust_remote_code)
    except (OSError, ValueError) as e:
        with_adapter = f" with adapter {tgt.adapter}" if tgt.adapter else ""
        first = first_line(e)
        raise ArzanError(f"cannot load {tgt.base_name}{with_adapter}: {first}") from None
    if chat_template and not getattr(lm.tokenizer, "chat_template", None):
        raise ArzanError(f"--chat-template: the tokenizer of {tgt.base_name} has no chat template (a base model, "
                         "not an instruct one); score it without --chat-template")
    if guard is not None:  # every loglikelihood and generation batch passes one of these two
        for name in ("_model_call", "_model_generate"):
            setattr(lm, name, guard(getattr(lm, name)))
    with _cut_contexts_counted() as cut, _no_git_probe():
        results = simple_evaluate(model=lm, tasks=plan.tasks, task_manager=tm, limit=limit,
                                  num_fewshot=num_fewshot, log_samples=False, apply_chat_template=chat_template)
    cfg = results.get("config", {})
    # HFLM records its own default revision for a model it was handed: the 4-bit base's is the recipe's
    info = {"revision": (tgt.revision or "main") if four_bit else cfg.get("model_revision"), "sha": cfg.get("model_sha") or None,
            "dtype": str(cfg.get("model_dtype")), "num_parameters": cfg.get("model_num_parameters"),
            "device": device, "max_length": getattr(lm, "max_length", None), "cut_requests": cut.n}
    return results, info


class _CutCounter(logging.Filter):
    """lm-eval warns once per scored choice whose context is longer than the model's window and cuts
    it from the left: dozens of lines for the tiny model on Belebele, and scores on cut passages that
    nobody would know of afterwards. Counted (eval.json's model.cut_requests) and said once instead."""

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if "exceeds model's maximum length" in record.getMessage():
            self.n += 1
            return False
        return True


@contextmanager
def _cut_contexts_counted() -> Iterator[_CutCounter]:
    counter, log = _CutCounter(), logging.getLogger("lm_eval.models.huggingface")
    log.addFilter(counter)
    try:
        yield counter
    finally:
        log.removeFilter(counter)


@contextmanager
def _no_git_probe() -> Iterator[None]:
    """simple_evaluate records `git describe` of the current folder (the user's, not lm-eval's or
    ours) and, outside a repository, lets git print `fatal: not a git repository` in the middle of
    the eval's output, which reads like an error. eval.json pins versions without it."""
    import lm_eval.evaluator as evaluator

    probe = getattr(evaluator, "get_git_commit_hash", None)
    if probe is None:  # another lm-eval: nothing to quieten
        yield
        return
    evaluator.get_git_commit_hash = lambda: None
    try:
        yield
    finally:
        evaluator.get_git_commit_hash = probe


def past_cap_note(ledger: dict | None, what: str = "evaluation") -> str | None:
    """A standalone eval or merge is not capped (it was asked for by name); when the run's own cap is
    passed by now, say so, as the training would have."""
    budget, money = (ledger or {}).get("budget") or {}, (ledger or {}).get("money") or {}
    billed = (ledger or {}).get("billed_seconds")
    hours = billed / 3600 if isinstance(billed, (int, float)) else None
    for kind, spent, unit in (("max_kzt", money.get("kzt"), "₸"), ("max_usd", money.get("usd"), "$"),
                              ("max_hours", hours, "h")):
        cap = budget.get(kind)
        if isinstance(cap, (int, float)) and isinstance(spent, (int, float)) and spent > cap:
            from arzan.numbers import amount, fixed

            if kind == "max_hours":
                from arzan.numbers import hms

                return (f"the run's max_hours cap of {amount(cap)} h ({hms(cap * 3600)}) is passed: {hms(billed)} "
                        f"billed with this {what} (arzan eval and arzan merge are not capped)")
            return (f"the run's {kind} cap of {amount(cap)} {unit} is passed: {fixed(spent, 2)} {unit} spent with this "
                    f"{what} (arzan eval and arzan merge are not capped)")
    return None


def cut_note(doc: dict) -> str | None:
    """One line for the CLI when lm-eval cut contexts to the model's window."""
    model = doc.get("model") or {}
    if not model.get("cut_requests"):
        return None
    return (f"{model['cut_requests']:,} scored choices had a context longer than the model's {model.get('max_length')} "
            "tokens and were cut from the left (lm-eval's rule): those items were scored on part of their passage")
