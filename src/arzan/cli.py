"""`arzan` command line: parse, call, print. The work lives in the modules it calls.

A user error (ArzanError) prints one red line and exits 2; paid work a library broke part-way (errors.Failed:
a CUDA out of memory) one line and exit 1, its traceback in the folder's error.log; otherwise only a
bug shows a traceback.
"""

from __future__ import annotations

import math
import os
import re
import sys
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from arzan import __version__
from arzan.errors import ArzanError
from arzan.hub import COMMANDS, offline_if_unreachable

STARTED = time.monotonic()  # the command's start: a rented GPU bills its imports and checks too

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="arzan: cheap, honest LoRA fine-tunes on one GPU, with the bill next to the model.")
console = Console(soft_wrap=True)  # a path or a resume command must stay copy-pasteable
err_console = Console(stderr=True, soft_wrap=True)


def _os_error(exc: OSError, kept: str) -> ArzanError:
    """A disk that filled up or a folder that turned read-only mid-command: one line naming the
    file, not a traceback; `kept` says what is safe (the checks before a command catch the rest)."""
    return ArzanError(f"{exc.filename or 'a file'}: {exc.strerror or type(exc).__name__}; {kept}")


def _fix_for(exc: OSError) -> str:
    """What to do about the OSError before retrying: free space only when space ran out."""
    import errno

    if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return "free space"
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "make that folder writable"
    return "fix that"


def _unfinished_run(folder: Path, what: str = "these are the scores of its adapter so far") -> str | None:
    """An adapter a stop left mid-training scores (or merges into) what it is: said, so it is not
    read as the run's."""
    from arzan.runfolder import is_run_folder, ledger_doc

    if not is_run_folder(folder):
        return None
    led = ledger_doc(folder)
    progress = led.get("progress") if isinstance(led.get("progress"), dict) else {}
    if led.get("status") in (None, "finished"):
        return None
    command = led.get("resume_command") or f"arzan train --resume {folder}"  # a capped run's names its raised cap
    return (f"this run is {led.get('status')} at step {progress.get('step', '?')}/{progress.get('max_steps', '?')}: "
            f"{what}, not of the finished run ({command})")


RECIPE_SECTIONS = {"model", "lora", "data", "train", "budget", "cost", "output", "eval"}
FILE_SUFFIXES = {"yaml", "yml", "json", "jsonl", "csv", "parquet", "txt"}


def _fail(exc: ArzanError, recipe_file: Path | None = None) -> None:
    """`recipe_file`: a refusal naming a recipe field (`model.backend: ...`, raised after the recipe
    loaded: this machine cannot run it) names the file too, as the recipe's own errors do."""
    from rich.markup import escape

    field = re.match(r"([a-z]+)\.([a-z_0-9]+)", str(exc))
    if recipe_file is not None and field and field.group(1) in RECIPE_SECTIONS \
            and field.group(2) not in FILE_SUFFIXES:  # `train.optim: ...`, not a file `train.jsonl: ...`
        exc = ArzanError(f"{recipe_file}: {exc}")

    if _HUB_NOTE and _ABOUT_THE_HUB.search(str(exc)):  # why the hub was not tried: said where it matters
        err_console.print(_HUB_NOTE, style="yellow", highlight=False, markup=False)
    # escaped: a message quoting `[q_proj` or a list must print as written, not as rich markup
    err_console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    raise typer.Exit(exc.exit_code)


# The offline note (hub.offline_if_unreachable) is shown with an error that concerns the hub, not
# before every error and every result: an empty recipe file has nothing to do with the network.
_HUB_NOTE: str | None = None
_ABOUT_THE_HUB = re.compile(r"hub|hugging ?face|offline|cache|couldn't (connect|reach)|connection", re.I)


def _version(value: bool) -> None:
    if value:
        console.print(f"arzan {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", metavar="", callback=_version, is_eager=True,
                                      help="Show the version and exit.")) -> None:
    """Fine-tune, estimate, evaluate and report, with the cost in tenge and dollars."""


def _check_price(price: float | None) -> None:
    if price is not None and not (math.isfinite(price) and price >= 0):
        raise ArzanError(f"--price: {price:g} is not a price; give USD per GPU-hour, 0 or more (e.g. --price 1.2)")


# how people write a cap: 5000₸, 5000тг, 5000 теңге, $10, 10USD, 3h, 90m
_BUDGET_UNITS = (("ТЕҢГЕ", "KZT", 1.0), ("ТЕНГЕ", "KZT", 1.0), ("TENGE", "KZT", 1.0), ("ТГ", "KZT", 1.0),
                 ("KZT", "KZT", 1.0), ("USD", "USD", 1.0), ("MIN", "H", 1 / 60), ("H", "H", 1.0), ("M", "H", 1 / 60))
_BUDGET_FIELDS = {"KZT": "max_kzt", "USD": "max_usd", "H": "max_hours"}


def _budget_number(text: str) -> float:
    """5,000 is five thousand; 1,5 and 0,005 are decimals, as Kazakh and Russian write them. The cap
    read is printed before anything is paid (`arzan train`, `arzan estimate`), so a misreading shows."""
    if re.fullmatch(r"[1-9]\d{0,2}(,\d{3})+(\.\d+)?", text):  # 0,005 is a decimal
        return float(text.replace(",", ""))
    if re.fullmatch(r"\d+,\d+", text):
        return float(text.replace(",", "."))
    return float(text)


def parse_budget(text: str | None):
    """'5000KZT', '5000₸', '5000тг', '10USD', '$10', '2h', '90m' -> BudgetSection."""
    from arzan.recipe import BudgetSection

    if text is None:
        return None
    t = text.strip().upper().replace(" ", "").replace("\u00a0", "").replace("₸", "KZT").replace("$", "USD")
    if t.startswith("USD"):  # $10
        t = t[3:] + "USD"
    for suffix, unit, scale in _BUDGET_UNITS:
        if t.endswith(suffix):
            try:
                value = _budget_number(t[: -len(suffix)]) * scale
            except ValueError:
                break
            if value > 0 and math.isfinite(value):
                return BudgetSection(**{_BUDGET_FIELDS[unit]: value})
            break
    raise ArzanError(f"--budget: '{text}' is not an amount like 5000KZT (or 5000₸, 5000тг), 10USD, 3h or 90m")


@app.command()
def train(
    recipe: Path = typer.Argument(..., metavar="RECIPE", help="Recipe YAML, or a run folder with --resume."),
    set_: list[str] = typer.Option([], "--set", metavar="FIELD=VALUE",
                                   help="Override a field: --set train.learning_rate=1e-4"),
    out: Optional[Path] = typer.Option(None, "--out", metavar="DIR",
                                       help="Run folder (default: output.dir or runs/<name>)."),
    resume: bool = typer.Option(False, "--resume", metavar="", help="Continue a run folder from its last checkpoint."),
    overwrite: bool = typer.Option(False, "--overwrite", metavar="",
                                   help="Start again; the old folder is moved aside."),
    budget: Optional[str] = typer.Option(None, "--budget", metavar="CAP",
                                         help="Cap the spend: 5000KZT (5000₸, 5000тг), 10USD, 3h or 90m."),
    allow_over_budget: bool = typer.Option(False, "--allow-over-budget", metavar="",
                                           help="Start even if the estimate is over."),
    gpu: Optional[str] = typer.Option(None, "--gpu", metavar="GPU", help="Price the run as this catalog GPU."),
    provider: Optional[str] = typer.Option(None, "--provider", metavar="PROVIDER",
                                           help="Catalog provider for the price."),
    price: Optional[float] = typer.Option(None, "--price", metavar="USD", help="Your own price, USD per GPU-hour."),
) -> None:
    """Fine-tune with LoRA; writes adapter, model card and cost ledger to the run folder."""
    from arzan.evaluation.session import sigterm_as_ctrl_c
    from arzan.recipe import load_recipe
    from arzan.runfolder import is_run_folder

    where, loaded_where = out or recipe, False
    try:
        with sigterm_as_ctrl_c():  # a provider's SIGTERM before the training's own handler: one line, not 143
            if resume and overwrite:
                raise ArzanError("--resume and --overwrite contradict each other; choose one")
            if resume and set_:
                raise ArzanError("--set with --resume: a resumed run keeps the recipe it started with (its run "
                                 "folder's recipe.yaml); to change the recipe, start a new run")
            run_dir = out
            if resume and not recipe.exists():
                raise ArzanError(f"{recipe}: no such run folder to resume")
            if recipe.is_dir():
                if not resume and is_run_folder(recipe):
                    raise ArzanError(f"{recipe}: is a run folder; to continue it use: arzan train --resume {recipe}")
                if not resume:
                    raise ArzanError(f"{recipe}: is a folder, not a recipe YAML (recipes/*.yaml are examples)")
                if not is_run_folder(recipe):
                    raise ArzanError(f"{recipe}: not a run folder (needs recipe.yaml and cost.json)")
                if out is not None and out.resolve() != recipe.resolve():
                    raise ArzanError(f"--out {out} with --resume {recipe}: a run continues in its own folder; "
                                     "to train into another, start a new run there")
                run_dir, recipe = recipe, recipe / "recipe.yaml"
            elif resume and out is None and recipe.name == "recipe.yaml" and is_run_folder(recipe.parent):
                run_dir = recipe.parent  # a run folder's own recipe: that folder, wherever it was moved or copied
            if resume and allow_over_budget:
                raise ArzanError("--allow-over-budget with --resume: a resume is refused only when the cap cannot pay "
                                 "for one more step, and the meter would stop at once; raise the cap with --budget")
            _check_price(price)
            loaded = load_recipe(recipe, set_)
            where, loaded_where = loaded.run_dir(run_dir), True
            if resume and recipe.resolve() != (where / "recipe.yaml").resolve():
                from arzan.resume import check_same_recipe

                # RECIPE --resume --out DIR: DIR's own recipe.yaml is what runs
                check_same_recipe(loaded, where, recipe)
            from arzan.train import train as run_training

            result = run_training(loaded, out=run_dir, mode="resume" if resume else "overwrite" if overwrite else "new",
                                  console=console, budget=parse_budget(budget), allow_over_budget=allow_over_budget,
                                  cost_overrides={"gpu": gpu, "provider": provider, "usd_per_gpu_hour": price},
                                  started=STARTED)
    except ArzanError as exc:
        _fail(exc, recipe)
        return
    except OSError as exc:
        _fail(_os_error(exc, f"what was saved before it (checkpoints, the ledger) stays; {_fix_for(exc)}, then "
                        f"arzan train --resume {where if loaded_where else 'RUN_DIR'}"))
        return
    except KeyboardInterrupt:  # a Ctrl-C before the run folder exists, or a second one: the ledger is closed
        err_console.print(_interrupted_message(where if loaded_where else recipe if resume else None, resume),
                          highlight=False)
        raise typer.Exit(130)
    if result.note:
        console.print(f"[yellow]note:[/] {result.note}")
    if result.scored is not None:  # after the bill is closed: the table's cost is cost.json's, as below
        from arzan.evaluation import gain_table

        console.print(gain_table(result.scored))
        console.print(f"scores written to {result.scored['path']}", highlight=False)
    from arzan.numbers import kzt, usd

    money = result.ledger.get("money", {})
    console.print(f"[bold]{result.status}[/] · {result.run_dir} · {kzt(money.get('kzt', 0))} ₸ "
                  f"({usd(money.get('usd', 0))} $)", highlight=False)
    if result.status != "finished":
        resume_with = result.ledger.get("resume_command") or f"arzan train --resume {result.run_dir}"
        console.print(f"{result.ledger.get('status_reason') or result.status}", highlight=False, markup=False)
        console.print(f"resume with: {resume_with}", highlight=False)
        raise typer.Exit(3)
    if result.ledger.get("status_reason"):  # training finished; a signal or the cap cut the work after it short
        console.print(f"note: {result.ledger.get('status_reason')}", highlight=False, markup=False)
        raise typer.Exit(3)


def _interrupted_message(run_dir: Path | None, resume: bool) -> str:
    """What a Ctrl-C outside the training loop left: a first one during the checks and imports (no
    folder yet, or nothing new in it), or a second one while the first was being handled."""
    from arzan.runfolder import RunFolder, is_run_folder, ledger_doc

    ours = False  # a session counts only if this process began it (--overwrite: the old folder's are not)
    if run_dir is not None and is_run_folder(run_dir):
        sessions = ledger_doc(run_dir).get("sessions")
        ours = isinstance(sessions, list) and bool(sessions) and isinstance(sessions[-1], dict) \
            and sessions[-1].get("pid") == os.getpid()
    if resume and run_dir is not None and is_run_folder(run_dir) and not ours:
        return ("interrupted before the resume started: nothing new was billed and the run is as it was; continue "
                f"with: arzan train --resume {run_dir}")
    if run_dir is None or not is_run_folder(run_dir) or not (resume or ours):
        return "interrupted before the run started: no new run folder was made; there is nothing to resume"
    kept = RunFolder(run_dir).last_checkpoint()
    since = f"its last checkpoint ({kept.name})" if kept is not None else "the start (no checkpoint was saved yet)"
    what = "resume" if resume else "run"
    return f"interrupted: the {what} stopped; the ledger is closed; continue from {since} with: " \
           f"arzan train --resume {run_dir}"


def _merge_left(run_dir: Path, out: Path | None) -> str:
    """What an unfinished merge left: its `<out>.partial` folder by name (the next merge replaces
    it), or nothing when it stopped before writing."""
    try:
        from arzan.export import locate

        adapter, run = locate(run_dir)
    except ArzanError:
        return "nothing merged was kept"
    target = Path(out) if out else (run or adapter.parent) / "merged"
    partial = target.with_name(target.name + ".partial")
    return (f"nothing merged was kept (only the unfinished {partial}, which the next merge replaces)"
            if partial.exists() else "nothing merged was kept")


def _merge_failed(exc: Exception, run: Path, billed: bool, left: str = "nothing merged was kept") -> ArzanError:
    from arzan.cost.ledger import utcnow
    from arzan.errors import Failed, described, out_of_memory
    from arzan.fileio import append_traceback

    hint = ("; a merge loads the whole base unquantised (an 8B model: ~16 GB of VRAM in bfloat16, ~32 GB of RAM "
            "on a CPU)" if out_of_memory(exc) else "")
    saved = append_traceback(run, exc, f"{utcnow().isoformat()} arzan merge") if Path(run).is_dir() else None
    return Failed(f"the merge failed ({described(exc)}){hint}; the adapter is untouched and {left}"
                  + ("; its minutes are in the run's cost.json, status failed" if billed else "")
                  + (f"; {saved}" if saved else ""))


@app.command()
def merge(
    run_dir: Path = typer.Argument(..., metavar="RUN", help="Run folder (or adapter folder)."),
    out: Optional[Path] = typer.Option(None, "--out", metavar="DIR",
                                       help="Folder for the merged model (default: RUN/merged)."),
    dtype: str = typer.Option("bfloat16", "--dtype", metavar="DTYPE", help="bfloat16, float16 or float32."),
) -> None:
    """Merge the LoRA adapter into the 16-bit base weights (never into 4-bit ones)."""
    from arzan.export import merge_adapter
    from arzan.evaluation.session import sigterm_as_ctrl_c
    from arzan.runfolder import ledger_doc

    try:  # the run folder the merge bills, also when given its adapter/ folder
        from arzan.export import locate

        billed_run = locate(run_dir)[1] or run_dir
    except ArzanError:
        billed_run = run_dir
    sessions = len(ledger_doc(billed_run).get("sessions") or [])
    try:
        with sigterm_as_ctrl_c():  # a preempted merge is billed and said like a Ctrl-C'd one
            path = merge_adapter(run_dir, out, dtype=dtype)
    except ArzanError as exc:
        _fail(exc)
        return
    except OSError as exc:
        _fail(_os_error(exc, f"the adapter is untouched; {_merge_left(run_dir, out)}"))
        return
    except KeyboardInterrupt:
        billed = ledger_doc(billed_run).get("sessions") or []
        paid = (f"; its {billed[-1].get('billed_seconds') or billed[-1].get('unbilled_s') or 0:,.0f} s are in "
                f"{billed_run / 'cost.json'} as session {billed[-1].get('index')}, status interrupted"
                if len(billed) > sessions else "")
        err_console.print(f"merge interrupted: the adapter is untouched, {_merge_left(run_dir, out)}{paid}",
                          highlight=False, markup=False)
        raise typer.Exit(130)
    except Exception as exc:  # an OOM loading the 16-bit base: billed by merge_adapter, said in one line
        _fail(_merge_failed(exc, billed_run, len(ledger_doc(billed_run).get("sessions") or []) > sessions,
                            _merge_left(run_dir, out)))
        return
    console.print(f"merged model: {path}", highlight=False)
    after = ledger_doc(billed_run)
    billed = after.get("sessions") or []
    if len(billed) > sessions:  # a run folder's merge is a session of its bill
        from arzan.numbers import kzt

        s, where = billed[-1], billed_run / "cost.json"
        if s.get("unbilled_s"):  # another kind of machine than the run's: time recorded, not priced
            console.print(f"recorded {s['unbilled_s']:,.0f} s unbilled (this machine is not the run's kind) as "
                          f"session {s['index']} of {where}", highlight=False)
        else:
            console.print(f"billed {kzt(s['money']['kzt'])} ₸ for {s['billed_seconds']:,.0f} s as session "
                          f"{s['index']} of {where} (total now {kzt(after['money']['kzt'])} ₸)",
                          highlight=False)
    from arzan.evaluation.runner import past_cap_note

    if len(billed) > sessions and (passed := past_cap_note(after, "merge")) is not None:
        console.print(f"note: {passed}", highlight=False, markup=False)
    if (unfinished := _unfinished_run(billed_run, "this is a merge of its adapter so far")) is not None:
        console.print(f"note: {unfinished}", highlight=False, markup=False)


@app.command()
def estimate(
    recipe: Path = typer.Argument(..., metavar="RECIPE", help="Recipe YAML."),
    set_: list[str] = typer.Option([], "--set", metavar="FIELD=VALUE",
                                   help="Override a field: --set train.num_train_epochs=1"),
    gpu: Optional[str] = typer.Option(None, "--gpu", metavar="GPU", help="Only this catalog GPU (default: every one)."),
    provider: Optional[str] = typer.Option(None, "--provider", metavar="PROVIDER", help="Only this provider's prices."),
    budget: Optional[str] = typer.Option(None, "--budget", metavar="CAP",
                                         help="Check against a cap: 5000KZT, 10USD or 3h."),
    size: Optional[str] = typer.Option(None, "--size", metavar="SIZE",
                                       help="Model size when its config is out of reach: 8B, 3B, 1B."),
    tokenizer: Optional[Path] = typer.Option(None, "--tokenizer", metavar="DIR",
                                             help="A local copy of the model's tokenizer."),
    sample_rows: int = typer.Option(20_000, "--sample-rows", metavar="N", min=1,
                                    help="Above this many rows, tokenize a sample."),
    as_json: bool = typer.Option(False, "--json", metavar="", help="Print the estimate as JSON."),
    price: Optional[float] = typer.Option(None, "--price", metavar="USD",
                                          help="Your own price, USD per GPU-hour (as arzan train "
                                          "--price): the row for this machine is priced at it."),
) -> None:
    """What a run will cost on every catalog GPU, in tenge and dollars, before you rent one.

    Exits 3 when the estimate is over the recipe's or --budget's cap, so a script can stop there.
    """
    from arzan.estimate import catalog_within_cap, check_budget, render
    from arzan.estimate import estimate as run_estimate
    from arzan.recipe import load_recipe

    try:
        if tokenizer is not None and not tokenizer.is_dir():
            raise ArzanError(f"--tokenizer {tokenizer}: no such folder (give a folder saved with save_pretrained)")
        if provider is not None:
            from arzan.cost.prices import check_provider

            check_provider(provider)
        _check_price(price)
        loaded = load_recipe(recipe, set_)
        if (cap := parse_budget(budget)) is not None:
            loaded.budget = cap
        if price is not None:  # as `arzan train --price` bills it
            loaded.cost = loaded.cost.model_copy(update={"usd_per_gpu_hour": price, "kzt_per_gpu_hour": None})
        est = run_estimate(loaded, gpu=gpu, provider=provider, sample_rows=sample_rows, size_hint=size,
                           tokenizer=tokenizer)
    except ArzanError as exc:
        _fail(exc, recipe)
        return
    asked = [o for o in est.options if o.billed_seconds is not None] if gpu else []
    cheapest = min(asked, key=lambda o: o.kzt) if asked else None  # --gpu: the budget is for that GPU
    over = check_budget(loaded, est, cheapest)
    if as_json:  # stdout is the JSON alone, for a script to parse; the verdict is in it and on stderr
        import json

        console.print_json(json.dumps({**est.to_dict(), "over_budget": over}, default=str, ensure_ascii=False))
    else:
        console.print(render(est))
        from arzan.billing import cap_line

        if (caps := cap_line(loaded)) is not None:
            console.print(caps, highlight=False, markup=False)
        if (catalog := catalog_within_cap(loaded, est)) is not None:
            console.print(catalog, highlight=False, markup=False)
    if over is not None:
        (err_console if as_json else console).print(f"[yellow]over budget:[/] {over}", highlight=False,
                                                    soft_wrap=True)
        raise typer.Exit(3)


@app.command()
def prices(
    gpu: Optional[str] = typer.Option(None, "--gpu", metavar="GPU", help="Only this GPU (e.g. A100-80GB, H100, T4)."),
    currency: str = typer.Option("KZT", "--currency", metavar="KZT|USD", help="KZT or USD."),
) -> None:
    """The GPU price catalog, with each price's source and date."""
    from arzan.cost.prices import prices_table

    try:
        if currency.upper() not in {"KZT", "USD"}:
            raise ArzanError(f"--currency: '{currency}' is not KZT or USD")
        console.print(prices_table(gpu, currency.upper()))
    except ArzanError as exc:
        _fail(exc)


@app.command(name="eval")
def eval_(
    target: str = typer.Argument(..., metavar="TARGET", help="Run folder, adapter folder, model folder or hub id."),
    tasks: str = typer.Option("kazakh", "--tasks", metavar="TASKS",
                              help="Suite (kazakh, kazakh_full, kazakh_local) or task names, comma-separated."),
    limit: Optional[int] = typer.Option(None, "--limit", metavar="N", min=1,
                                        help="At most N items per task (cheap runs)."),
    data_dir: Optional[Path] = typer.Option(None, "--data-dir", metavar="DIR",
                                            help="Local Kazakh eval files (Belebele, kkCOPA)."),
    batch_size: Optional[str] = typer.Option(None, "--batch-size", metavar="N|auto",
                                             help="lm-eval batch size (or auto)."),
    load_in_4bit: Optional[bool] = typer.Option(None, "--load-in-4bit/--no-load-in-4bit", metavar="",
                                                help="Base in 4-bit "
                                                "(NF4, CUDA). Default: as the run was trained (QLoRA: 4-bit)."),
    chat_template: Optional[bool] = typer.Option(None, "--chat-template/--no-chat-template", metavar="",
                                                 help="Questions in the model's chat template, as an instruct "
                                                 "fine-tune was trained; score its base the same way. Default: as "
                                                 "the run's recipe says (eval.chat_template), else off."),
) -> None:
    """Score a fine-tune (base + adapter) on the Kazakh suite with lm-evaluation-harness."""
    from arzan.evaluation import gain_table, run_eval
    from arzan.evaluation.session import sigterm_as_ctrl_c

    result = None
    try:
        # a SIGTERM outside run_eval's own handling (loading, printing the table) is one line too, not 143
        with sigterm_as_ctrl_c():
            task_list: list[str] | str = tasks if "," not in tasks else \
                [t.strip() for t in tasks.split(",") if t.strip()]
            result = run_eval(target, tasks=task_list, limit=limit, data_dir=data_dir, batch_size=batch_size,
                              load_in_4bit=load_in_4bit, chat_template=chat_template)
            console.print(gain_table(result))
            console.print(f"scores written to {result['path']}")
            if (unfinished := _unfinished_run(Path(result["path"]).parent)) is not None:
                console.print(f"note: {unfinished}", highlight=False, markup=False)
            if result.get("note"):
                console.print(f"note: {result['note']}", highlight=False, markup=False)
    except ArzanError as exc:
        _fail(exc)
    except OSError as exc:
        _fail(_os_error(exc, "eval.json and cost.json are written whole or not at all, so the earlier ones stand"))
    except KeyboardInterrupt as exc:  # its time is already in the run's ledger (evaluation.session)
        said = (f"interrupted after the scores were written to {result['path']} (and billed, for a run folder)"
                if result is not None else str(exc) or "evaluation interrupted: nothing scored was kept")
        err_console.print(said, highlight=False, markup=False)
        raise typer.Exit(130)


@app.command(name="compare")
def compare_(
    sources: list[str] = typer.Argument(..., metavar="SOURCES", help="Run folders or eval.json files."),
    markdown: bool = typer.Option(False, "--markdown", metavar="", help="Print Markdown instead of a table."),
    no_references: bool = typer.Option(False, "--no-references", metavar="",
                                       help="Leave out published reference rows."),
    detail: bool = typer.Option(False, "--detail", metavar="",
                                help="Every subtask (e.g. each UNT subject), not one score "
                                "per task."),
    base: Optional[str] = typer.Option(None, "--base", metavar="FOLDER",
                                       help="The base model's eval folder: every other row's gain "
                                       "and ₸ per point gained are against it (found by name when not given)."),
) -> None:
    """Scores of runs side by side, with their cost, gain over the base model and published rows."""
    from arzan.evaluation import compare, scores_markdown, scores_table

    try:
        rows = compare(sources, references=not no_references, detail=detail, base=base)
        console.print(scores_markdown(rows) if markdown else scores_table(rows))
    except ArzanError as exc:
        _fail(exc)


@app.command()
def report(
    run_dirs: list[Path] = typer.Argument(..., metavar="FOLDERS",
                                        help="One or more run folders, and any `arzan eval` folders of "
                                          "the base model or KazLLM to set beside their scores."),
    out: Path = typer.Option(Path("report.html"), "--out", metavar="FILE", help="HTML file; Markdown goes beside it."),
    title: Optional[str] = typer.Option(None, "--title", metavar="TEXT",
                                         help="The page's title (default: 'arzan report:' and the runs' names)."),
) -> None:
    """One self-contained HTML page (and Markdown) with what each run cost and what it bought."""
    from arzan.report import build_report

    try:
        path = build_report(run_dirs, out, title=title)
    except ArzanError as exc:
        _fail(exc)
        return
    console.print(f"report: {path} (and {path.with_suffix('.md')})")


def run() -> None:
    """The `arzan` console script and `python -m arzan`: the typer app, with a usage mistake (an
    option out of range, a missing argument, a misspelt command) as one `error:` line and exit 2,
    like every other bad input, instead of a framed usage panel."""
    from rich.markup import escape

    from typer import Abort

    try:  # typer >= 0.20 vendors click as typer._click
        from typer._click.exceptions import NoArgsIsHelpError, UsageError
    except ImportError:  # pragma: no cover - older typer on plain click
        from click.exceptions import NoArgsIsHelpError, UsageError

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    global _HUB_NOTE
    if len(sys.argv) > 1 and sys.argv[1] in COMMANDS and "--help" not in sys.argv:
        _HUB_NOTE = offline_if_unreachable()
    try:
        code = app(prog_name="arzan", standalone_mode=False)
    except NoArgsIsHelpError as exc:  # `arzan` alone: the help is already printed
        sys.exit(exc.exit_code)
    except UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "arzan"
        err_console.print(f"[bold red]error:[/] {escape(exc.format_message())} (see {escape(where)} --help)",
                          highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except Abort:  # Ctrl-C outside a training (which handles its own signals)
        err_console.print("aborted", highlight=False)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
