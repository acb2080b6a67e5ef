"""How fast, and so how long: the throughput table (`resources/throughput.yaml`), the model shapes it
is keyed on, and the seconds each ledger phase of a run takes on a device (`Table.phase_seconds`).

The table is data, like the price catalog, so a measurement from a rented GPU replaces a derived
figure by editing one entry (`bench/throughput.py --record`). Every entry carries its basis:
`measured` (device, date, versions, command) or `derived` (from which measurement, by which ratio).
Entries are for one reference workload; `Entry.seconds_per_compute_token` carries a figure over to
another model size, sequence length or checkpointing setting by the ratio of hardware FLOPs per
token, assuming the GPU keeps the same utilisation: true within a size class, optimistic for much
smaller models.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from arzan.errors import ArzanError, first_line
from arzan.recipe import Recipe
from arzan.runplan import Plan, Tokens
from arzan.vram import (
    ModelShape,
    eval_flops_per_token,
    nearest_by_size,
    train_flops_per_token,
)


@dataclass(frozen=True)
class Entry:
    """One throughput figure: a device, a workload, seen tokens/s, and where the number came from."""

    id: str
    device: str
    model: str
    method: str
    backend: str
    max_length: int
    micro_batch_tokens: int
    checkpointing: bool
    context: float
    lora_r: int
    lora_targets: Any
    seen_tokens_per_s: float
    basis: str  # measured | derived
    shape: ModelShape
    padding: float = 1.0  # padded / real tokens in the measured batches (1.0 when packed)
    dequant_s_per_micro_batch: float = 0.0  # QLoRA: time to unpack 4-bit weights, per micro-batch
    eval_speedup: float | None = None  # eval tokens/s over train tokens/s, when measured
    overheads: str = "gpu"  # which `overheads:` block prices setup and saves
    torch_threads: int | None = None  # CPU entries: one thread and two differ by a quarter
    source: str = ""  # one line: measured where/when, or derived from what

    @property
    def compute_tokens_per_s(self) -> float:
        return self.seen_tokens_per_s * self.padding

    def seconds_per_compute_token(self, shape: ModelShape, context: float, lora: int, ckpt: bool) -> float:
        """Time per padded token for another workload on this device: scaled by hardware FLOPs."""
        own = train_flops_per_token(self.shape, self.context, self.shape.lora_params(self.lora_r, self.lora_targets),
                                    self.checkpointing)
        compute = 1.0 / self.compute_tokens_per_s - self.dequant_s_per_micro_batch / self.micro_batch_tokens
        return compute * train_flops_per_token(shape, context, lora, ckpt) / own


@dataclass(frozen=True)
class Table:
    entries: tuple[Entry, ...]
    overheads: dict[str, dict[str, float]]
    models: dict[str, ModelShape]
    aliases: dict[str, str]
    specs: dict[str, dict[str, Any]]

    def decode_step_s(self, device: str, shape: ModelShape) -> float:
        """One generated token (generation check after training): a fixed per-step cost, plus on a GPU
        reading every weight once at ~70% of the card's bandwidth (decoding is memory-bound)."""
        if device == "cpu":
            return self.overheads["cpu"]["decode_step_s"]
        spec = self.specs.get(device)
        read = shape.total_params * 2 / (spec["mem_tb_s"] * 1e12 * 0.7) if spec else 0.0
        return self.overheads["gpu"]["decode_step_s"] + read

    def find(self, device: str, method: str, backend: str, params: float) -> Entry | None:
        rows = [e for e in self.entries if e.device == device and e.method == method and e.backend == backend]
        if not rows:
            return None
        threads = _torch_threads() if device == "cpu" else None
        return min(rows, key=lambda e: (e.basis != "measured", abs(math.log(e.shape.total_params / params)),
                                         threads is not None and e.torch_threads != threads))

    def phase_seconds(self, entry: Entry, shape: ModelShape, tokens: Tokens, plan: Plan, recipe: Recipe,
                      lora: int, ckpt: bool, hub: bool) -> tuple[dict[str, float], float]:
        """Seconds per ledger phase for a recipe at this entry's speed, and the evaluation part of "train"
        (the Trainer evaluates from inside train(), so the ledger bills it as training)."""
        o = self.overheads[entry.overheads]
        spt = entry.seconds_per_compute_token(shape, tokens.context, lora, ckpt)
        q = shape.layers * shape.layer_linear_params / (entry.shape.layers * entry.shape.layer_linear_params)
        steps_s = plan.compute_tokens * spt + plan.micro_batches * entry.dequant_s_per_micro_batch * q
        speedup = entry.eval_speedup or (train_flops_per_token(shape, tokens.context, lora, ckpt)
                                         / eval_flops_per_token(shape, tokens.context))
        eval_s = plan.eval_compute_tokens * spt / speedup
        weights_gb = shape.total_params * 2 / 1e9  # bf16 safetensors on the hub
        ckpt_gb, adapter_gb = lora * 12 / 1e9, lora * 4 / 1e9  # fp32 adapter (+ AdamW moments)
        setup = (o["setup_s"] + o.get("command_s", 0.0)  # command_s: `arzan train`'s own imports and checks
                 + (weights_gb * 1000 / o["download_mb_s"] if hub else 0) + weights_gb / o["load_gb_s"])
        clock = recipe.train.save_every_minutes  # SaveOnClock checkpoints on top of save_steps
        saves = plan.saves + (steps_s / (clock * 60) if clock else 0)
        train = o["train_start_s"] + steps_s + eval_s + saves * (o["checkpoint_s"] + ckpt_gb / o["disk_gb_s"])
        after = 0.0  # train.py's "eval" phase: greedy answers before and after, up to max_new_tokens each
        if recipe.eval.generation_check:
            from arzan.evaluation.generation import default_prompts

            n = len(recipe.eval.prompts or default_prompts())
            after = 2 * n * recipe.eval.max_new_tokens * self.decode_step_s(entry.device, shape)
        return {"setup": setup, "data": tokens.data_seconds, "train": train, "eval": after,
                "save": o["save_s"] + adapter_gb / o["disk_gb_s"]}, eval_s

    def with_entries(self, *entries: Entry) -> Table:
        """A table where these (e.g. a fresh calibration) replace entries for the same device and workload."""
        keys = {(e.device, e.method, e.backend) for e in entries}
        kept = tuple(e for e in self.entries if (e.device, e.method, e.backend) not in keys)
        return replace(self, entries=tuple(entries) + kept)


def entry_from_dict(d: dict[str, Any], models: dict[str, ModelShape]) -> Entry:
    """A YAML entry (or a bench result's `entry`) as an Entry; provenance is summed up in `source`."""
    shape = ModelShape.from_config(d["config"], source=d["id"]) if "config" in d else models[d["model"]]
    keys = set(Entry.__dataclass_fields__) - {"shape", "lora_r", "lora_targets", "source"}
    lora = d.get("lora") or {"r": 16, "target_modules": "all-linear"}
    m = d.get("measured")
    source = (f"measured on {m['device']} {m['date']} ({m.get('result', 'bench')})" if m
              else f"derived: {d.get('derived', '?')}")
    return Entry(shape=shape, lora_r=lora["r"], lora_targets=lora["target_modules"], source=source,
                 torch_threads=(m or {}).get("torch_threads"),
                 **{k: v for k, v in d.items() if k in keys - {"torch_threads"}})


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


@lru_cache(maxsize=1)
def load_table() -> Table:
    raw = yaml.safe_load(resources.files("arzan").joinpath("resources/throughput.yaml").read_text("utf-8"))
    models = {name: ModelShape.from_config(m["config"], source=f"throughput.yaml models.{name}")
              for name, m in raw["models"].items()}
    aliases = {_norm(a): name for name, m in raw["models"].items() for a in [name, *m.get("aliases", [])]}
    return Table(tuple(entry_from_dict(e, models) for e in raw["entries"]), raw["overheads"], models, aliases,
                 raw["specs"])


def _norm(name: str) -> str:
    key = name.lower().rstrip("/").split("/")[-1]
    for junk in ("meta-", "-instruct", "-bnb-4bit", "-unsloth"):
        key = key.replace(junk, "")
    return key


def _size(size_hint: str) -> float:
    try:
        want = float(size_hint.strip().upper().rstrip("B")) * 1e9
        if not (math.isfinite(want) and want > 0):
            raise ValueError(size_hint)
    except ValueError:
        raise ArzanError(f"--size: '{size_hint}' is not a size like 8B, 3B or 1.5B") from None
    return want


def model_shape(recipe: Recipe, size_hint: str | None = None, table: Table | None = None) -> ModelShape:
    """The model's config: its own config.json where reachable, else a shipped one, else a size hint."""
    from arzan.model import resolve_model_name

    table = table or load_table()
    want = _size(size_hint) if size_hint else None  # a malformed --size is refused even where it is not needed
    name = resolve_model_name(recipe.model.name)
    if (Path(name) / "config.json").is_file():
        return ModelShape.from_dir(name)
    if (shipped := table.aliases.get(_norm(name))) is not None:
        return table.models[shipped]
    try:
        from transformers import AutoConfig

        cfg = AutoConfig.from_pretrained(name, revision=recipe.model.revision,
                                         trust_remote_code=recipe.model.trust_remote_code)
        return ModelShape.from_config(cfg.to_dict(), source=f"{name} config.json")
    except Exception as exc:  # offline, gated, or no such repo: a size hint is the way out
        if want is not None:
            near = nearest_by_size(table.models, want)
            return replace(table.models[near], source=f"size hint {size_hint}: shipped {near} config")
        raise ArzanError(f"model.name: cannot read the config of '{recipe.model.name}' ({first_line(exc)}); "
                         f"give its size, e.g. --size 8B (shipped: {', '.join(table.models)})") from None


