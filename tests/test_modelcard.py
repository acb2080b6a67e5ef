"""The adapter's model card (adapter/README.md), from a recipe and a ledger, without training.

The front matter is parsed back the way the Hub does (huggingface_hub's ModelCard, when installed),
so a field the Hub would misread shows up here.
"""

from __future__ import annotations

import yaml

from arzan.cost.ledger import ModelInfo, new_ledger
from arzan.cost.prices import Price, resolve_exchange
from arzan.modelcard import hub_base_model, render_card, write_card
from arzan.recipe import recipe_from_dict
from tests.conftest import base_recipe

CATALOG = Price(provider="colab", gpu="A100-40GB", pricing="on-demand", usd_per_gpu_hour=1.18,
                source="https://colab.research.google.com/signup", as_of="2026-11-01")


def ledger(price: Price | None = None, **model) -> dict:
    info = ModelInfo(**{"base": "arzan/tiny-llama-kk", "method": "lora", "backend": "hf",
                        "backend_version": "peft 0.21.2", **model})
    return new_ledger("t", price or Price(), resolve_exchange(), info).model_dump(mode="json")


def recipe(name: str = "arzan/tiny-llama-kk"):
    return recipe_from_dict(base_recipe(model={"name": name, "backend": "auto"}))


def parse_card(text: str) -> tuple[dict, str]:
    """(metadata, body), parsed as the Hub parses it when huggingface_hub is there."""
    try:
        from huggingface_hub import ModelCard
    except ImportError:
        assert text.startswith("---\n")
        end = text.index("\n---", 4)
        return yaml.safe_load(text[4:end]) or {}, text[end + 4:]
    card = ModelCard(text)
    return card.data.to_dict(), card.text


def price_row(body: str) -> str:
    return next(line for line in body.splitlines() if line.startswith("| Price |"))


def test_card_names_the_backend_and_its_version():
    for backend, version in (("hf", "peft 0.21.2 (auto fell back to hf: no CUDA GPU)"),
                             ("unsloth", "unsloth 2026.10.9")):
        meta, body = parse_card(render_card(recipe("Qwen/Qwen2.5-1.5B-Instruct"),
                                            ledger(backend=backend, backend_version=version)))
        assert f"through the `{backend}` backend ({version})" in body
        assert f"| Backend | {backend} ({version}) |" in body
        assert ("unsloth" in meta["tags"]) == (backend == "unsloth")


def test_card_without_backend_says_unknown_not_none():
    _, body = parse_card(render_card(recipe(), ledger(backend=None, backend_version=None)))
    assert "`unknown` backend" in body and "None" not in body


def test_price_row_for_a_user_rate_and_a_catalog_price():
    _, body = parse_card(render_card(recipe(), ledger()))
    row = price_row(body)
    assert "None" not in row and "as of" not in row
    assert row == "| Price | 0.000 USD per hour (rate set by the user; no catalog source) |"  # a CPU: no GPU-hours
    _, body = parse_card(render_card(recipe(), ledger(Price(gpu="T4", usd_per_gpu_hour=0.35))))
    assert price_row(body) == "| Price | 0.350 USD per GPU-hour (T4, rate set by the user; no catalog source) |"
    _, body = parse_card(render_card(recipe(), ledger(CATALOG)))
    assert price_row(body) == ("| Price | 1.180 USD per GPU-hour (colab, A100-40GB, on-demand; "
                               "source: https://colab.research.google.com/signup, as of 2026-11-01) |")


def test_a_run_billed_at_two_prices_shows_both_in_the_card_and_the_report(tmp_path):
    """--price 1 then --resume --price 3: the last price alone would not explain the total."""
    from arzan.cost.ledger import Session, apply_totals, new_ledger as fresh, utcnow
    from arzan.reporting.prov import rows
    from arzan.reporting.runs import Run

    one, three = Price(usd_per_gpu_hour=1.0), Price(usd_per_gpu_hour=3.0)
    led = fresh("t", three, resolve_exchange(), ModelInfo(base="arzan/tiny-llama-kk"))
    led.sessions = [Session(index=i, started_at=utcnow(), billed_seconds=60.0, price=p)
                    for i, p in enumerate((one, three, three))]
    doc = apply_totals(led).model_dump(mode="json")
    row = price_row(parse_card(render_card(recipe(), doc))[1])
    assert row == ("| Price | session 0: 1.000 USD per hour (rate set by the user; no catalog source); "
                   "sessions 1, 2: 3.000 USD per hour (rate set by the user; no catalog source) |")
    shown = dict(rows(Run(path=tmp_path, ledger=doc)))["Price"]
    assert "session 0: 1.000" in shown[0][1] and "sessions 1, 2: 3.000" in shown[0][1]
    led.sessions = led.sessions[1:]  # one price: the usual row
    assert price_row(parse_card(render_card(recipe(), led.model_dump(mode="json")))[1]).startswith("| Price | 3.000")


def test_base_model_is_a_hub_id_only():
    meta, body = parse_card(render_card(recipe("meta-llama/Llama-3.1-8B-Instruct"), ledger()))
    assert meta["base_model"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert meta["library_name"] == "peft" and meta["language"] == ["kk"]
    assert "LoRA adapter for `meta-llama/Llama-3.1-8B-Instruct` (r=8" in body


def test_tiny_model_has_no_base_model_and_the_body_says_why():
    meta, body = parse_card(render_card(recipe("arzan/tiny-llama-kk"), ledger()))
    assert "base_model" not in meta
    assert meta["library_name"] == "peft" and "arzan" in meta["tags"]
    assert "`arzan/tiny-llama-kk` (arzan's offline tiny test model" in body
    assert "not on the Hugging Face Hub" in body


def test_local_folder_has_no_base_model(tmp_path, monkeypatch):
    (tmp_path / "models" / "kk-base").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    for name in (str(tmp_path / "models" / "kk-base"), "models/kk-base", "./models/kk-base", "~/models/base"):
        meta, body = parse_card(render_card(recipe(name), ledger()))
        assert "base_model" not in meta, name
        assert f"`{name}` (a local model folder, not a Hub id" in body
    assert hub_base_model("gpt2") == "gpt2"
    assert hub_base_model("org/name-1.5B") == "org/name-1.5B"
    assert hub_base_model("org/../x") is None and hub_base_model("a/b/c") is None


def test_generation_check_in_the_card(tmp_path):
    led = ledger()
    led["summary"]["generation_check"] = {
        "prompts": [{"prompt": "Цифрмен жаз: он екі", "text": "12", "stopped_at_eos": True, "n_tokens": 3,
                     "before": "шу шу", "before_stopped_at_eos": False},
                    {"prompt": "Апта күндері | қайсы?", "text": "дүйсенбі " * 40, "stopped_at_eos": False,
                     "n_tokens": 64, "before": "x", "before_stopped_at_eos": False}],
        "stopped": 1, "total": 2, "ok": False,
        "summary": "1/2 answers stopped at EOS; 1 ran to the 64-token limit: the model may never stop"}
    card = write_card(tmp_path / "README.md", recipe(), led).read_text(encoding="utf-8")
    meta, body = parse_card(card)
    assert "generation_check" not in meta
    section = body[body.index("## Generation check"):body.index("## Data")]
    assert "**Warning: the model never stops** — 1 of 2 answers after training ran to the token limit" in section
    assert "1/2 answers stopped at EOS; 1 ran to the 64-token limit" in section
    assert "| Цифрмен жаз: он екі | 12 | yes |" in section
    row = next(line for line in section.splitlines() if line.startswith("| Апта"))
    assert row.startswith("| Апта күндері \\| қайсы? | дүйсенбі") and row.endswith("| no — never stops (64 tokens) |")
    assert len(row.split(" | ")[1]) <= 120 and "…" in row
    assert "шу" not in section  # after-training answers only

    led["summary"]["generation_check"]["prompts"].pop()
    led["summary"]["generation_check"].update(stopped=1, total=1, ok=True, summary="1/1 answers stopped at EOS")
    _, body = parse_card(render_card(recipe(), led))
    assert "1/1 answers stopped at EOS" in body and "never stops" not in body


def test_no_generation_section_without_a_check():
    _, body = parse_card(render_card(recipe(), ledger()))
    assert "## Generation check" not in body


def test_hub_datasets_and_co2_reach_the_front_matter():
    """A recipe on hub data lists those datasets (local files are not Hub ids); a GPU run priced in
    the catalog carries co2_eq_emissions in grams, as the Hub's metadata spec wants."""
    raw = base_recipe(model={"name": "meta-llama/Llama-3.1-8B-Instruct", "backend": "auto"})
    raw["data"] = {"sources": [{"hub": "AmanMussa/kazakh-instruction-v2", "format": "alpaca"},
                               {"hub": "sabinaasker/kazakh_dolly", "format": "alpaca"},
                               {"path": "arzan://sample/kk_arith.jsonl", "format": "alpaca"}]}
    led = ledger(CATALOG)
    led["energy"] = {**led["energy"], "kwh": 1.5, "co2_kg": 0.75, "basis": "measured", "method": "nvml"}
    meta, _ = parse_card(render_card(recipe_from_dict(raw), led))
    assert meta["datasets"] == ["AmanMussa/kazakh-instruction-v2", "sabinaasker/kazakh_dolly"]
    assert meta["base_model"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert meta["co2_eq_emissions"]["emissions"] == 750.0  # grams


def test_small_costs_keep_significant_digits():
    """A short CPU eval billed 0.0031 ₸: the card says so, not `0.00 ₸`."""
    led = ledger()
    led["money"].update(kzt=0.0031, usd=0.0031 / 520)
    _, body = parse_card(render_card(recipe(), led))
    assert "| Cost | 0.0031 ₸ = 0.0000060 $ (measured) |" in body


def test_refresh_card_rewrites_an_existing_card_from_the_run_folder(tmp_path):
    """After `arzan eval` adds a session, the card is rendered again from the run's own recipe.yaml
    and the ledger as it now stands; a folder without a card (or adapter) is left alone."""
    from arzan.modelcard import refresh_card

    run, rec = tmp_path / "run", recipe()
    (run / "adapter").mkdir(parents=True)
    (run / "recipe.yaml").write_text(rec.resolved_yaml(), encoding="utf-8")
    assert refresh_card(run, ledger()) is None  # no adapter yet
    (run / "adapter" / "adapter_config.json").write_text("{}", encoding="utf-8")
    assert refresh_card(run, ledger()) is None  # no card to refresh
    write_card(run / "adapter" / "README.md", rec, ledger())
    led = ledger()
    led["sessions"] = [{"index": 0}, {"index": 1}]
    led["money"].update(kzt=13.25)
    card = refresh_card(run, led).read_text(encoding="utf-8")
    assert "| Sessions | 2 |" in card and "| Cost | 13.25 ₸" in card
    assert card == render_card(rec, led)


def test_a_cpu_run_at_a_user_rate_says_its_hours_are_no_gpu_hours():
    """--price 1 on a CPU: 0 GPU-hours beside a non-zero cost reads as an error unless it says why."""
    led = ledger(Price(usd_per_gpu_hour=1.0))
    led["billed_seconds"], led["gpu_hours"] = 36.0, 0.0
    _, body = parse_card(render_card(recipe(), led))
    assert "| GPU-hours | 0.0000 (no GPU ran: 0.0100 billed hours of this machine, at its own rate) |" in body
    assert "| Price | 1.000 USD per hour (rate set by the user; no catalog source) |" in body


def test_money_in_the_card_follows_the_reports_rule():
    """Whole tenge from 1,000 up, two decimals below, $ with two (tiny figures two significant
    digits): a figure copied from the card is found in the report and the terminal."""
    doc = ledger()
    doc["money"].update(kzt=31.684, usd=0.0024, kzt_per_1m_tokens=1991.64, usd_per_1m_tokens=3.8301)
    _, body = parse_card(render_card(recipe(), doc))
    assert "| Cost | 31.68 ₸ = 0.0024 $ (measured) |" in body
    assert "| Cost per 1M trained tokens | 1,992 ₸ = 3.83 $ (the training sessions' bill; evals and merges after " \
           "it are in Cost above, not here) |" in body
