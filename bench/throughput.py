#!/usr/bin/env python
"""Throughput benchmark: arzan's own training path, timed, priced, and written down with versions.

It runs `arzan.train.train` on a recipe (not a hand-written loop, so it measures what users run)
and reads the run's ledger and metrics.jsonl: steady-state seen and trained tokens/s (the first
logging interval, with its warm-up, left out), step time, peak memory, MFU against the device's
measured peak, and tenge per 1M tokens at catalog prices. Each result is written to
bench/results/<device>-<recipe>-<backend>.json with the exact command, and carries an `entry`
ready to paste into src/arzan/resources/throughput.yaml.

    python bench/throughput.py --mode cpu                  # tiny model, smoke recipe, ~1 min on 2 cores
    python bench/throughput.py --mode gpu                  # Llama-3.1-8B shape, random bf16 weights:
                                                           # LoRA r64 + QLoRA, hf + unsloth, seq 2048 packed
    python bench/throughput.py --mode gpu --model Llama-3.2-1B --configs unsloth-lora,hf-lora --steps 20 \
        --results $OUT                                     # issue 3's check: both backends, same recipe,
                                                           # tokens/s, peak VRAM, loss and ledger of each
    python bench/throughput.py --derive                    # the derived entries of throughput.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

START = time.monotonic()  # --time-limit counts from here
REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import yaml  # noqa: E402

from arzan.recipe import Recipe, load_recipe, recipe_from_dict  # noqa: E402
from arzan.vram import ModelShape, model_flops_per_token, train_flops_per_token  # noqa: E402

TABLE = REPO / "src" / "arzan" / "resources" / "throughput.yaml"


def raw_table() -> dict[str, Any]:
    return yaml.safe_load(TABLE.read_text(encoding="utf-8"))


# --- what ran where -------------------------------------------------------------------------------
def versions() -> dict[str, str | None]:
    from arzan.cost.ledger import git_commit, package_version

    pkgs = ("torch", "transformers", "trl", "peft", "datasets", "accelerate", "bitsandbytes", "unsloth")
    return {"python": platform.python_version(), **{p: package_version(p) for p in pkgs},
            "arzan_commit": git_commit(REPO, short=True)}


def device_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                            "load_avg_1m": os.getloadavg()[0]}
    try:
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if "model name" in line)
    except (OSError, StopIteration):
        pass
    if torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(0), cuda=torch.version.cuda)
    return info


def device_slug(info: dict[str, Any]) -> tuple[str, str]:
    """('h100', 'H100') for a GPU the catalog knows; ('cpu', 'cpu') without one."""
    if "gpu" not in info:
        return "cpu", "cpu"
    from arzan.cost.prices import canonical_gpu
    from arzan.errors import ArzanError

    try:
        name = canonical_gpu(info["gpu"])
    except ArzanError:
        name = "H200" if "H200" in info["gpu"] else info["gpu"].replace("NVIDIA ", "").split()[0]
    return name.lower(), name


# --- one measured run -------------------------------------------------------------------------------
def steady_rate(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Seen/trained tokens per second between the first and last logged training step; the first
    interval (dataloader start, allocator and kernel warm-up) is left out when there are enough rows."""
    logged = [r for r in rows if r.get("loss") is not None]
    if len(logged) < 2:
        raise SystemExit("need at least two logged steps: lower train.logging_steps or raise --steps")
    a, b = (logged[1] if len(logged) >= 3 else logged[0]), logged[-1]
    dt = b["elapsed_s"] - a["elapsed_s"]
    return {"seen_tokens_per_s": (b["tokens_seen"] - a["tokens_seen"]) / dt,
            "trained_tokens_per_s": (b["tokens_trained"] - a["tokens_trained"]) / dt,
            "step_s": dt / (b["step"] - a["step"]), "steps_timed": b["step"] - a["step"]}


def losses(rows: list[dict[str, Any]]) -> list[list[float]]:
    """[step, training loss] for every logged training step of metrics.jsonl."""
    return [[r["step"], r["loss"]] for r in rows if r.get("loss") is not None]


def run_record(run_dir: Path) -> dict[str, Any]:
    """What comes back from a run folder (which itself stays on the machine): the whole ledger, the
    metrics rows and the losses. Whatever is there: a killed run still has its last ledger."""
    out: dict[str, Any] = {"run_dir": str(run_dir)}
    if (run_dir / "cost.json").is_file():
        out["ledger"] = json.loads((run_dir / "cost.json").read_text())
    if (run_dir / "metrics.jsonl").is_file():
        rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
        out["metrics"], out["losses"] = rows, losses(rows)
    return out


def summarize(run_dir: Path, recipe: Recipe, tokens: Any, shape: ModelShape, device: str) -> dict[str, Any]:
    """Everything a throughput entry and the estimator check need, from the run folder alone."""
    led = json.loads((run_dir / "cost.json").read_text())
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    rate = steady_rate(rows)
    logged = [r for r in rows if r.get("loss") is not None]
    evals = [r for r in rows if "eval_loss" in r]
    ph = led["phases"]
    first = logged[0]
    train_start = first["elapsed_s"] - ph["setup"] - ph["data"] - first["tokens_seen"] / rate["seen_tokens_per_s"]
    last = evals[-1] if evals and evals[-1]["step"] == logged[-1]["step"] else logged[-1]
    eval_s = last["elapsed_s"] - logged[-1]["elapsed_s"] if last is not logged[-1] else None
    checkpoint_s = ph["setup"] + ph["data"] + ph["train"] - last["elapsed_s"]  # the save at the last step
    compute_tps = rate["seen_tokens_per_s"] * tokens.padding
    lora = shape.lora_params(recipe.lora.r, recipe.lora.target_modules)
    out = {**rate, "compute_tokens_per_s": compute_tps, "ledger_tokens_per_s": led["tokens"]["per_second"],
           "tokens": led["tokens"], "phases": ph, "billed_seconds": led["billed_seconds"],
           "steps": led["progress"]["step"], "train_start_s": max(train_start, 0.0),
           "checkpoint_s": max(checkpoint_s, 0.0),
           "eval_s": eval_s, "backend": led["model"]["backend"], "backend_version": led["model"]["backend_version"],
           "trainable_params": led["model"]["trainable_params"], "total_params": led["model"]["total_params"],
           "padding": tokens.padding, "context": tokens.context, "losses": losses(rows),
           "final_loss": led["summary"].get("final_loss")}
    if eval_s:
        n_eval_tokens = tokens.eval_seen * tokens.eval_padding
        out["eval_speedup"] = n_eval_tokens / eval_s / compute_tps
    peak = _measured_peak_tflops(device)
    ckpt = bool(recipe.train.gradient_checkpointing if recipe.train.gradient_checkpointing is not None
                else device != "cpu")
    if peak:
        out["mfu"] = model_flops_per_token(shape, tokens.context, lora) * compute_tps / (peak * 1e12)
        out["hfu"] = train_flops_per_token(shape, tokens.context, lora, ckpt) * compute_tps / (peak * 1e12)
        out["peak_tflops"] = peak
    else:
        out["mfu"] = None
        out["mfu_note"] = "n/a on a CPU: no measured peak to divide by"
    out["gradient_checkpointing"] = ckpt
    if recipe.eval.generation_check and ph["eval"] > 0:
        from arzan.evaluation.generation import default_prompts

        n = len(recipe.eval.prompts or default_prompts())
        out["decode_step_s"] = ph["eval"] / (2 * n * recipe.eval.max_new_tokens)  # upper bound on tokens
    return out


def matmul_tflops(device: str = "cuda", n: int = 8192, repeats: int = 20) -> float:
    """This device's 16-bit matrix-product rate, measured here (bf16 where the GPU has it, fp16 on a
    T4, float32 on a CPU): the result file then carries the peak its MFU could be checked against,
    beside the table's `measured_peaks`, which come from the project's device notes."""
    import torch

    if device == "cuda":
        from arzan.model import gpu_dtype

        dtype = gpu_dtype()
    else:
        dtype = torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b  # warm-up: kernel choice, clocks
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    return 2 * n**3 * repeats / (time.perf_counter() - t0) / 1e12


def _measured_peak_tflops(device: str) -> float | None:
    peaks = raw_table().get("measured_peaks", {})
    return peaks.get(device, {}).get("tflops")


def price_per_million(device: str, trained_tps: float, seen_tps: float) -> dict[str, Any]:
    """₸ (and $) per 1M tokens at the catalog's cheapest price for this device."""
    from arzan.cost.prices import load_catalog, lookup
    from arzan.errors import ArzanError

    try:
        e = lookup(device)
    except ArzanError as exc:
        return {"note": f"no catalog price: {exc}"}
    rate = load_catalog().exchange.usd_kzt
    usd_h = e.usd_per_gpu_hour
    return {"provider": e.provider, "usd_per_gpu_hour": usd_h, "source": e.source, "as_of": e.as_of,
            "kzt_per_1m_trained": usd_h * rate / (trained_tps * 3600) * 1e6,
            "kzt_per_1m_seen": usd_h * rate / (seen_tps * 3600) * 1e6,
            "usd_per_1m_trained": usd_h / (trained_tps * 3600) * 1e6}


def measure(recipe: Recipe, device: str, workdir: Path, run_dir: Path | None = None) -> dict[str, Any]:
    """Train once through arzan's real path and summarise the run folder it leaves."""
    import torch

    from arzan.runplan import count_tokens, load_tokenizer
    from arzan.throughput import model_shape
    from arzan.train import train

    tokens = count_tokens(recipe, load_tokenizer(recipe))
    shape = model_shape(recipe)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    result = train(recipe, out=run_dir or workdir / f"run-{time.time_ns()}", mode="new")
    wall = time.perf_counter() - t0
    out = summarize(result.run_dir, recipe, tokens, shape, device)
    out["wall_s"] = wall
    out["run_dir"] = str(result.run_dir)
    if torch.cuda.is_available():
        out["peak_memory_gb"] = torch.cuda.max_memory_allocated() / 1e9
        out["peak_memory_kind"] = "torch.cuda.max_memory_allocated"
        out["peak_memory_reserved_gb"] = torch.cuda.max_memory_reserved() / 1e9
        out["matmul_tflops_here"] = matmul_tflops("cuda")  # after the run: its memory is free again
    else:
        out["peak_memory_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
        out["peak_memory_kind"] = "process peak RSS (ru_maxrss): includes Python, torch and earlier repeats"
    out["status"] = result.status
    out["load_avg_1m_after"] = os.getloadavg()[0]
    return out


# --- recipes -------------------------------------------------------------------------------------------
def cpu_recipe(path: Path, steps: int, overrides: list[str], out: Path) -> Recipe:
    """The smoke recipe, shortened; logged often enough that the steady rate has rows to span,
    but no more often than the recipe logs (each log line costs a ledger update)."""
    log = max(2, min(10, steps // 6))
    base = [f"train.max_steps={steps}", f"train.logging_steps={log}", f"train.save_steps={steps}",
            f"train.eval_steps={steps}", f"output.dir={out}"]
    return load_recipe(path, base + list(overrides))


def synthetic_text(tokenizer: Any, path: Path, rows: int, length: int) -> Path:
    """Rows of shipped Kazakh sample text, each at least `length` tokens: with packing every
    sequence is then exactly max_length tokens, the workload the throughput table is quoted for."""
    from arzan.tiny import sample_data_path

    texts = [json.loads(x) for x in sample_data_path().read_text("utf-8").splitlines() if x.strip()]
    pieces = [f"{r['instruction']} {r.get('input') or ''} {r['output']}" for r in texts]
    out, i = [], 0
    for _ in range(rows):
        parts: list[str] = []
        while len(tokenizer(" ".join(parts))["input_ids"]) < length:
            parts.extend(pieces[i % len(pieces)] for i in range(i, i + 64))
            i += 64
        out.append(json.dumps({"text": " ".join(parts)}, ensure_ascii=False))
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


# What the published Llama 3.1/3.2 configs add to throughput.yaml's shapes (the project's device notes, shared/device/README.md):
# they do not change FLOPs or memory, but the random model should be the real architecture.
LLAMA3_ARCH = {"rms_norm_eps": 1e-5, "max_position_embeddings": 131072,
               "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                                   "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                   "original_max_position_embeddings": 8192}}


def random_model(out: Path, config: dict[str, Any], device: str = "cuda", dtype: str = "bfloat16") -> Path:
    """A real architecture with random weights plus arzan's tiny tokenizer, saved where a recipe can
    point: speed and memory do not depend on the weights' values, and nothing is downloaded."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from arzan.tiny import tiny_model_dir

    if (out / "config.json").is_file():
        return out
    tok = AutoTokenizer.from_pretrained(tiny_model_dir())
    tok.save_pretrained(out)
    cfg = LlamaConfig(**config, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    with torch.device(device):
        torch.manual_seed(0)
        model = LlamaForCausalLM._from_config(cfg, dtype=getattr(torch, dtype))
    model.save_pretrained(out)
    del model
    return out


def gpu_recipe(model_dir: Path, data: Path, backend: str, qlora: bool, steps: int, out: Path,
               gpu: str | None = None, max_length: int | None = None) -> Recipe:
    """The reference workload of throughput.yaml: seq 2048 packed, batch 1 x accumulation 8, LoRA r64."""
    ref = {**raw_table()["derivation"]["reference"]}
    ref["max_length"] = max_length or ref["max_length"]
    raw = {"name": f"bench-{backend}-{'qlora' if qlora else 'lora'}",
           "model": {"name": str(model_dir), "backend": backend, "load_in_4bit": qlora},
           "lora": {"r": ref["lora"]["r"], "lora_alpha": 16},
           "data": {"sources": [{"path": str(data), "format": "text"}]},
           "train": {"max_length": ref["max_length"], "packing": ref["packing"], "max_steps": steps,
                     "per_device_train_batch_size": ref["per_device_train_batch_size"],
                     "gradient_accumulation_steps": ref["gradient_accumulation_steps"], "logging_steps": 1,
                     "save_steps": steps, "learning_rate": 1e-4, "warmup_steps": 0},
           "cost": {"gpu": gpu} if gpu else {"usd_per_gpu_hour": 0},
           # the generation check still runs (its per-token time is an overhead the estimator prices),
           # but a random model never stops: 16 tokens per answer instead of 64 keep the device time short
           "eval": {"max_new_tokens": 16},
           "output": {"dir": str(out)}}
    return recipe_from_dict(raw, source="bench gpu recipe")


# --- table entries -------------------------------------------------------------------------------------
def entry_for(result: dict[str, Any], recipe: Recipe, device: str, shape: ModelShape, when: str,
              result_file: str, command: str) -> dict[str, Any]:
    """The throughput.yaml entry this measurement supports (basis: measured)."""
    method = "qlora" if recipe.model.load_in_4bit else "lora"
    tr = recipe.train
    e = {"id": f"{device}-{method}-{result['backend']}", "device": device,
         "model": recipe.model.name, "method": method, "backend": result["backend"],
         "max_length": tr.max_length, "micro_batch_tokens": tr.per_device_train_batch_size * tr.max_length,
         "checkpointing": result["gradient_checkpointing"], "context": round(result["context"], 1),
         "lora": {"r": recipe.lora.r, "target_modules": recipe.lora.target_modules},
         "seen_tokens_per_s": round(result["seen_tokens_per_s"], 1), "padding": round(result["padding"], 4),
         "basis": "measured", "overheads": "cpu" if device == "cpu" else "gpu",
         "config": {k: getattr(shape, a) for k, a in [("hidden_size", "hidden"), ("intermediate_size", "intermediate"),
                                                      ("num_hidden_layers", "layers"), ("num_attention_heads", "heads"),
                                                      ("num_key_value_heads", "kv_heads"), ("vocab_size", "vocab"),
                                                      ("tie_word_embeddings", "tied"), ("head_dim", "head_dim")]},
         "measured": {"device": result.get("device_name", device), "date": when, "result": result_file,
                      "command": command}}
    if result.get("torch_threads"):
        e["measured"]["torch_threads"] = result["torch_threads"]
    if result.get("eval_speedup"):
        e["eval_speedup"] = round(result["eval_speedup"], 3)
    return e


def calibrated_table(res: dict[str, Any], recipe: Recipe, device: str = "cpu") -> Any:
    """The shipped table with this run's speed and overheads in place of the device's entry: what
    the estimator would say had this measurement been in throughput.yaml."""
    from dataclasses import replace

    from arzan.throughput import entry_from_dict, load_table, model_shape

    entry = entry_from_dict(entry_for(res, recipe, device, model_shape(recipe), "now", "calibration", "-"), {})
    table = load_table()
    block = "cpu" if device == "cpu" else "gpu"
    measured = {"setup_s": res["phases"]["setup"], "train_start_s": res["train_start_s"],
                "checkpoint_s": res["checkpoint_s"], "save_s": res["phases"]["save"],
                "command_s": 0.0}  # the bench calls arzan.train.train: no `arzan train` start-up to bill
    if res.get("decode_step_s"):
        measured["decode_step_s"] = res["decode_step_s"]
    overheads = {**table.overheads, block: {**table.overheads[block], **measured}}
    return replace(table.with_entries(entry), overheads=overheads)


def derive_entries(raw: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every GPU x method x backend from the anchors, by the ratios written in throughput.yaml."""
    raw = raw or raw_table()
    specs, anc, der = raw["specs"], raw["anchors"], raw["derivation"]
    a, q, ref = anc["qwen-7b-a100-lora"], anc["qwen-7b-a100-qlora"], der["reference"]
    share, unsloth = der["compute_share"], anc["unsloth-speedup"]["factor"]
    a_shape = ModelShape.from_config(a["config"])
    r_shape = ModelShape.from_config(raw["models"][ref["model"]]["config"])
    a_flops = train_flops_per_token(a_shape, a["micro_batch_tokens"],
                                    a_shape.lora_params(a["lora"]["r"], a["lora"]["target_modules"]), True)
    r_mbt = ref["per_device_train_batch_size"] * ref["max_length"]
    r_lora = r_shape.lora_params(ref["lora"]["r"], ref["lora"]["target_modules"])
    r_flops = train_flops_per_token(r_shape, r_mbt, r_lora, ref["gradient_checkpointing"])
    a_tok_s = a["tokens_per_step"] / a["seconds_per_step"]
    micro_batches = a["tokens_per_step"] / a["micro_batch_tokens"]
    deq_a = (q["seconds_per_step"] - a["seconds_per_step"]) / micro_batches
    nq = (r_shape.layers * r_shape.layer_linear_params) / (a_shape.layers * a_shape.layer_linear_params)
    sa = specs[a["device"]]
    out = []
    for gpu, s in specs.items():
        ratio = share * sa["tflops"] / s["tflops"] + (1 - share) * sa["mem_tb_s"] / s["mem_tb_s"]
        t_hf = r_flops / a_flops * ratio / a_tok_s
        deq = deq_a * nq * sa["mem_tb_s"] / s["mem_tb_s"]
        floor = r_flops / (der["max_hfu"] * s["tflops"] * 1e12)  # no stack beats this share of the datasheet peak
        for backend, claimed in (("hf", 1.0), ("unsloth", unsloth)):
            t_lora = max(t_hf / claimed, floor)
            f = t_hf / t_lora
            for method in ("lora", "qlora"):
                t = t_lora + (deq / f / r_mbt if method == "qlora" else 0.0)
                how = (f"qwen-7b-a100-lora {a_tok_s:.0f} tok/s x FLOPs/token {a_flops / 1e9:.1f}/{r_flops / 1e9:.1f} G"
                       f" x 1/({share:g} x {sa['tflops']:g}/{s['tflops']:g} TFLOP/s + {1 - share:g} x "
                       f"{sa['mem_tb_s']:g}/{s['mem_tb_s']:g} TB/s)")
                if method == "qlora":
                    how += (f"; 4-bit: + qwen-7b-a100-qlora's {deq_a:.3f} s per micro-batch x {nq:.2f} (weights)"
                            f" x {sa['mem_tb_s']:g}/{s['mem_tb_s']:g} (bandwidth)")
                if claimed != 1.0:
                    how += f"; unsloth: x {f:.2f} (unsloth-speedup {claimed:g}"
                    how += f", capped at {der['max_hfu']:g} HFU)" if f < claimed else ")"
                out.append({"id": f"{gpu}-{method}-{backend}", "device": gpu, "model": ref["model"], "method": method,
                            "backend": backend, "max_length": ref["max_length"], "micro_batch_tokens": r_mbt,
                            "checkpointing": ref["gradient_checkpointing"], "context": r_mbt, "lora": ref["lora"],
                            "seen_tokens_per_s": float(f"{1 / t:.4g}"),
                            "dequant_s_per_micro_batch": round(deq / f, 4) if method == "qlora" else 0.0,
                            "basis": "derived", "derived": how, "measured": None})
    return out


def dump_entries(entries: list[dict[str, Any]]) -> str:
    """One flow mapping per line: the table stays readable as a table."""
    lines = []
    for e in entries:
        text = yaml.safe_dump(e, default_flow_style=True, sort_keys=False, width=10_000, allow_unicode=True).strip()
        lines.append(f"  - {text}")
    return "\n".join(lines) + "\n"


# --- main ----------------------------------------------------------------------------------------------
def run_cpu(args: argparse.Namespace, command: str) -> list[Path]:
    import torch

    from arzan.throughput import model_shape

    if args.threads:
        torch.set_num_threads(args.threads)
    info = {**device_info(), "torch_threads": torch.get_num_threads()}
    recipe_path = Path(args.recipe)
    results = []
    with tempfile.TemporaryDirectory(prefix="arzan-bench-") as tmp:
        for i in range(args.repeat):
            recipe = cpu_recipe(recipe_path, args.steps, args.set, Path(tmp) / f"r{i}")
            res = measure(recipe, "cpu", Path(tmp))
            results.append(res)
            print(f"repeat {i + 1}/{args.repeat}: {res['seen_tokens_per_s']:.0f} seen tok/s, "
                  f"step {res['step_s'] * 1000:.0f} ms, load {os.getloadavg()[0]:.1f}", flush=True)
        recipe = cpu_recipe(recipe_path, args.steps, args.set, Path(tmp) / "x")
        shape = model_shape(recipe)
    med = {k: statistics.median(r[k] for r in results) for k in ("seen_tokens_per_s", "trained_tokens_per_s", "step_s")}
    best = min(results, key=lambda r: abs(r["seen_tokens_per_s"] - med["seen_tokens_per_s"]))
    name = f"cpu-{recipe_path.stem}-hf{f'-{args.threads}thread' if args.threads else ''}.json"
    summary = {**best, **med, "device_name": info["cpu"], "torch_threads": info["torch_threads"]}
    entry = entry_for(summary, recipe, "cpu", shape, date.today().isoformat(), f"bench/results/{name}", command)
    entry["model"] = recipe.model.name
    overheads = {"setup_s": round(statistics.median(r["phases"]["setup"] for r in results), 3),
                 "train_start_s": round(statistics.median(r["train_start_s"] for r in results), 3),
                 "checkpoint_s": round(statistics.median(r["checkpoint_s"] for r in results), 3),
                 "save_s": round(statistics.median(r["phases"]["save"] for r in results), 3),
                 "decode_step_s": round(statistics.median(r.get("decode_step_s", 0) for r in results), 4)}
    seen = [r["seen_tokens_per_s"] for r in results]
    check = estimator_check(results, recipe)
    doc = {"device": info, "recipe": str(recipe_path), "backend": "hf", "versions": versions(), "command": command,
           "date": date.today().isoformat(), "repeats": len(results),
           "seen_tokens_per_s": {"median": med["seen_tokens_per_s"], "min": min(seen), "max": max(seen),
                                 "spread_pct": (max(seen) - min(seen)) / med["seen_tokens_per_s"] * 100},
           "trained_tokens_per_s": med["trained_tokens_per_s"], "step_s": med["step_s"],
           "price": price_per_million("cpu", med["trained_tokens_per_s"], med["seen_tokens_per_s"]),
           "mfu": None, "mfu_note": "n/a on a CPU", "estimator_check": check, "runs": results, "entry": entry,
           "overheads": overheads}
    return [write(doc, name, args.out)]


def estimator_check(results: list[dict[str, Any]], recipe: Recipe) -> dict[str, Any]:
    """How far the estimate of each repeat was from its bill, calibrated on the repeat before it."""
    from arzan.estimate import estimate

    errors = []
    for prev, cur in zip(results, results[1:]):
        est = estimate(recipe, table=calibrated_table(prev, recipe))
        errors.append(est.target.billed_seconds / cur["billed_seconds"] - 1)
    return {"what": "estimated / billed seconds - 1 for repeat i, calibrated on repeat i-1 (same recipe, same box)",
            "errors": errors, "max_abs": max((abs(e) for e in errors), default=None)}


def check_estimate(recipe_path: Path, work: Path, warm_steps: int = 60, run_steps: int = 240) -> dict[str, Any]:
    """The estimator against a real bill on this machine: calibrate on a short warm-up run, estimate
    a longer run of the same recipe (priced at 1 $/h so money is not zero), run it, compare."""
    from arzan.estimate import estimate
    from arzan.train import train

    warm = cpu_recipe(recipe_path, warm_steps, [], work / "warm")
    res = measure(warm, "cpu", work)
    recipe = load_recipe(recipe_path, [f"train.max_steps={run_steps}", "cost.usd_per_gpu_hour=1"])
    est, shipped = estimate(recipe, table=calibrated_table(res, warm)), estimate(recipe)
    run = train(recipe, out=work / f"real-{time.time_ns()}", mode="new")
    led, rows = run.ledger, [json.loads(x) for x in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    t = est.target
    return {"estimated_s": t.billed_seconds, "billed_s": led["billed_seconds"],
            "error": t.billed_seconds / led["billed_seconds"] - 1, "error_money": t.usd / led["money"]["usd"] - 1,
            "shipped_entry_error": shipped.target.billed_seconds / led["billed_seconds"] - 1,
            "calibrated_seen_tokens_per_s": res["seen_tokens_per_s"],
            "tokens": {"estimated": [est.plan.seen, est.plan.trained], "ledger": [led["tokens"]["seen"],
                                                                               led["tokens"]["trained"]]},
            "evals": {"estimated": est.plan.evals, "ran": sum("eval_loss" in r for r in rows)},
            "phases": {"estimated": t.phases, "ledger": led["phases"]}, "load_avg_1m": os.getloadavg()[0]}


def run_check(args: argparse.Namespace, command: str) -> list[Path]:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    checks = []
    with tempfile.TemporaryDirectory(prefix="arzan-check-") as tmp:
        for i in range(args.check_estimate):
            checks.append(check_estimate(Path(args.recipe), Path(tmp) / str(i)))
            print(f"check {i + 1}/{args.check_estimate}: estimate {checks[-1]['error']:+.1%} off the bill", flush=True)
    errors = [c["error"] for c in checks]
    doc = {"device": {**device_info(), "torch_threads": torch.get_num_threads()}, "recipe": args.recipe,
           "versions": versions(), "command": command, "date": date.today().isoformat(),
           "what": "estimated / billed seconds - 1 of the recipe at 240 steps, calibrated on a 60-step warm-up "
                   "in the same process; money is time x price, so its error is the same",
           "errors": errors, "mean": statistics.mean(errors), "sd": statistics.pstdev(errors),
           "max_abs": max(abs(e) for e in errors), "checks": checks}
    suffix = f"-{args.threads}thread" if args.threads else ""
    return [write(doc, f"cpu-{Path(args.recipe).stem}-estimate-check{suffix}.json", args.out)]


GPU_MODELS = ("Llama-3.1-8B", "Llama-3.2-3B", "Llama-3.2-1B")  # configs in throughput.yaml `models:`
GPU_CONFIGS = ("hf-lora", "hf-qlora", "unsloth-lora", "unsloth-qlora")


def model_label(model: str) -> str:
    """'Llama-3.2-1B' -> 'llama-3.2-1b': the result files' and the work folders' name for a model."""
    return model.lower()


def unsloth_first(configs: list[str], cuda: bool | None = None) -> dict[str, Any]:
    """In a child that runs an unsloth config on CUDA, import unsloth before anything imports trl,
    transformers or peft (recipe validation imports trl; arzan.train imports transformers): imported
    later, unsloth warns that its patches to them may not apply, and the unsloth figure would not be
    unsloth's. Returns what happened, for the result file."""
    wanted = any(c.split("-")[0] == "unsloth" for c in configs)
    before = sorted(m for m in ("trl", "transformers", "peft") if m in sys.modules)
    if not wanted:
        return {"wanted": False}
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
    if not cuda:
        return {"wanted": True, "imported": False, "why": "no CUDA GPU"}
    from arzan.model import _UNSLOTH_IMPORT_ERROR, import_unsloth_early

    import_unsloth_early("unsloth")
    return {"wanted": True, "imported": "unsloth" in sys.modules, "already_imported_before": before,
            "error": _UNSLOTH_IMPORT_ERROR[0] if _UNSLOTH_IMPORT_ERROR else None}


def run_gpu(args: argparse.Namespace, command: str) -> list[Path]:
    """Build the random model and the data once, then one child process per configuration: a failed
    or out-of-memory run loses only itself, and unsloth's patches never leak into the hf runs."""
    configs = args.configs.split(",")
    if bad := [c for c in configs if c not in GPU_CONFIGS]:
        raise SystemExit(f"--configs: unknown {', '.join(bad)}; choose from {', '.join(GPU_CONFIGS)}")
    early = unsloth_first(configs) if args.child else {}  # first, before the imports below can pull in trl
    import torch

    if not torch.cuda.is_available():
        raise SystemExit("--mode gpu needs a CUDA GPU")
    work = Path(args.workdir or tempfile.mkdtemp(prefix="arzan-bench-"))
    label = model_label(args.model)
    model_dir, data = work / f"{label}-random", work / "long.jsonl"
    if args.child:
        return gpu_runs(configs, model_dir, data, work, args.steps, device_info(), command, args.out,
                        label=label, model=args.model, unsloth_import=early)
    t0 = time.monotonic()
    random_model(model_dir, {**raw_table()["models"][args.model]["config"], **LLAMA3_ARCH})
    torch.cuda.empty_cache()
    rows = args.steps * 8 + 16
    if not data.is_file() or sum(1 for _ in data.open()) < rows:
        from transformers import AutoTokenizer

        ref = raw_table()["derivation"]["reference"]
        synthetic_text(AutoTokenizer.from_pretrained(model_dir), data, rows=rows, length=ref["max_length"] + 64)
    print(f"model and data ready in {time.monotonic() - t0:.0f} s", flush=True)

    def child(name: str) -> list[str]:
        return [sys.executable, __file__, "--mode", "gpu", "--child", "--configs", name, "--model", args.model,
                "--workdir", str(work), "--steps", str(args.steps), "--out", str(args.out)]

    limit = None if args.time_limit is None else args.time_limit - (time.monotonic() - START)
    paths = run_children(configs, child, args.out, work, label, limit, device_info(), command)
    if summary := compare(paths, args.out, f"{device_slug(device_info())[0]}-{label}"):
        paths.append(summary)
    return paths


def run_children(configs: list[str], child: Any, out: str | Path, work: Path, label: str, limit: float | None,
                 info: dict[str, Any], command: str, min_start_s: float = 30) -> list[Path]:
    """Run each config's child process within `limit` seconds in all (None: no limit); one is not
    started with less than `min_start_s` left (imports and loading alone take that). A child that
    fails without writing its result, runs out of time, or cannot start in time still leaves a result
    file saying so, with whatever ledger its run folder holds."""
    slug, _ = device_slug(info)
    t0 = time.monotonic()
    written = []
    for name in configs:
        fname = f"{slug}-{label}-{name}.json"
        target = Path(out) / fname
        stale = target.stat().st_mtime if target.is_file() else None
        left = None if limit is None else limit - (time.monotonic() - t0)
        err = None
        if left is not None and left < min_start_s:
            err = f"skipped: {left:.0f} s of --time-limit left"
        else:
            try:
                rc = subprocess.run(child(name), timeout=left).returncode
                err = None if rc == 0 else f"child exited with {rc}"
            except subprocess.TimeoutExpired:
                err = f"timed out: killed at the --time-limit ({left:.0f} s left when it started)"
        fresh = target.is_file() and target.stat().st_mtime != stale
        if err and not fresh:
            runs = sorted(work.glob(f"run-{label}-{name}-*"), key=lambda d: d.stat().st_mtime)
            doc = {"device": info, "config": name, "error": err, "versions": versions(), "command": command,
                   "date": date.today().isoformat(), **(run_record(runs[-1]) if runs else {})}
            written.append(write(doc, fname, out))
        elif target.is_file():
            written.append(target)
        print(f"{name}: {err or 'done'}", flush=True)
    return written


def gpu_runs(configs: list[str], model_dir: Path, data: Path, work: Path, steps: int, info: dict[str, Any],
             command: str, out: str | Path, max_length: int | None = None, label: str = "llama-3.1-8b",
             model: str | None = None, unsloth_import: dict[str, Any] | None = None) -> list[Path]:
    """Measure each `backend-method` on the reference workload; on a CPU (tests) with a tiny model.
    Each result carries the losses, the metrics rows and the whole ledger of its run: the run folder
    stays in `work`, which does not come back from a lent machine; `out` does."""
    from arzan.throughput import model_shape

    slug, device = device_slug(info)
    catalog_gpu = device if device in _catalog_gpus() else None
    model = model or ("Llama-3.1-8B" if label == "llama-3.1-8b" else label)
    written = []
    for name in configs:
        backend, method = name.split("-")
        fname = f"{slug}-{label}-{name}.json"
        run_dir = work / f"run-{label}-{name}-{time.time_ns()}"
        recipe = gpu_recipe(model_dir, data, backend, method == "qlora", steps, work / f"run-{name}", catalog_gpu,
                            max_length)
        base = {"device": info, "model": model, "config": name, "versions": versions(), "command": command,
                "date": date.today().isoformat(), "unsloth_import": unsloth_import}
        try:
            res = measure(recipe, device, work, run_dir)
        except Exception as exc:  # recorded, so a failure is a result too
            err = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            print(f"{name}: {err}", flush=True)
            written.append(write({**base, "error": err, **run_record(run_dir)}, fname, out))
            continue
        res["device_name"] = info.get("gpu", info["cpu"])
        entry = entry_for(res, recipe, device, model_shape(recipe), date.today().isoformat(),
                          f"bench/results/{fname}", command)
        entry["model"] = model
        if model != raw_table()["derivation"]["reference"]["model"]:  # never replaces the reference model's entry
            entry["id"] += f"-{model_label(model)}"
        rec = run_record(run_dir)
        doc = {**base, "recipe": recipe.model_dump(mode="json"), "backend": res["backend"], "method": method,
               "steps": steps,
               **{k: res.get(k) for k in ("seen_tokens_per_s", "trained_tokens_per_s", "step_s", "mfu", "hfu",
                                          "peak_memory_gb", "peak_memory_reserved_gb", "peak_memory_kind")},
               "loss": {"final": res["final_loss"], "per_step": res["losses"]},
               "price": price_per_million(device, res["trained_tokens_per_s"], res["seen_tokens_per_s"]),
               "run": res, "entry": entry, "ledger": rec.get("ledger"), "metrics": rec.get("metrics")}
        written.append(write(doc, fname, out))
        mfu = f"MFU {res['mfu']:.1%}, " if res.get("mfu") else ""
        print(f"{name}: {res['seen_tokens_per_s']:.0f} seen tok/s, {mfu}peak {res['peak_memory_gb']:.1f} GB, "
              f"loss {res['losses'][0][1]:.3f} -> {res['final_loss']}", flush=True)
    return written


def compare(paths: list[Path], out: str | Path, prefix: str) -> Path | None:
    """unsloth against hf for each method both ran: speed ratio, peak memory, losses side by side
    (same model, recipe, data, seed and steps, so the losses should track each other)."""
    docs = [json.loads(Path(p).read_text()) for p in paths]
    ok = {(d["backend"], d["method"]): d for d in docs if "error" not in d and "backend" in d}
    pairs = {}
    for method in ("lora", "qlora"):
        hf, un = ok.get(("hf", method)), ok.get(("unsloth", method))
        if not (hf and un):
            continue
        pairs[method] = {
            "speedup_trained_tokens_per_s": un["trained_tokens_per_s"] / hf["trained_tokens_per_s"],
            "speedup_seen_tokens_per_s": un["seen_tokens_per_s"] / hf["seen_tokens_per_s"],
            "peak_memory_gb": {"hf": hf["peak_memory_gb"], "unsloth": un["peak_memory_gb"]},
            "final_loss": {"hf": hf["loss"]["final"], "unsloth": un["loss"]["final"]},
            "loss_per_step": {"hf": hf["loss"]["per_step"], "unsloth": un["loss"]["per_step"]},
            "kzt_per_1m_trained": {"hf": hf["price"].get("kzt_per_1m_trained"),
                                   "unsloth": un["price"].get("kzt_per_1m_trained")},
            "unsloth_imported_first": (un.get("unsloth_import") or {}).get("already_imported_before") == [],
            "files": [Path(hf["entry"]["measured"]["result"]).name, Path(un["entry"]["measured"]["result"]).name]}
    if not pairs:
        return None
    first = next(iter(ok.values()))
    doc = {"what": "unsloth / hf on the same random-weight model, recipe, data and steps", "model": first["model"],
           "device": first["device"], "versions": first["versions"], "command": first["command"],
           "date": first["date"], "steps": first.get("steps"), "by_method": pairs}
    for method, p in pairs.items():
        print(f"{method}: unsloth {p['speedup_trained_tokens_per_s']:.2f}x hf; final loss hf "
              f"{p['final_loss']['hf']} unsloth {p['final_loss']['unsloth']}", flush=True)
    return write(doc, f"{prefix}-unsloth-vs-hf.json", out)


def _catalog_gpus() -> set[str]:
    from arzan.cost.prices import load_catalog

    return set(load_catalog().gpus)


def write(doc: dict[str, Any], name: str, out_dir: str | Path) -> Path:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    return path


def record(result_file: Path) -> list[str]:
    """Put a result's measured entry (and, from a CPU run, the overheads) into throughput.yaml,
    replacing the entry with the same id: one line each, so the file's comments survive."""
    doc = json.loads(Path(result_file).read_text(encoding="utf-8"))
    entry = doc["entry"]
    lines = TABLE.read_text(encoding="utf-8").splitlines()
    new = dump_entries([entry]).rstrip("\n")
    at = next((i for i, x in enumerate(lines) if x.startswith(f"  - {{id: {entry['id']},")), None)
    if at is None:
        lines.append(new)
    else:
        lines[at] = new
    if entry["device"] == "cpu" and doc.get("overheads"):
        i = next(i for i, x in enumerate(lines) if x.startswith("  cpu: {"))
        block = {**yaml.safe_load(lines[i].strip())["cpu"], **doc["overheads"],
                 "note": f"measured: {entry['measured']['result']} ({doc['date']}, medians of {doc['repeats']} runs)"}
        lines[i] = "  cpu: " + yaml.safe_dump(block, default_flow_style=True, sort_keys=False, width=10_000).strip()
    TABLE.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [entry["id"]]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mode", choices=["cpu", "gpu"], default="cpu")
    p.add_argument("--recipe", default=str(REPO / "recipes" / "smoke.yaml"), help="cpu mode: recipe to shorten")
    p.add_argument("--steps", type=int, default=None, help="training steps per run (cpu 30, gpu 12)")
    p.add_argument("--repeat", type=int, default=3, help="cpu mode: runs, for the spread on a shared machine")
    p.add_argument("--set", action="append", default=[], help="cpu mode: recipe override, as arzan train --set")
    p.add_argument("--threads", type=int, default=None, help="cpu mode: torch threads (default: torch's choice)")
    p.add_argument("--check-estimate", type=int, default=0, metavar="N",
                   help="cpu mode: N times, estimate a run and then run it; write the errors")
    p.add_argument("--configs", default="hf-lora,hf-qlora,unsloth-lora,unsloth-qlora", help="gpu mode: which runs")
    p.add_argument("--model", default="Llama-3.1-8B", choices=GPU_MODELS,
                   help="gpu mode: which architecture to build with random weights (throughput.yaml models:)")
    p.add_argument("--workdir", default=None, help="gpu mode: keep the random model here between calls")
    p.add_argument("--time-limit", type=float, default=None, metavar="S",
                   help="gpu mode: seconds for the whole command; a config that would pass it is stopped and "
                        "recorded as such, so the results written so far come back")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # gpu mode: one config, in-process
    p.add_argument("--out", "--results", dest="out", default=str(RESULTS),
                   help="where result JSON files go (on a lent machine: $OUT, the folder that comes back)")
    p.add_argument("--derive", action="store_true", help="print throughput.yaml's derived entries and exit")
    p.add_argument("--record", nargs="+", metavar="RESULT", help="put these results' entries into throughput.yaml")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.derive:
        sys.stdout.write(dump_entries(derive_entries()))
        return 0
    if args.record:
        for f in args.record:
            print(f"recorded {', '.join(record(Path(f)))} from {f}")
        return 0
    args.steps = args.steps or (30 if args.mode == "cpu" else 12)
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, REPO), *(argv or sys.argv[1:])])
    if args.mode == "cpu":
        paths = run_check(args, command) if args.check_estimate else run_cpu(args, command)
    else:
        paths = run_gpu(args, command)
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
