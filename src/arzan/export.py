"""Taking a fine-tune out of arzan: a merged 16-bit model, or the adapter, on the Hugging Face hub.

Why the base is always reloaded unquantised before merging: folding LoRA deltas into 4-bit (QLoRA)
weights re-quantises the sum, and the merged model then scores worse than the adapter it came from.
So the base is loaded in full precision (float32 on a CPU, where the merge is exact; the requested
16-bit dtype on a GPU), merged, and only then cast for saving. Unsloth's pre-quantised mirrors
(`...-bnb-4bit`) are mapped back to their 16-bit repos for the same reason.

Why the hub token is read from the environment and passed to the client only: a run folder is
meant to be copied, zipped and published, so nothing that writes into it may ever see the token.
"""

from __future__ import annotations

import json
import os
import shutil
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from arzan.errors import ArzanError, first_line
from arzan.runfolder import recipe_model

DTYPES = ("bfloat16", "float16", "float32")
_QUANT_SUFFIXES = ("-unsloth-bnb-4bit", "-bnb-4bit")


def locate(path: str | Path) -> tuple[Path, Path | None]:
    """(adapter folder, run folder or None) from either a run folder or an adapter folder."""
    p = Path(path)
    if (p / "adapter" / "adapter_config.json").is_file():
        return p / "adapter", p
    if (p / "adapter_config.json").is_file():
        run = p.parent if (p.parent / "recipe.yaml").is_file() else None
        return p, run
    if (p / "recipe.yaml").is_file() and (p / "cost.json").is_file():  # a run that has saved no adapter yet
        from arzan.runfolder import ledger_doc

        from arzan.cost.ledger import killed_pid

        led = ledger_doc(p)
        status = led.get("status") or "unknown"
        if killed_pid(led) is not None:  # kill -9: nobody will save one
            raise ArzanError(f"{p}: this run was killed before its training saved an adapter (its ledger still says "
                             f"running, its process is gone); continue it with: arzan train --resume {p}")
        raise ArzanError(f"{p}: this run has no adapter to merge yet (its status is {status}); merge it once "
                         "its training has saved one")
    raise ArzanError(f"{p}: neither a run folder with adapter/ nor an adapter folder (no adapter_config.json)")


def check_adapter(adapter: Path) -> None:
    """The adapter's config and weights readable before a base of gigabytes is loaded for them: a copy
    cut short (a Drive sync, a full disk) used to fail only once the base was in memory, billed."""
    try:
        if not isinstance(json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8")), dict):
            raise ValueError("adapter_config.json is not a JSON object")
    except (OSError, ValueError) as e:  # ValueError: bad JSON, or not UTF-8 text
        raise unreadable_adapter(adapter, e) from None
    weights = adapter / "adapter_model.safetensors"
    if not weights.is_file():
        if (adapter / "adapter_model.bin").is_file():  # an older peft's pickle: read at load time
            return
        raise unreadable_adapter(adapter, FileNotFoundError("no adapter_model.safetensors"))
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt") as f:  # the header only: milliseconds, not a load
            if not list(f.keys()):
                raise ValueError("adapter_model.safetensors holds no tensors")
    except Exception as e:  # SafetensorError for a cut or foreign file
        raise unreadable_adapter(adapter, e) from None


def unreadable_adapter(adapter: Path, exc: Exception) -> ArzanError:
    """One line for a damaged adapter, naming the run's newest complete checkpoint, which holds another copy."""
    from arzan.errors import described
    from arzan.runfolder import RunFolder

    kept = RunFolder(adapter.parent).last_checkpoint()  # by step, complete ones only: not a "checkpoint-500 copy 2"
    other = f"the run's last checkpoint ({kept}) holds another" if kept is not None and \
        (kept / "adapter_model.safetensors").is_file() else "copy it again from where it was trained"
    return ArzanError(f"{adapter}: the adapter cannot be read ({described(exc)}); a copy cut short? {other}")


def unquantised_name(name: str) -> str:
    """'unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit' -> 'unsloth/Meta-Llama-3.1-8B-Instruct'."""
    for suffix in _QUANT_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def base_model_of(adapter: Path, run: Path | None) -> tuple[str, str | None]:
    """The base the adapter was trained on: the run's recipe first (the name the user chose, which
    survives unsloth's renaming), else the adapter's own config."""
    from arzan.model import resolve_model_name

    if run is not None:
        model = recipe_model(run)
        if model.get("name"):  # a pre-quantised repo (…-bnb-4bit) is merged into its 16-bit original
            name = unquantised_name(model["name"])
            return resolve_model_name(name), model.get("revision") if name == model["name"] else None
    try:
        cfg = json.loads((adapter / "adapter_config.json").read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArzanError(f"{adapter / 'adapter_config.json'}: not valid JSON ({exc})") from None
    name = cfg.get("base_model_name_or_path") if isinstance(cfg, dict) else None
    if not name:
        raise ArzanError(f"{adapter}: adapter_config.json names no base model; pass base_model=")
    return resolve_model_name(unquantised_name(name)), cfg.get("revision")


def _device(device: str | None) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def _dtype(name: str, device: str) -> Any:
    import torch

    if name == "auto":
        if device == "cpu":
            return torch.float32
        from arzan.model import gpu_dtype

        return gpu_dtype()
    if name not in DTYPES:
        raise ArzanError(f"dtype '{name}': use one of {', '.join(DTYPES)}")
    return getattr(torch, name)


def load_for_inference(path: str | Path, dtype: str = "auto", load_in_4bit: bool = False,
                       device: str | None = None, base_model: str | None = None,
                       trust_remote_code: bool = False) -> tuple[Any, Any]:
    """Base + adapter as the fine-tune is used: (PeftModel in eval mode, tokenizer)."""
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    adapter, run = locate(path)
    name, revision = (base_model, None) if base_model else base_model_of(adapter, run)
    trust_remote_code = trust_remote_code or recipe_model(run).get("trust_remote_code") is True  # as trained
    device = _device(device)
    kwargs: dict[str, Any] = {"revision": revision, "dtype": _dtype(dtype, device), "trust_remote_code": trust_remote_code}
    config = AutoConfig.from_pretrained(name, revision=revision, trust_remote_code=trust_remote_code)
    if getattr(config, "quantization_config", None) and not load_in_4bit:
        raise ArzanError(f"{name}: a quantised checkpoint; give the unquantised base with base_model=")
    if load_in_4bit:
        if device != "cuda":
            raise ArzanError("load_in_4bit needs a CUDA GPU (bitsandbytes); load in 16/32-bit on a CPU")
        from arzan.model import nf4_config

        kwargs["quantization_config"] = nf4_config(kwargs["dtype"])
    if device == "cuda":
        kwargs["device_map"] = {"": 0}
    try:
        base = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as exc:
        raise ArzanError(f"cannot load base model '{name}': {first_line(exc)}") from None
    tok_src = adapter if (adapter / "tokenizer_config.json").is_file() else name
    tokenizer = AutoTokenizer.from_pretrained(tok_src, trust_remote_code=trust_remote_code)
    try:
        model = PeftModel.from_pretrained(base, adapter)
    except Exception as exc:  # safetensors, json and peft each raise their own kind for a damaged file
        raise unreadable_adapter(adapter, exc) from None
    model.eval()
    return model, tokenizer


PARTIAL_MARK = ".arzan-merge-partial"


def _partial_is_ours(out: Path) -> bool:
    """Whether `<out>.partial` is an earlier merge's unfinished output (arzan marks it when it starts),
    which the next merge may remove; one arzan did not make is refused, never deleted."""
    partial = out.with_name(out.name + ".partial")
    if not partial.exists():
        return False
    if partial.is_dir() and (partial / PARTIAL_MARK).is_file():
        return True
    from arzan.runfolder import is_run_folder

    if partial.is_dir() and partial.name == "merged.partial" and is_run_folder(partial.parent):
        return True  # a run folder's own merge target, cut short by an arzan from before the mark
    raise ArzanError(f"{partial}: exists and is not an unfinished arzan merge (the merge writes there first); "
                     "move it aside or choose another --out")


def merge_adapter(path: str | Path, out_dir: str | Path | None = None, dtype: str = "bfloat16",
                  device: str | None = None, base_model: str | None = None, bill: bool = True) -> Path:
    """Write base + LoRA as one ordinary transformers model (no peft needed to use it).

    On a CPU the merge runs in float32 (an 8B model then needs ~32 GB of RAM) and is cast to
    `dtype` when saved; on a GPU it runs in `dtype` (~16 GB of VRAM for 8B in bf16).
    """
    if dtype not in DTYPES:
        raise ArzanError(f"dtype '{dtype}': use one of {', '.join(DTYPES)}")
    adapter, run = locate(path)
    check_adapter(adapter)
    out = Path(out_dir) if out_dir else (run or adapter.parent) / "merged"
    if out.exists() and not out.is_dir():
        raise ArzanError(f"{out}: is a file; --out names a folder for the merged model")
    if out.exists() and any(out.iterdir()):
        raise ArzanError(f"{out}: already exists and is not empty; choose another --out or move it aside")
    _partial_is_ours(out)  # before minutes of loading: a folder of the user's by that name is refused
    from arzan.runfolder import check_writable, evaluating

    check_writable(out.parent, "choose another --out")  # before minutes of loading and merging
    device = _device(device)
    # `bill` False: the caller owns the ledger (a training's save_merged, timed as its save phase)
    billed = bill and run is not None and (run / "cost.json").is_file()
    if billed:  # the merge's minutes join the run's bill, as an eval's do; not while a training writes it
        from arzan.evaluation.runner import _refuse_while_training

        _refuse_while_training(run, "arzan merge")
        check_writable(run, "arzan merge adds its session to cost.json there")
    from arzan.evaluation.session import billed_session

    # Ctrl-C, an OOM, a full disk: the minutes it ran are paid for all the same; once the merged model
    # is there, its bill goes in whole and its card shows it
    with evaluating(run, "arzan merge is merging", device=device, phase="save") if billed else nullcontext():
        with billed_session(run, device, then=lambda: write_merged_card(out, adapter, run, dtype, device,
                                                                          base_model)) if billed else nullcontext():
            path = _merge(adapter, run, out, dtype, device, base_model)
    return path


def _merge(adapter: Path, run: Path | None, out: Path, dtype: str, device: str, base_model: str | None) -> Path:
    compute = "float32" if device == "cpu" else dtype
    model, tokenizer = load_for_inference(adapter, dtype=compute, device=device, base_model=base_model)
    merged = model.merge_and_unload(safe_merge=True)
    merged = merged.to(_dtype(dtype, device))
    # written beside the target and renamed at the end: a merge cut short (preemption, a full disk)
    # never leaves a half-written model that looks like a whole one
    partial = out.with_name(out.name + ".partial")
    if _partial_is_ours(out):
        shutil.rmtree(partial)  # our own unfinished output from an earlier attempt, never a user's file
    partial.mkdir(parents=True)
    (partial / PARTIAL_MARK).write_text("an unfinished arzan merge; removed by the next one\n", encoding="utf-8")
    merged.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    write_merged_card(partial, adapter, run, dtype, device, base_model)
    if out.exists():
        out.rmdir()  # empty (checked above)
    (partial / PARTIAL_MARK).unlink()
    partial.rename(out)
    return out


def training_merge_dtype(device: str) -> str:
    """What a training's `output.save_merged` saves in: bf16 on a GPU, float32 on a CPU (exact there)."""
    return "bfloat16" if device == "cuda" else "float32"


def write_merged_card(out: Path, adapter: Path, run: Path | None, dtype: str, device: str,
                      base_model: str | None = None) -> None:
    """merged/README.md, from the ledger as it stands: written with the model, and again once the
    bill has the merge in it (a standalone merge's session, a training's final ledger)."""
    from arzan.fileio import write_text_atomic

    trained_on = recipe_model(run).get("name")  # the name the user chose, not the tiny model's cache folder
    name = base_model or (unquantised_name(trained_on) if trained_on else base_model_of(adapter, run)[0])
    compute = "float32" if device == "cpu" else dtype
    write_text_atomic(out / "README.md", merged_card(name, adapter, dtype, compute, device, run))


def merged_card(base: str, adapter: Path, dtype: str, compute: str, device: str, run: Path | None) -> str:
    """A short card: what was merged into what, how, and (from the ledger) what the training cost."""
    from arzan.modelcard import hub_base_model

    meta = {"library_name": "transformers", "language": ["kk"],
            "pipeline_tag": "text-generation", "tags": ["arzan", "lora", "merged", "kazakh"]}
    if (hub_id := hub_base_model(base)) is not None:  # a local folder or the tiny model is no Hub link
        meta = {"base_model": hub_id, "base_model_relation": "merge", **meta}
    body = [f"# Merged model\n\nLoRA adapter `{adapter.name}` merged into `{base}` with "
            f"`arzan.export.merge_adapter`: the base was reloaded unquantised ({compute} on {device}), "
            f"merged, and saved as {dtype}. It loads with plain transformers; no peft needed.\n"]
    ledger_path = run / "cost.json" if run else None
    if ledger_path is not None and ledger_path.is_file():
        from arzan.modelcard import cost_table

        body.append("## Training cost\n\n" + cost_table(json.loads(ledger_path.read_text("utf-8"))) + "\n")
    front = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    return f"---\n{front}---\n\n" + "\n".join(body)


def hub_token() -> str:
    """$HF_TOKEN, or the one-line refusal; `arzan train` asks before a run with push_to_hub starts,
    not after hours of paid training."""
    from arzan.hub import offline

    if offline():
        raise ArzanError("output.push_to_hub: the Hugging Face hub cannot be reached from here (HF_HUB_OFFLINE is "
                         "set); push from a machine online with arzan.export.push_to_hub(RUN_DIR, REPO_ID)")
    token = os.environ.get("HF_TOKEN")
    if not token:
        raise ArzanError("output.push_to_hub: HF_TOKEN is not set: create a write token at "
                         "https://huggingface.co/settings/tokens and export HF_TOKEN=... (arzan never stores it)")
    return token


def push_to_hub(run_dir: str | Path, repo_id: str, private: bool = True, merged: bool = False,
                bill: bool = True) -> str:
    """Upload the adapter (or merged/) with the run's cost.json and recipe.yaml, in one commit.

    The token comes from $HF_TOKEN and goes only to the hub client; the run folder gets a hub.json
    saying where the model went, never with what credential. The upload is billed as a `save`
    session of the run (a merged 8B model is minutes of a rented GPU), finished or failed; the hub
    gets cost.json as it stood before the upload, the run folder's has the upload in it.
    """
    run = Path(run_dir)
    if not (bill and (run / "cost.json").is_file()):
        return _push(run, repo_id, private, merged)
    from arzan.evaluation.session import billed_session

    with billed_session(run, _device(None)):
        return _push(run, repo_id, private, merged)


def _push(run: Path, repo_id: str, private: bool, merged: bool) -> str:
    from huggingface_hub import CommitOperationAdd, HfApi

    folder = run / ("merged" if merged else "adapter")
    if not folder.is_dir() or not any(folder.iterdir()):
        hint = "run merge_adapter first" if merged else "train first"
        raise ArzanError(f"{folder}: nothing to upload ({hint})")
    token = hub_token()
    ops = [CommitOperationAdd(path_in_repo=p.relative_to(folder).as_posix(), path_or_fileobj=str(p))
           for p in sorted(folder.rglob("*")) if p.is_file()]
    ops += [CommitOperationAdd(path_in_repo=f"arzan/{n}", path_or_fileobj=str(run / n))
            for n in ("cost.json", "recipe.yaml") if (run / n).is_file()]
    api = HfApi(token=token)
    try:
        url = str(api.create_repo(repo_id=repo_id, private=private, exist_ok=True, repo_type="model"))
        info = api.create_commit(repo_id=repo_id, operations=ops, repo_type="model",
                                 commit_message=f"arzan: {'merged model' if merged else 'LoRA adapter'} "
                                                f"from run {run.name}")
    except Exception as exc:  # the hub raises many types; say which repo and why, never the token
        raise ArzanError(f"push to {repo_id} failed: {first_line(exc)}"
                         .replace(token, "***")) from None
    record = {"repo_id": repo_id, "url": url, "private": private, "merged": merged,
              "commit": getattr(info, "oid", None), "pushed_at": datetime.now(timezone.utc).isoformat()}
    (run / "hub.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return url
