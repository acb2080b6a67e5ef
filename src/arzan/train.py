"""One training run: recipe in, run folder out (adapter + model card + cost ledger).

The whole flow reads top to bottom in `train()`. TRL's SFTTrainer does the training; arzan adds
only what a paying user needs around it: the cost meter, a progress line with money in it,
checkpoints on the clock and on SIGTERM, and a run folder that is never silently overwritten.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from arzan.errors import ArzanError, described, first_line
from arzan.fileio import replace_dir
from arzan.recipe import BudgetSection, Recipe, load_recipe
from arzan.runfolder import (RunFolder, adapter_digest_if_merged, check_run_folder, check_writable, open_run_folder,
                             retire_earlier_merge)


@dataclass
class RunResult:
    run_dir: Path
    status: str
    ledger: dict[str, Any]
    note: str | None = None
    signal: int | None = None  # the stop signal this session received, if any
    scored: dict[str, Any] | None = None  # what the evaluation after training returned, when it ran


def sft_config(recipe: Recipe, folder: RunFolder, on_cuda: bool, has_eval: bool, backend: str = "hf",
               dtype: str = "float32") -> Any:
    """`dtype`: what the base was loaded in (BackendInfo.dtype), which sets bf16/fp16 on a GPU."""
    from trl import SFTConfig

    from arzan.model import mixed_precision

    kw = recipe.train.sft_kwargs()
    if kw.get("padding_free") and not kw.get("packing"):
        if not varlen_attention(recipe, backend):
            # a flattened batch is exact on sdpa too (transformers 5.17 masks each document from its
            # position_ids; tests/test_train.py checks it), but sdpa then attends over the whole
            # flattened batch, which costs more than the padding it saves: plain padding is the faster
            kw["padding_free"] = False
        else:
            # TRL 1.14 refuses padding_free without packing while max_length is set, because it
            # would not truncate; arzan's data step has already cut every row to train.max_length
            kw["max_length"] = None
    # SFTConfig defaults bf16=True, which a CPU cannot do; on a GPU the weights' dtype decides (fp16
    # weights with bf16 training is a TypeError in unsloth's trainer, bf16 on a T4 is emulated)
    kw["bf16"], kw["fp16"] = mixed_precision(dtype, kw.get("bf16"), kw.get("fp16")) if on_cuda else (False, False)
    kw.setdefault("gradient_checkpointing", on_cuda)  # SFTConfig defaults to True; on a CPU it only costs time
    if has_eval:
        kw.setdefault("eval_strategy", "steps" if kw.get("eval_steps") else "epoch")
    # TensorBoard (report_to) writes under checkpoints/runs/ unless TENSORBOARD_LOGGING_DIR is set
    config = SFTConfig(output_dir=str(folder.checkpoints), use_cpu=not on_cuda, disable_tqdm=True,
                       dataloader_pin_memory=on_cuda, save_strategy="steps", **kw)
    if on_cuda:  # one GPU: the Trainer would wrap a 16-bit hf model in DataParallel over every visible GPU,
        _ = config.device  # doubling the batch the estimate planned while the bill counts one (the device set up,
        config._n_gpu = 1  # then the count the Trainer reads); the meter measures and bills cuda:0 alone
    return config


def varlen_attention(recipe: Recipe, backend: str) -> bool:
    """Attention that runs each document of a flattened batch on its own: unsloth's, or flash
    attention on the hf path. Where padding_free pays off; runplan's estimate asks the same."""
    return backend == "unsloth" or "flash" in str(recipe.model.attn_implementation or "")


def train(recipe: Recipe, out: str | Path | None = None, mode: str = "new", console: Any = None,
          budget: BudgetSection | None = None, allow_over_budget: bool = False,
          cost_overrides: dict[str, Any] | None = None, callbacks: list[Any] | None = None,
          clock: Callable[[], float] | None = None, started: float | None = None) -> RunResult:
    """Train a recipe into a run folder. `callbacks` are extra TrainerCallbacks; `clock` replaces
    time.monotonic for the bill (tests use it to make money deterministic); `started` is the
    time.monotonic() the command began (`arzan train`: its imports and checks are billed as setup;
    the Python API leaves it None, as the time before the call is the user's own).

    On `mode="resume"` the run folder's own recipe.yaml is what runs (the `recipe` argument only
    names the run), with the caps the last session ran under unless `budget` raises them.
    """
    from arzan import billing, resume, runtime
    from arzan.data import load_data

    tick = clock or time.monotonic
    if mode == "resume":
        folder, note = open_run_folder(recipe.run_dir(out), mode)
        check_writable(folder.root, "a resume writes its checkpoints and ledger there; copy the run folder "
                       "somewhere writable and resume that copy")
        recipe, previous, terms = resume.resume_terms(folder, budget, cost_overrides)
        resume.preflight_resume(recipe, previous, folder.root)  # raises ArzanError("refusing to resume: ...")
        resume.check_resume_point(folder, previous)  # a checkpoint gone or damaged: refused, nothing billed
        for aside in resume.set_aside_incomplete(folder):
            if console is not None:
                console.print(f"note: a checkpoint whose save never finished is kept aside as {aside.name}",
                              style="yellow", highlight=False, markup=False)
        _check_machine(recipe, console)
        over = None
    else:
        from arzan.estimate import preflight_budget

        check_run_folder(recipe.run_dir(out), mode)  # a refusal costs a second, not a data check
        check_writable(recipe.run_dir(out).parent, "choose another --out")  # where the folder is made (or moved aside)
        terms = billing.given_terms(cost_overrides)
        recipe = billing.with_terms(recipe, budget, terms)
        billing.price_for(recipe)  # an unknown GPU or provider fails before any folder exists
        _check_machine(recipe, console)  # so does backend: unsloth on a CPU, bf16 or 4-bit without a GPU
    t0 = tick()  # the model's name, the budget and the data's rows are checked before a folder is made
    from arzan.model import check_model_name

    tokenizer = check_model_name(recipe)  # a model.name typo, a gated repo, no chat template: one line
    if mode != "resume":
        over, *expected = preflight_budget(recipe, allow_over_budget, tokenizer)  # "refusing to start"
    for line in (over, billing.unbindable_cap(recipe)):
        if line and console is not None:
            console.print(f"[yellow]warning:[/] {line}", highlight=False)
    raw = load_data(recipe.data, recipe.base_dir, resumed=mode == "resume")
    if mode == "resume":
        resume.check_same_data(raw.sources, previous)  # before the model load: a refusal costs nothing
    if console is not None:  # the checks passed: what the session is billed at, before it costs anything
        from arzan.model import busy_cpu_note

        if (busy := busy_cpu_note()) is not None:
            console.print(f"[yellow]warning:[/] {busy}", highlight=False)
        console.print(billing.price_line(recipe), highlight=False, markup=False)
        if (caps := billing.cap_line(recipe)) is not None:
            console.print(caps, highlight=False, markup=False)
    data_seconds = tick() - t0  # billed in the data phase once the meter starts
    from arzan.callbacks import (  # imports transformers: seconds, so before the folder exists
        EvaluationCut,
        Interrupted,
        PrintProgress,
        SaveOnClock,
        StopOnSignal,
        TokenCounter,
        metered_trainer_class,
    )
    from arzan.cost.meter import BudgetCut

    if mode != "resume":  # from here to stopper.install() takes milliseconds: no signal window worth a handler
        folder, note = open_run_folder(recipe.run_dir(out), mode)
        folder.recipe.write_text(recipe.resolved_yaml(), encoding="utf-8")
    counter = TokenCounter()
    meter = runtime.make_meter(recipe, folder, counter, resume=mode == "resume", clock=clock, terms=terms)
    if mode != "resume":
        meter.expect_steps(*expected)  # the estimate, until a step is measured; a resume has its own
    stopper = StopOnSignal()
    stopper.install()
    meter.add_seconds("data", data_seconds)
    if started is not None and clock is None:
        meter.add_seconds("setup", t0 - started)
    meter.start_flusher()
    status, reason, after, failed_after, scored = "failed", None, None, None, None
    try:
        from arzan.data import quiet_progress, tokenize_data
        from arzan.model import load_model

        with meter.phase("setup"):
            model, tokenizer, info = load_model(recipe)
            runtime.record_backend(meter, info)
        stopper.phase = "tokenizing the data"
        with meter.phase("data"):
            data = tokenize_data(raw, tokenizer, recipe.data, recipe.train.max_length)
            runtime.record_data(meter, data)
        for line in data.truncation_notes() if console is not None else []:  # said before the steps are paid
            console.print(f"note: {line}", style="yellow", highlight=False, markup=False)
        stopper.phase = "building the trainer"  # in the training loop a signal waits for the micro-batch
        with quiet_progress():  # TRL's passes over the tokenized set: bars with nothing to watch
            trainer = metered_trainer_class()(
                model=model, args=sft_config(recipe, folder, info.device == "cuda", data.eval is not None, info.name,
                                             info.dtype),
                train_dataset=data.train, eval_dataset=data.eval, processing_class=tokenizer,
                callbacks=[meter, SaveOnClock(recipe.train.save_every_minutes), stopper,
                           PrintProgress(meter, console), *(callbacks or [])])
        trainer.token_counter = counter
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)  # its raw dicts would drown the money line
        meter.attach(trainer)
        ckpt, weights = folder.last_checkpoint(), True  # weights: this session has an adapter to save
        if resume.is_final_checkpoint(ckpt):  # every step is paid for: a Trainer resume would add one more
            with meter.phase("setup"):
                resume.load_checkpoint_adapter(trainer.model, ckpt)
        elif meter.over_budget_before_training():  # the setup ate the budget: no step, adapter/ stays as it is
            weights = False
        else:
            with meter.phase("train"):
                try:
                    trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
                except EvaluationCut:  # only eval_on_start, before this session's first step, gets here:
                    stopper.in_loop, weights = False, False  # nothing new to save, adapter/ stays as it is
        stopper.phase = "the end of training"
        if weights:
            with meter.phase("save"), stopper.protect("saving the adapter"):
                def save(where: Path) -> None:
                    trainer.model.save_pretrained(where)
                    tokenizer.save_pretrained(where)

                merged_from = adapter_digest_if_merged(folder)  # an `arzan merge` between sessions
                replace_dir(folder.adapter, save)  # a kill mid-save leaves the adapter a budget stop saved
                if (aside := retire_earlier_merge(folder, merged_from)) is not None and console is not None:
                    console.print(f"note: merged/ held an earlier adapter merged; kept as {aside.name}",
                                  style="yellow", highlight=False, markup=False)
        after = runtime.skipped_after_training(meter, stopper, recipe, folder.root)  # a signal after the last step
        stopped_early = stopper.received is not None or meter.ledger.budget.stop_reason is not None
        gen_failed = None
        if not stopped_early:  # a preempted machine has seconds left, a capped budget nothing
            try:
                if recipe.eval.generation_check:
                    stopper.phase = "the generation check"
                    meter.check_cap(0.0, "the generation check")
                    with meter.phase("eval"):
                        try:
                            runtime.check_generation(recipe, meter, trainer.model, tokenizer, console)
                        except BudgetCut:
                            raise
                        except Exception as exc:  # an OOM while generating: the training is complete and saved
                            gen_failed = f"the generation check after it failed ({_why(exc)})"
                model = trainer = None  # lm-eval and the merge load base + adapter afresh: free the GPU first
                runtime.free_accelerator_memory()
                failed_after, scored = _eval_and_merge(recipe, folder, meter, stopper, info.device, gen_failed)
                after = failed_after
            except Interrupted as exc:  # the adapter is saved: the training itself is complete
                after = f"training finished; {exc} cut it short ({runtime.redo_hint(exc.where, folder.root, recipe)})"
            except BudgetCut as exc:
                after = runtime.cut_by_budget(str(exc), stopper.phase, recipe, folder.root)
        status, reason = runtime.final_status(meter, stopper, after, folder.last_checkpoint())
    except Interrupted as exc:
        status, reason = "interrupted", f"{exc}; {_resumes_from(folder)}"
    except ArzanError as exc:  # the ledger says why, so the folder explains itself later
        reason = f"stopped by an error before training finished: {first_line(exc)}"
        raise
    except KeyboardInterrupt:
        status, reason = "interrupted", f"{resume.SECOND_SIGNAL}; {_resumes_from(folder)}"
        raise
    except OSError as exc:  # a full disk: the CLI's own line says to free space, then resume
        reason = described(exc)
        raise
    except Exception as exc:  # a CUDA OOM, a library's error: one line, the traceback in error.log
        reason = described(exc)
        raise runtime.training_failed(folder, exc, meter.ledger.progress.step) from exc
    finally:
        with stopper.protect("closing the ledger"):  # a signal now waits for the ledger and the card
            ledger = runtime.finish(meter, folder, recipe, status, reason)
        stopper.uninstall()
    if status == "finished" and recipe.output.push_to_hub:  # after finish, so the card shows the final bill
        # a failed eval leaves the model to push; a cut or failed merge leaves no merged/ to send
        merged_ready = not recipe.output.save_merged or (folder.merged / "config.json").is_file()
        if (after is None or (after == failed_after and merged_ready)) and stopper.received is None:
            ledger = _push(folder, recipe)
        elif console is not None:  # a cut merge has no merged/ to send; a preempted machine has seconds left
            console.print(f"[yellow]not pushed:[/] the work after training did not finish; push it with "
                          f"arzan.export.push_to_hub({str(folder.root)!r}, {recipe.output.hub_model_id!r})",
                          highlight=False)
    return RunResult(folder.root, status, ledger, note, signal=stopper.received, scored=scored)


def _check_machine(recipe: Recipe, console: Any) -> None:
    from arzan.model import check_machine

    if recipe.eval.tasks:
        from arzan.evaluation.runner import check_tasks

        check_tasks(recipe.eval_tasks(), recipe.eval_data_dir())  # scored after the last step: checked before the first

    if recipe.output.push_to_hub:
        from arzan.export import hub_token

        hub_token()  # a push that cannot happen is refused before the training it would follow

    for warning in check_machine(recipe):
        if console is not None:
            console.print(f"[yellow]warning:[/] {warning}", highlight=False)


def _push(folder: RunFolder, recipe: Recipe) -> dict[str, Any]:
    """The upload, billed by push_to_hub as a save session of the run; the ledger with it."""
    from arzan.export import push_to_hub
    from arzan.runfolder import ledger_doc

    push_to_hub(folder.root, recipe.output.hub_model_id, private=recipe.output.hub_private,
                merged=recipe.output.save_merged)
    return ledger_doc(folder.root)


def _resumes_from(folder: RunFolder) -> str:
    ckpt = folder.last_checkpoint()
    return f"--resume continues from {ckpt.name if ckpt else 'the start'}"


def _eval_and_merge(recipe: Recipe, folder: RunFolder, meter: Any, stopper: Any, device: str,
                    gen_failed: str | None = None) -> tuple[str | None, dict[str, Any] | None]:
    """lm-eval and the merged model: work on the saved adapter, each one redoable on its own.
    Returns what failed and how to redo it, if either did (a failed eval does not stop the merge),
    after `gen_failed`, the generation check's failure, if it failed; and the scores, if lm-eval ran."""
    from arzan import runtime
    from arzan.cost.meter import BudgetCut

    failed, scored = [gen_failed] if gen_failed else [], None
    if recipe.eval.tasks:
        stopper.phase = "the evaluation after training"
        meter.check_cap(0.0, "the evaluation after training")  # before lm-eval loads the model, a paid minute
        with meter.phase("eval"):
            try:
                scored = runtime.evaluate_after_training(recipe, folder, meter)
            except BudgetCut:
                raise
            except Exception as exc:  # an OOM too: the training is complete and saved, so the run is finished
                failed.append(f"the evaluation after it failed ({_why(exc)}); "
                              f"{runtime.redo_hint('the evaluation after training', folder.root, recipe)}")
    if recipe.output.save_merged:
        stopper.phase = "the merge"
        meter.check_cap(0.0, "the merge")  # not cut half-way: half a merged model is worth nothing
        with meter.phase("save"):  # merged into the 16-bit base, never into 4-bit weights
            from arzan.export import merge_adapter, training_merge_dtype

            try:
                merge_adapter(folder.root, folder.merged, dtype=training_merge_dtype(device),
                              bill=False)  # the meter times it as this session's save phase
            except Exception as exc:  # the adapter is saved: the run is finished, its merge redoable
                failed.append(f"the merge after it failed ({_why(exc)}); "
                              f"{runtime.redo_hint('the merge', folder.root, recipe)}")
    return ("training finished; " + "; ".join(failed) if failed else None), scored


def _why(exc: Exception) -> str:
    """Our own errors are one line already; a library's (an OOM) says its kind too."""
    return str(exc) if isinstance(exc, ArzanError) else described(exc)


def train_from_recipe(path: str | Path, overrides: list[str] | None = None, **kwargs: Any) -> RunResult:
    """The Python API the notebooks use: the same path as `arzan train`."""
    return train(load_recipe(path, overrides), **kwargs)
