"""The adapter's README.md: Hugging Face metadata up front, the bill in the body.

The card is built from the ledger (cost.json) and nothing else, so the numbers a reader sees on
the hub are the numbers the run measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from arzan.recipe import Recipe


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def front_matter(recipe: Recipe, ledger: dict[str, Any]) -> dict[str, Any]:
    datasets = sorted({s.hub for s in recipe.data.sources if s.hub})
    backend = ledger.get("model", {}).get("backend", "hf")
    meta: dict[str, Any] = {
        "base_model": recipe.model.name,
        "library_name": "peft",
        "language": ["kk"],
        "pipeline_tag": "text-generation",
        "tags": ["arzan", "lora", "sft", "trl", "kazakh"] + (["unsloth"] if backend == "unsloth" else []),
    }
    if datasets:
        meta["datasets"] = datasets
    energy = ledger.get("energy") or {}
    if energy.get("co2_kg") is not None:
        hw = ledger.get("hardware") or {}
        meta["co2_eq_emissions"] = {
            "emissions": round(energy["co2_kg"] * 1000, 3),  # grams, as the hub expects
            "source": f"arzan ledger ({energy.get('basis', 'estimated')}: {energy.get('method', 'unknown')})",
            "training_type": "fine-tuning",
            "hardware_used": f"{hw.get('gpu_count') or 1} x {hw.get('gpu_name') or hw.get('cpu') or 'unknown'}",
        }
    return meta


def cost_table(ledger: dict[str, Any]) -> str:
    money, price, fx = ledger.get("money", {}), ledger.get("price", {}), ledger.get("exchange", {})
    tokens, energy, phases = ledger.get("tokens", {}), ledger.get("energy", {}), ledger.get("phases", {})
    hw = ledger.get("hardware", {})
    device = hw.get("gpu_name") or f"CPU ({hw.get('cpu', 'unknown')})"
    rows = [
        ("Status", ledger.get("status")),
        ("Hardware", f"{hw.get('gpu_count') or 1} × {device}"),
        ("Price", f"{_fmt(price.get('usd_per_gpu_hour'), 3)} USD per GPU-hour ({price.get('provider', 'user')}, "
                  f"{price.get('pricing', 'user')}; source: {price.get('source', 'user')}, as of {price.get('as_of')})"),
        ("Exchange rate", f"{_fmt(fx.get('usd_kzt'))} ₸ per USD (source: {fx.get('source')}, as of {fx.get('as_of')})"),
        ("Wall time (billed)", f"{_fmt(ledger.get('billed_seconds'), 1)} s"),
        ("Time by phase", ", ".join(f"{k} {_fmt(v, 1)} s" for k, v in phases.items())),
        ("GPU-hours", _fmt(ledger.get("gpu_hours"), 4)),
        ("Tokens trained on / seen", f"{_fmt(tokens.get('trained'))} / {_fmt(tokens.get('seen'))}"),
        ("Throughput", f"{_fmt(tokens.get('per_second'), 1)} tokens/s"),
        ("Energy", f"{_fmt(energy.get('kwh'), 4)} kWh ({energy.get('basis', 'unavailable')})"),
        ("CO2", f"{_fmt(energy.get('co2_kg'), 4)} kg"),
        ("Cost", f"{_fmt(money.get('kzt'))} ₸ = {_fmt(money.get('usd'), 4)} $ ({money.get('basis', 'measured')})"),
        ("Cost per 1M trained tokens", f"{_fmt(money.get('kzt_per_1m_tokens'))} ₸ = "
                                       f"{_fmt(money.get('usd_per_1m_tokens'), 4)} $"),
        ("Sessions", str(len(ledger.get("sessions", [])) or 1)),
    ]
    lines = ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def render_card(recipe: Recipe, ledger: dict[str, Any], recipe_file: str = "recipe.yaml") -> str:
    meta = yaml.safe_dump(front_matter(recipe, ledger), sort_keys=False, allow_unicode=True)
    model = ledger.get("model", {})
    sources = "\n".join(
        f"- `{s.hub or s.path}` ({s.format}{', ' + s.license if s.license else ''}"
        f"{', sample ' + str(s.sample) if s.sample else ''})" for s in recipe.data.sources)
    lo = recipe.lora
    return f"""---
{meta}---

# {recipe.name}

{recipe.description or 'A LoRA fine-tune made with arzan.'}

LoRA adapter for `{recipe.model.name}` (r={lo.r}, alpha={lo.lora_alpha}, modules: {', '.join(lo.target_modules)}),
trained with TRL's SFTTrainer through the `{model.get('backend', 'hf')}` backend ({model.get('backend_version', '')}),
method {model.get('method', 'lora')}.

## Training cost

{cost_table(ledger)}

Every figure comes from this run's `cost.json` ledger; "measured" figures were timed during the run,
"estimated" ones were derived (see the ledger).

## Data

{sources}

## Use

```python
from peft import AutoPeftModelForCausalLM
from transformers import AutoTokenizer

model = AutoPeftModelForCausalLM.from_pretrained("PATH_OR_HUB_ID_OF_THIS_ADAPTER")
tokenizer = AutoTokenizer.from_pretrained("PATH_OR_HUB_ID_OF_THIS_ADAPTER")
```

## Reproduce

```
arzan train {recipe_file}
```
"""


def write_card(path: Path, recipe: Recipe, ledger: dict[str, Any]) -> Path:
    path.write_text(render_card(recipe, ledger), encoding="utf-8")
    return path


def read_front_matter(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        raise ValueError(f"{path}: no YAML front matter")
    return yaml.safe_load(text[4: text.index("\n---", 4)])
