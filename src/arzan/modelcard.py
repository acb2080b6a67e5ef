"""The adapter's README.md: Hugging Face metadata up front, the bill in the body.

The card is built from the ledger (cost.json) and nothing else, so the numbers a reader sees on
the hub are the numbers the run measured.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from arzan.errors import ArzanError, first_line
from arzan.md_escape import md_cell
from arzan.numbers import kzt, usd
from arzan.recipe import Recipe

# what the Hub accepts as a model id: `name` or `namespace/name`, no path syntax
_HUB_ID = re.compile(r"(?:[A-Za-z0-9][\w.-]*/)?[A-Za-z0-9][\w.-]*")


def _money(value: Any, rule: Any) -> str:
    """₸ and $ by the report's rule (arzan.numbers.kzt / usd), so a figure copied from the card is
    found in the report and the terminal."""
    return rule(float(value)) if isinstance(value, (int, float)) and not isinstance(value, bool) else "—"


def _fmt(value: Any, digits: int = 2) -> str:
    """The report's number rule (arzan.numbers.fixed): a figure too small for `digits` decimals
    (0.0031 ₸ of a short eval) keeps two significant digits instead of showing 0.00."""
    from arzan.numbers import fixed

    if value is None:
        return "—"
    if isinstance(value, float):
        return fixed(value, digits)
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def hub_base_model(name: str, base_dir: Path | None = None) -> str | None:
    """`name` if the Hub can resolve it as a model id, else None.

    The Hub reads `base_model` as a link to another model repo, so it must be a Hub id: arzan's
    offline tiny model (built locally, never uploaded) and a local folder are not, and the card
    names them in its text instead.
    """
    from arzan.tiny import is_tiny

    name = str(name).strip()
    if is_tiny(name) or not _HUB_ID.fullmatch(name) or ".." in name:
        return None
    if any((root / name).exists() for root in (Path.cwd(), base_dir) if root is not None):
        return None  # `runs/merged` is a folder here, whatever it looks like
    return name


def base_model_text(recipe: Recipe) -> str:
    """How the card's body names the base model, saying why it is missing from the metadata."""
    from arzan.tiny import is_tiny

    name = recipe.model.name
    if hub_base_model(name, recipe.base_dir) is not None:
        return f"`{name}`"
    if is_tiny(name):
        return (f"`{name}` (arzan's offline tiny test model, built locally by `arzan.tiny`; it is not on "
                "the Hugging Face Hub, so the metadata names no `base_model`)")
    return f"`{name}` (a local model folder, not a Hub id, so the metadata names no `base_model`)"


def front_matter(recipe: Recipe, ledger: dict[str, Any]) -> dict[str, Any]:
    datasets = sorted({s.hub for s in recipe.data.sources if s.hub})
    backend = (ledger.get("model") or {}).get("backend")
    base = hub_base_model(recipe.model.name, recipe.base_dir)
    meta: dict[str, Any] = {
        **({"base_model": base} if base else {}),
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


def _sourced(source: Any, as_of: Any) -> str:
    return f"source: {source}" + (f", as of {as_of}" if as_of else "")


def price_text(price: dict[str, Any], on_gpu: bool | None = None) -> str:
    """`1.180 USD per GPU-hour (colab, A100-40GB, on-demand; source: URL, as of DATE)`, or for a rate
    the user gave (`--price`, a CPU run): `(rate set by the user; no catalog source)`."""
    pricing = price.get("pricing")
    what = [str(x) for x in (price.get("provider"), price.get("gpu")) if x]
    what += ["rate set by the user"] if pricing in (None, "user") else [str(pricing)]
    source = price.get("source")
    where = _sourced(source, price.get("as_of")) if source and source != "user" else "no catalog source"
    # a CPU at the user's own rate has no GPU to count; `on_gpu` says where it ran when the price is silent
    unit = "GPU-hour" if price.get("gpu") or on_gpu else "hour"
    return f"{_fmt(price.get('usd_per_gpu_hour'), 3)} USD per {unit} ({', '.join(what)}; {where})"


def session_prices(ledger: dict[str, Any]) -> str | None:
    """`session 0: 1.000 USD per GPU-hour (...); sessions 1, 2: 3.000 ...` when a run's sessions were
    billed at more than one price (a --price on a resume, a new machine); None when one price holds.
    The top-level `price` is the last session's, which alone would not explain the total."""
    groups: dict[str, list[int]] = {}
    for s in ledger.get("sessions") or []:
        if isinstance(s, dict) and isinstance(s.get("price"), dict) and s.get("billed_seconds"):
            groups.setdefault(price_text(s["price"], s.get("device") == "cuda"), []).append(s.get("index", 0))
    if len(groups) < 2:
        return None
    return "; ".join(f"session{'s' if len(ix) > 1 else ''} {', '.join(map(str, ix))}: {text}"
                     for text, ix in groups.items())


def backend_text(model: dict[str, Any]) -> str:
    """`hf (peft 0.21.2)`: which backend trained the adapter and its version, from the ledger."""
    name = model.get("backend") or "unknown backend"
    return f"{name} ({model['backend_version']})" if model.get("backend_version") else str(name)


def cost_table(ledger: dict[str, Any]) -> str:
    money, price, fx = ledger.get("money") or {}, ledger.get("price") or {}, ledger.get("exchange") or {}
    tokens, energy, phases = ledger.get("tokens") or {}, ledger.get("energy") or {}, ledger.get("phases") or {}
    hw = ledger.get("hardware") or {}
    device = hw.get("gpu_name") or f"CPU ({hw.get('cpu') or 'unknown'})"
    rows = [
        ("Status", ledger.get("status")),
        ("Hardware", f"{hw.get('gpu_count') or 1} × {device}"),
        ("Backend", backend_text(ledger.get("model") or {})),
        ("Price", session_prices(ledger) or price_text(price, bool(hw.get("gpu_count")) or hw.get("device") == "cuda")),
        ("Exchange rate", f"{_fmt(fx.get('usd_kzt'))} ₸ per USD ({_sourced(fx.get('source'), fx.get('as_of'))})"
         if fx.get("source") else f"{_fmt(fx.get('usd_kzt'))} ₸ per USD (no source recorded)"),
        ("Wall time (billed)", f"{_fmt(ledger.get('billed_seconds'), 1)} s"),
        ("Time by phase", ", ".join(f"{k} {_fmt(v, 1)} s" for k, v in phases.items())),
        ("GPU-hours", _fmt(ledger.get("gpu_hours"), 4) + (
            f" (no GPU ran: {_fmt((ledger.get('billed_seconds') or 0) / 3600, 4)} billed hours of this machine, at its "
            "own rate)" if not ledger.get("gpu_hours") and ledger.get("billed_seconds") else "")),
        ("Tokens trained on / seen", f"{_fmt(tokens.get('trained'))} / {_fmt(tokens.get('seen'))}"),
        ("Throughput", f"{_fmt(tokens.get('per_second'), 1)} tokens/s"),
        ("Energy", f"{_fmt(energy.get('kwh'), 4)} kWh ({energy.get('basis', 'unavailable')}"
                   + (": sessions without a reading are left out)" if energy.get("basis") == "partial" else ")")),
        ("CO2", f"{_fmt(energy.get('co2_kg'), 4)} kg"),
        ("Cost", f"{_money(money.get('kzt'), kzt)} ₸ = {_money(money.get('usd'), usd)} $ "
                 f"({money.get('basis', 'measured')})"),
        ("Cost per 1M trained tokens", f"{_money(money.get('kzt_per_1m_tokens'), kzt)} ₸ = "
                                       f"{_money(money.get('usd_per_1m_tokens'), usd)} $ (the training sessions' "
                                       "bill; evals and merges after it are in Cost above, not here)"),
        ("Sessions", str(len(ledger.get("sessions", [])) or 1)),
    ]
    lines = ["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)




def generation_section(ledger: dict[str, Any]) -> str:
    """The generation check after training, compact: a fine-tune that never stops says so here."""
    from arzan.reporting.sections import ANSWER_CHARS, NEVER_STOPS, generation_from, stopped_text

    check = generation_from((ledger.get("summary") or {}).get("generation_check"))
    if check is None:
        return ""
    lines = ["", "## Generation check", ""]
    if check.flag:
        lines += [f"⚠ **Warning: the model {NEVER_STOPS}** — {check.flag}.", ""]
    lines += [check.summary, ""]
    if check.answers:
        lines += ["| Prompt | Answer after training | Stopped at EOS |", "|---|---|---|"]
        lines += [f"| {md_cell(a.prompt)} | {md_cell(a.text) or '*(empty)*'} | {stopped_text(a)} |" for a in check.answers]
        lines += ["", f"Greedy decoding; answers cut at {ANSWER_CHARS} characters. Before-training answers: "
                  "`cost.json`, `summary.generation_check`."]
    return "\n".join(lines) + "\n"


def render_card(recipe: Recipe, ledger: dict[str, Any], recipe_file: str = "recipe.yaml") -> str:
    meta = yaml.safe_dump(front_matter(recipe, ledger), sort_keys=False, allow_unicode=True)
    model = ledger.get("model") or {}
    sources = "\n".join(
        f"- `{s.hub or s.path}` ({s.format}{', ' + s.license if s.license else ''}"
        f"{', sample ' + str(s.sample) if s.sample else ''})" for s in recipe.data.sources)
    if cut := (ledger.get("summary") or {}).get("data_truncation"):
        from arzan.data import Truncation

        sources += "".join(f"\n- **{line}**" for line in Truncation.notes(cut))
    lo = recipe.lora
    backend = f"`{model.get('backend') or 'unknown'}` backend" + (
        f" ({model['backend_version']})" if model.get("backend_version") else "")
    return f"""---
{meta}---

# {recipe.name}

{recipe.description or 'A LoRA fine-tune made with arzan.'}

LoRA adapter for {base_model_text(recipe)} (r={lo.r}, alpha={lo.lora_alpha}, modules: {', '.join(lo.target_modules)}),
trained with TRL's SFTTrainer through the {backend}, method {model.get('method') or 'lora'}.

## Training cost

{cost_table(ledger)}

Every figure comes from this run's `cost.json` ledger; "measured" figures were timed during the run,
"estimated" ones were derived (see the ledger).
{generation_section(ledger)}
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
arzan train {recipe_file} --out NEW_RUN_FOLDER
```

`{recipe_file}` sits in the run folder next to `adapter/`; it holds the price and caps the run
started with (a cap raised on a resume, and each session's price, are in `cost.json`).
"""


def write_card(path: Path, recipe: Recipe, ledger: dict[str, Any]) -> Path:
    """Atomic: the card is rewritten after training and after every `arzan eval`, on machines that
    get killed."""
    from arzan.fileio import write_text_atomic

    write_text_atomic(path, render_card(recipe, ledger))
    return path


def refresh_card(run_dir: Path, ledger: dict[str, Any]) -> Path | None:
    """Rewrites RUN/adapter/README.md from `ledger` after something other than the training added
    to the bill (a standalone `arzan eval` is a session of its own): the card's "Training cost"
    table must show what cost.json says. Same renderer as after training, with the run folder's own
    recipe.yaml, as a resumed run uses. None where there is no card to refresh (no adapter, or a
    card someone removed: arzan does not bring it back uninvited).

    The recipe is read without `load_recipe`'s checks: a card needs the data's names, not the data
    files themselves, which may be gone from the machine that runs the eval."""
    adapter, recipe_file = Path(run_dir) / "adapter", Path(run_dir) / "recipe.yaml"
    card = adapter / "README.md"
    if not (adapter / "adapter_config.json").is_file() or not card.is_file() or not recipe_file.is_file():
        return None
    from arzan.recipe import recipe_from_dict

    try:
        raw = yaml.safe_load(recipe_file.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ArzanError(f"{recipe_file}: unreadable recipe ({first_line(exc)})") from None
    if not isinstance(raw, dict):
        raise ArzanError(f"{recipe_file}: not a recipe (a YAML mapping)")
    recipe = recipe_from_dict(raw, source=str(recipe_file))
    recipe._base_dir = recipe_file.resolve().parent
    return write_card(card, recipe, ledger)


def read_front_matter(path: Path) -> dict[str, Any]:
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---\n"):
        raise ValueError(f"{path}: no YAML front matter")
    return yaml.safe_load(text[4: text.index("\n---", 4)])
