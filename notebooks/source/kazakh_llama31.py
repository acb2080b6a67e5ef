# %% [markdown]
# # @@TITLE@@
#
# A LoRA fine-tune of **Llama-3.1-8B-Instruct** on public Kazakh instruction data with arzan
# (Unsloth + TRL), with the bill in tenge and dollars next to the model. It runs the recipe
# [`recipes/@@RECIPE@@.yaml`](../recipes/@@RECIPE@@.yaml), embedded below so this notebook needs no
# clone of the repository.
#
# **Before you start**
# 1. *Runtime → Change runtime type →* **@@GPU@@** GPU.
# 2. Llama 3.x is gated: accept its licence on the Hugging Face hub, then add a Colab secret named
#    `HF_TOKEN` (the key icon on the left). arzan reads it from the environment and never writes it.
# 3. arzan is not on PyPI: put a copy of its repository folder on your Google Drive as
#    `MyDrive/arzan` (or set `ARZAN_SPEC` below to a wheel or a git URL that pip can install).
# 4. *Runtime → Run all.* If Colab disconnects, open the notebook again and *Run all*: the run folder
#    lives on Google Drive, and the notebook resumes from its last checkpoint; the ledger adds the new
#    session to the same bill, never counting the old one twice. A run the budget stopped continues
#    the same way once `BUDGET` below holds a higher cap.
#
# **What it should cost** — derived, not measured (how: see the recipe header and `recipes/README.md`):
#
# @@EXPECTED@@

# %% tags=["parameters"]
RECIPE = "recipes/@@RECIPE@@.yaml"  # written from the copy embedded below when the file is missing
OVERRIDES: list = []  # --set style overrides for a new run, e.g. ["train.num_train_epochs=1"]
BUDGET = None  # e.g. "5000KZT", "10USD", "3h": a new run's cap, or a raised one to continue a stopped run
ALLOW_OVER_BUDGET = False  # start although the estimate is over BUDGET (the meter still stops at the cap)
DRIVE_ROOT = "/content/drive/MyDrive/arzan-runs"  # Colab wipes /content on disconnect; Drive survives
OUT = None  # run folder; None: DRIVE_ROOT/<recipe name> in Colab, runs/<recipe name> elsewhere
ARZAN_SPEC = "/content/drive/MyDrive/arzan"  # the repository folder on Drive, or a wheel / git URL for pip
SAMPLE_IN_4BIT = @@SAMPLE_IN_4BIT@@  # load the base in 4-bit for the sample answers (fits a 16 GB T4)
MAX_NEW_TOKENS = 128
SCORE_TASKS = None  # e.g. "kazakh": score the base and the fine-tune on the same Kazakh benchmarks (GPU time)
SCORE_LIMIT = 200  # items per task for SCORE_TASKS (None: every item; the full suite takes much longer)
SCORE_DATA_DIR = None  # a folder with local copies of arzan's Kazakh eval files; None: from the hub
PUSH_TO = None  # e.g. "your-name/kazakh-llama31-lora": upload the adapter (HF_TOKEN needs write access)

# %% [markdown]
# ## Google Drive and the install (Colab only)
# Drive first: the run folder lives there, and so does the copy of arzan this installs. Pinned to the
# versions arzan is tested with (`pyproject.toml`). Outside Colab these cells do nothing: use an
# environment where arzan is installed.

# %% tags=["colab-only"]
import os
import sys

IN_COLAB = "google.colab" in sys.modules
if IN_COLAB:
    from google.colab import drive, userdata

    drive.mount("/content/drive")
    try:
        os.environ["HF_TOKEN"] = userdata.get("HF_TOKEN")  # into this process only; never printed
    except Exception:
        print("no HF_TOKEN secret: gated models such as Llama 3.x will not download")
else:
    print("not in Colab: no Drive to mount; the run folder stays on this machine")

# %% tags=["colab-only"]
import subprocess
from pathlib import Path

PINS = ["transformers==5.17.0", "trl==1.14.2", "peft==0.21.2", "datasets==4.8.5", "accelerate==1.15.0",
        "unsloth==2026.10.9", "unsloth_zoo==2026.10.9", "bitsandbytes==0.50.2", "lm-eval==0.4.13"]
if IN_COLAB:
    local = ARZAN_SPEC.startswith(("/", "."))
    if local and not Path(ARZAN_SPEC).exists():
        raise SystemExit(f"{ARZAN_SPEC}: no copy of arzan there; upload the repository folder to your Drive "
                         "(or a wheel: pip wheel . --no-deps -w dist) and set ARZAN_SPEC to its path")
    spec = f"{ARZAN_SPEC}[gpu,eval]" if local and Path(ARZAN_SPEC).is_dir() else ARZAN_SPEC
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", spec, *PINS], check=True)
else:
    print("not in Colab: skipping pip install")

# %% [markdown]
# ## The recipe
# The copy below is generated from the recipe file by `notebooks/make_notebooks.py`; a test fails if
# the two ever differ.

# %%
from pathlib import Path

RECIPE_TEXT = r'''@@RECIPE_TEXT@@'''
recipe_path = Path(RECIPE)
if not recipe_path.is_file():
    recipe_path.parent.mkdir(parents=True, exist_ok=True)
    recipe_path.write_text(RECIPE_TEXT, encoding="utf-8")

# %%
import torch

if torch.cuda.is_available():  # unsloth must be imported before transformers/trl for its patches to apply
    try:
        import unsloth  # noqa: F401
    except Exception as exc:
        print(f"unsloth is unavailable ({exc}); a recipe with backend: unsloth will stop with a clear error")

# %% [markdown]
# ## Run folder: new, resumed, or already done
# A folder with a ledger resumes from its last checkpoint; a finished one is only shown. A folder
# left half-made by a crash before its ledger existed is moved aside (never deleted).

# %%
import json

from arzan.recipe import load_recipe
from arzan.runfolder import is_run_folder

recipe = load_recipe(recipe_path, OVERRIDES)
out = Path(OUT or (f"{DRIVE_ROOT}/{recipe.name}" if IN_COLAB else f"runs/{recipe.name}"))
if is_run_folder(out):
    mode = "done" if json.loads((out / "cost.json").read_text("utf-8"))["status"] == "finished" else "resume"
elif out.exists() and any(out.iterdir()):
    mode = "overwrite"
else:
    mode = "new"
print(f"run folder: {out} · mode: {mode}")

# %% [markdown]
# ## Train
# One line per logging step, with the money spent so far. Stopping the cell (or a Colab
# disconnect) saves a checkpoint and the ledger; *Run all* again continues.

# %%
from rich.console import Console

from arzan.cli import parse_budget
from arzan.errors import ArzanError
from arzan.train import train_from_recipe

if mode == "done":
    ledger = json.loads((out / "cost.json").read_text("utf-8"))
    print("this run already finished; showing its results")
else:
    if mode == "resume" and OVERRIDES:
        print("OVERRIDES apply to a new run: this one continues with its own recipe.yaml (a cap: BUDGET)")
    try:
        result = train_from_recipe(recipe_path, OVERRIDES, out=out, mode=mode, console=Console(),
                                   budget=parse_budget(BUDGET), allow_over_budget=ALLOW_OVER_BUDGET)
    except ArzanError as exc:  # one line, as `arzan train` prints it, instead of a traceback
        hints = [h for flag, h in (("--budget", "BUDGET holds the cap"),
                                   ("--allow-over-budget", "ALLOW_OVER_BUDGET = True starts anyway"),
                                   ("--resume", "Run all continues it"),
                                   ("--overwrite", "set OUT to a new folder to start again; this one stays"))
                 if flag in str(exc)]
        raise SystemExit(f"error: {exc}" + (f" (in this notebook: {'; '.join(hints)})" if hints else "")) from None
    ledger = result.ledger
    print(result.status, "·", result.note or "", "·", ledger.get("status_reason") or "")
    if result.status == "stopped_budget" and "--budget " in (ledger.get("resume_command") or ""):
        cap = ledger["resume_command"].split("--budget ")[-1]
        print(f"to continue: set BUDGET = {cap!r} in the parameters cell and Run all")

# %% [markdown]
# ## The bill
# Every figure comes from the run's ledger, `cost.json`, next to the adapter.

# %%
from IPython.display import Markdown, display

from arzan.modelcard import cost_table

money, price = ledger["money"], ledger["price"]
print(f"{ledger['status']} · {ledger['billed_seconds'] / 3600:.2f} h billed · {money['kzt']:,.0f} ₸ = "
      f"{money['usd']:,.2f} $ at {price['usd_per_gpu_hour']} $/GPU-hour ({price['source']})")
display(Markdown(cost_table(ledger)))

# %% [markdown]
# ## Kazakh answers from the fine-tune
# The base model plus the saved adapter, loaded as anyone using the adapter will load it
# (transformers + peft). Each answer should end on its own: one that runs to the token limit means
# the model never learned to stop.

# %%
import gc

from arzan.evaluation.generation import generation_check
from arzan.export import load_for_inference

gc.collect()
if torch.cuda.is_available():
    torch.cuda.empty_cache()
if (out / "adapter" / "adapter_config.json").is_file():
    model, tokenizer = load_for_inference(out, load_in_4bit=SAMPLE_IN_4BIT and torch.cuda.is_available())
    check = generation_check(model, tokenizer, max_new_tokens=MAX_NEW_TOKENS)
    for answer in check["prompts"]:
        print(f"» {answer['prompt']}\n  {answer['text']}\n")
    print(check["summary"])
else:
    print("no adapter yet: the run stopped before its first save")

# %% [markdown]
# ## Kazakh benchmarks: the base and the fine-tune on the same items (optional)
# With `SCORE_TASKS` set, lm-evaluation-harness scores the fine-tune and its base model on the same
# tasks and items, a QLoRA run on its 4-bit base as it was trained, and the base the same way. The
# fine-tune's scoring is added to the run's bill as its own session; the base's scores are kept on
# Drive beside the runs and reused by every later run of the same base. The table prices only the
# points the fine-tune gained over its base, and only where the gain is beyond noise.

# %%
import re


def scored(eval_json: Path, tasks: list, limit, four_bit: bool, adapter_sha: str | None = None) -> bool:
    """Already scored on these tasks and items, with this adapter (a reopened notebook): not paid twice."""
    try:
        doc = json.loads(eval_json.read_text("utf-8"))
        heads, sha = doc["tasks"], doc["model"].get("adapter_sha256")
    except (OSError, ValueError, KeyError, AttributeError):
        return False
    return sha == adapter_sha and all(t in heads and heads[t].get("limit") == limit
                                      and bool(heads[t].get("base_4bit")) == four_bit for t in tasks)


if SCORE_TASKS and (out / "adapter" / "adapter_config.json").is_file():
    from IPython.display import Markdown, display

    from arzan.evaluation import compare, run_eval, scores_markdown, suites
    from arzan.evaluation.targets import resolve_target
    from arzan.fileio import sha256

    model = None  # the sample-answer model: its memory goes back before lm-eval loads its own
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    try:
        tasks = suites.resolve(SCORE_TASKS, SCORE_DATA_DIR).tasks  # a suite's task names; checks local files
        target = resolve_target(out)
        four_bit = target.trained_4bit and torch.cuda.is_available()  # as run_eval scores it by default
        adapter_sha = sha256(target.adapter / "adapter_model.safetensors")
        if not scored(out / "eval.json", tasks, SCORE_LIMIT, four_bit, adapter_sha):
            run_eval(out, tasks=SCORE_TASKS, limit=SCORE_LIMIT, data_dir=SCORE_DATA_DIR)
        base_name = json.loads((out / "eval.json").read_text("utf-8"))["model"]["base"]
        base_dir = out.parent / "evals" / (re.sub(r"[^\w.-]+", "_", base_name) + ("-4bit" if four_bit else ""))
        if not scored(base_dir / "eval.json", tasks, SCORE_LIMIT, four_bit):
            run_eval(base_name, tasks=SCORE_TASKS, limit=SCORE_LIMIT, data_dir=SCORE_DATA_DIR, out_dir=base_dir,
                     load_in_4bit=four_bit)
        display(Markdown(scores_markdown(compare([base_dir, out]))))
    except ArzanError as exc:  # one line, as `arzan eval` prints it
        raise SystemExit(f"error: {exc}") from None
elif SCORE_TASKS:
    print("no adapter yet: nothing to score")

# %% [markdown]
# ## Share it (optional)
# Uploads the adapter with its `cost.json` and `recipe.yaml` to a private hub repo; the upload's
# minutes join the run's bill as a session of their own. The token is read from `HF_TOKEN` and never
# written into the run folder.

# %%
if PUSH_TO:
    from arzan.export import push_to_hub

    print(push_to_hub(out, PUSH_TO, private=True))
