"""`arzan estimate`: exact token counts, the Trainer's schedule, memory, money, and a real run to check.

Expected figures come from independent sources (published parameter counts, peft's own count, the
ledger of a real run), never from the estimator's own formulas.
"""

from __future__ import annotations

import importlib.util
import json
import os

import pytest

from arzan.errors import ArzanError
from arzan.estimate import check_budget, estimate, kzt_text, preflight_budget, render
from arzan.numbers import hms
from arzan.recipe import load_recipe, recipe_from_dict
from arzan.throughput import load_table
from arzan.vram import ModelShape, estimate_vram
from tests.conftest import REPO, base_recipe

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_throughput", REPO / "bench" / "throughput.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# --- model shapes: published sizes and peft's own count -----------------------------------------------
@pytest.mark.parametrize("name, billions", [("Llama-3.1-8B", 8.03), ("Llama-3.2-3B", 3.21), ("Llama-3.2-1B", 1.24)])
def test_shipped_configs_have_the_published_sizes(name, billions):
    assert load_table().models[name].total_params / 1e9 == pytest.approx(billions, abs=0.01)


def test_params_and_lora_params_match_the_real_model(tiny_dir):
    """Count from config.json, compare with the model peft actually builds."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    shape = ModelShape.from_dir(tiny_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert shape.total_params == sum(p.numel() for p in model.parameters())
    peft = get_peft_model(model, LoraConfig(r=8, target_modules=["q_proj", "v_proj", "down_proj"]))
    trainable, _ = peft.get_nb_trainable_parameters()
    assert shape.lora_params(8, ["q_proj", "v_proj", "down_proj"]) == trainable


def test_hub_model_without_network_uses_the_shipped_config_or_a_size_hint(write_recipe):
    r = recipe_from_dict(base_recipe(model={"name": "unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit"}))
    from arzan.throughput import model_shape

    assert model_shape(r).total_params == load_table().models["Llama-3.1-8B"].total_params
    unknown = recipe_from_dict(base_recipe(model={"name": "someone/kazakh-7b-that-is-not-here"}))
    with pytest.raises(ArzanError, match="--size"):
        model_shape(unknown)
    assert "Llama-3.2-3B" in model_shape(unknown, size_hint="3b").source
    with pytest.raises(ArzanError, match="size"):
        model_shape(unknown, size_hint="big")
    with pytest.raises(ArzanError, match="'huge' is not a size"):  # malformed even where no size is needed
        model_shape(r, size_hint="huge")


def test_a_size_hint_the_models_own_config_overrides_is_said_to_be_unused(tiny_tokenizer):
    r = recipe_from_dict(base_recipe(model={"name": "unsloth/Meta-Llama-3.1-8B-Instruct-bnb-4bit"}))
    est = estimate(r, tokenizer=tiny_tokenizer, size_hint="70B")
    assert any(n.startswith("--size 70B not used: the model's own config is known") for n in est.notes)
    assert not any("--size" in n for n in estimate(r, tokenizer=tiny_tokenizer).notes)


# --- memory ---------------------------------------------------------------------------------------------
def test_vram_marks_what_fits():
    s = load_table().models["Llama-3.1-8B"]
    lora = s.lora_params(16, "all-linear")
    full = estimate_vram(s, lora_params=lora, micro_batch_tokens=2048, qlora=False, checkpointing=True)
    four = estimate_vram(s, lora_params=lora, micro_batch_tokens=2048, qlora=True, checkpointing=True)
    assert 16 < full.weights < 16.2  # 8.03 B params x 2 bytes
    assert full.total > 16 and four.total < 16  # 16-bit LoRA of an 8B model does not fit a T4; QLoRA does
    no_ckpt = estimate_vram(s, lora_params=lora, micro_batch_tokens=2048, qlora=False, checkpointing=False)
    assert no_ckpt.activations > 5 * full.activations
    longer = estimate_vram(s, lora_params=lora, micro_batch_tokens=8192, qlora=False, checkpointing=True)
    assert longer.total > full.total


def test_vram_follows_each_backends_loss_and_qlora_preparation():
    """hf: TRL's chunked loss holds one 256-token chunk of logits whatever the length, and peft's QLoRA
    preparation keeps embeddings, head and norms in float32; unsloth holds all bf16 logits, 16-bit rest."""
    s = load_table().models["Llama-3.1-8B"]
    lora = s.lora_params(16, "all-linear")

    def vram(backend, tokens, qlora=False):
        return estimate_vram(s, lora_params=lora, micro_batch_tokens=tokens, qlora=qlora, checkpointing=True,
                             backend=backend)

    assert vram("hf", 2048).logits == vram("hf", 8192).logits < vram("unsloth", 8192).logits
    assert vram("unsloth", 8192).logits == 4 * vram("unsloth", 2048).logits
    assert vram("hf", 128).logits < vram("hf", 256).logits  # a micro-batch under one chunk
    unquantized = s.total_params - s.layers * s.layer_linear_params
    gap = vram("hf", 2048, qlora=True).weights - vram("unsloth", 2048, qlora=True).weights
    assert gap == pytest.approx(unquantized * 2 / 1e9)


@pytest.mark.parametrize("ckpt", [None, False])
def test_estimate_shows_memory_with_and_without_checkpointing(tiny_tokenizer, ckpt):
    """Both settings are estimated and shown; the fit marks follow the recipe's setting (None: on, on a GPU)."""
    from rich.console import Console

    raw = base_recipe(model={"name": LLAMA_8B, "backend": "hf"})
    raw["train"].update(max_steps=10, max_length=2048, per_device_train_batch_size=2, gradient_checkpointing=ckpt)
    est = estimate(recipe_from_dict(raw), tokenizer=tiny_tokenizer)
    on = ckpt is not False
    v, w = est.vram, est.vram_other
    assert (v.checkpointing, w.checkpointing) == (on, not on)
    full, ckpted = (v, w) if not on else (w, v)
    assert full.activations > 5 * ckpted.activations and full.total > ckpted.total
    assert (v.weights, v.adapter, v.logits) == (w.weights, w.adapter, w.logits)  # only activations differ
    for o in est.options:
        assert o.fits == (v.total <= o.vram_gb) and o.fits_other == (w.total <= o.vram_gb), o.device
    assert any(o.fits != o.fits_other for o in est.options)  # a 4096-token micro-batch of an 8B: some cards differ
    console = Console(width=220, record=True)
    console.print(render(est))
    text = console.export_text()
    assert f"with gradient checkpointing{' (the recipe' if on else ':'}" in text
    assert f"without gradient checkpointing{' (the recipe' if not on else ':'}" in text
    assert f"~{v.total:.1f} GB" in text and f"~{w.total:.1f} GB" in text
    header = next(line for line in text.splitlines() if "price" in line and "tok/s" in line)
    assert ("w/o ckpt" if on else "with ckpt") in header  # the other setting's fit column


# --- tokens and schedule -----------------------------------------------------------------------------------
def _price(recipe: dict) -> dict:
    recipe["cost"] = {"usd_per_gpu_hour": 1.0}
    return recipe


def test_schedule_follows_the_trainer_over_epochs():
    """40 steps of batch 16 over n rows: ceil(n/16) steps per epoch, the rest into a second epoch."""
    from arzan.data import load_data

    r = load_recipe(REPO / "recipes" / "smoke.yaml", ["train.max_steps=40", "cost.usd_per_gpu_hour=1"])
    n = len(load_data(r.data, r.base_dir).train)
    est = estimate(r)
    per_epoch = -(-n // 16)
    assert est.tokens.rows == n and est.plan.steps == 40 and per_epoch < 40
    assert est.plan.epochs == pytest.approx(1 + (40 - per_epoch) * 16 / n)
    assert est.plan.evals == 1 and est.plan.saves == 1  # eval_steps/save_steps 60 > 40: only at the last step
    assert est.target is not None and est.target.device == "cpu" and est.target.usd > 0
    assert est.target.phases["eval"] > 0  # the generation check after training is billed too


@pytest.mark.slow
@pytest.mark.parametrize("fmt, flat", [("alpaca", {}), ("alpaca", {"packing": True}), ("text", {}),
                                       ("text", {"packing": True}), ("text", {"padding_free": True})])
def test_token_count_equals_what_the_trainer_trains_on(tmp_path, write_recipe, fmt, flat):
    """One epoch: the estimate's counts are the ledger's, token for token (text rows train their first
    token, which packed, padding-free batches mask)."""
    from arzan.train import train

    rows = [json.loads(x) for x in (REPO / "src/arzan/resources/sample/kk_arith.jsonl").read_text().splitlines()[:64]]
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps({"text": f"{r['instruction']} {r['output']}"} if fmt == "text" else r,
                                         ensure_ascii=False) for r in rows), encoding="utf-8")
    raw = _price(base_recipe(data={"sources": [{"path": str(data), "format": fmt}]}))
    if flat.get("padding_free"):  # the hf path pads: padding_free alone is unsloth's, and is turned off here
        raw["model"]["backend"] = "hf"
    raw["train"].update(max_steps=-1, num_train_epochs=1, save_steps=1000, **flat)
    recipe = load_recipe(write_recipe(raw))
    est = estimate(recipe)
    led = train(recipe, out=tmp_path / "run").ledger
    assert led["progress"]["step"] == est.plan.steps
    assert (led["tokens"]["seen"], led["tokens"]["trained"]) == (est.plan.seen, est.plan.trained)


def test_large_sets_are_sampled_and_say_so(write_recipe):
    r = load_recipe(REPO / "recipes" / "smoke.yaml", ["cost.usd_per_gpu_hour=1"])
    exact, sampled = estimate(r), estimate(r, sample_rows=200)
    assert exact.tokens.extrapolated is None
    assert "200 of" in sampled.tokens.extrapolated and "seed 42" in sampled.tokens.extrapolated
    assert sampled.tokens.seen == pytest.approx(exact.tokens.seen, rel=0.05)
    assert sampled.tokens.rows == pytest.approx(exact.tokens.rows, rel=0.01)


# --- GPUs, money, budget --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def llama_estimate(tiny_tokenizer):
    """A Llama-3.1-8B recipe priced on every catalog GPU; the tiny tokenizer stands in (no network here)."""
    raw = base_recipe(model={"name": LLAMA_8B, "backend": "auto"})
    raw["train"].update(max_steps=-1, num_train_epochs=2, max_length=2048, per_device_train_batch_size=2)
    recipe = recipe_from_dict(raw)
    return recipe, estimate(recipe, tokenizer=tiny_tokenizer)


def test_a_recipe_paid_in_colab_compute_units_still_sees_every_catalog_gpu(llama_estimate, tiny_tokenizer):
    """The 5000 ₸ recipe pays Colab's compute units, which only Colab sells: the catalog rows used to
    be Colab's alone (and none with --provider runpod), the rest dropped as having no such price."""
    from rich.console import Console

    from arzan.cost.prices import load_catalog

    recipe, _ = llama_estimate
    colab = recipe.model_copy(update={"cost": recipe.cost.model_copy(
        update={"gpu": "A100-40GB", "provider": "colab", "pricing": "compute-units"})})
    est = estimate(colab, tokenizer=tiny_tokenizer)
    assert {o.device for o in est.options} == set(load_catalog().gpus)
    assert est.target.price.provider == "colab" and est.target.price.pricing == "compute-units"
    assert {o.price.provider for o in est.options} - {"colab"}  # other providers' rows are there
    runpod = estimate(colab, tokenizer=tiny_tokenizer, provider="runpod")
    assert runpod.options and {o.price.provider for o in runpod.options} == {"runpod"}
    console = Console(width=200, record=True)
    console.print(render(est))
    rows = [line for line in console.export_text().splitlines() if "A100-40GB" in line and "colab" in line]
    assert len(rows) == 1 and rows[0].lstrip().startswith("▸")  # the recipe's own row, not again as a twin


def test_every_catalog_gpu_is_priced_cheapest_first(llama_estimate):
    from arzan.cost.prices import load_catalog

    _, est = llama_estimate
    assert {o.device for o in est.options} == set(load_catalog().gpus)
    fitting = [o for o in est.options if o.fits]
    assert [o.usd for o in fitting] == sorted(o.usd for o in fitting)
    assert all(o.fits is False for o in est.options[len(fitting):])
    t4 = next(o for o in est.options if o.device == "T4")
    assert t4.fits is False and t4.vram_gb == 16
    for o in est.options:
        assert o.basis in ("measured", "derived") and o.source
        assert o.kzt == pytest.approx(o.usd * est.exchange.usd_kzt)
        assert o.usd == pytest.approx(o.billed_seconds / 3600 * o.price.usd_per_gpu_hour)
        assert o.phases["setup"] > 100  # 16 GB of weights from the hub on a fresh machine


def test_this_machines_row_is_sized_for_the_backend_it_would_run(tiny_tokenizer, monkeypatch):
    """auto on a T4 without unsloth trains with hf: its memory, not unsloth's, decides whether it fits."""
    import arzan.estimate as est_mod

    raw = base_recipe(model={"name": LLAMA_8B, "backend": "auto", "load_in_4bit": True})
    raw["lora"].update(r=64, target_modules="all-linear")
    raw["train"].update(max_steps=10, max_length=4096, per_device_train_batch_size=2)
    recipe = recipe_from_dict(raw)
    monkeypatch.setattr(est_mod, "_detected_gpu", lambda: "T4")
    monkeypatch.setattr(est_mod, "_backend_here", lambda recipe, default: "hf")
    est = estimate(recipe, tokenizer=tiny_tokenizer)
    shape = load_table().models["Llama-3.1-8B"]
    hf = estimate_vram(shape, lora_params=est.lora_params, micro_batch_tokens=8192, qlora=True, checkpointing=True,
                       backend="hf")
    assert est.target.backend == "hf" and est.target.fits == (hf.total <= 16)
    assert est.vram.total < hf.total  # the catalog rows: unsloth, as auto picks on a rented GPU
    t4 = next(o for o in est.options if o.device == "T4")
    assert t4.fits is True and est.target.fits is False  # what the reviewer saw: yes for a run that does not fit


def test_h100_pcie_is_estimated_at_its_own_speed(llama_estimate):
    """The PCIe board has 76% of the SXM board's FLOP/s and 60% of its bandwidth: it takes longer, and
    its bill is its own price times that longer time (not the SXM time at the PCIe price)."""
    _, est = llama_estimate
    by = {o.device: o for o in est.options}
    sxm, pcie = by["H100"], by["H100-PCIe"]
    assert pcie.price.gpu == "H100-PCIe" and pcie.tokens_per_s < sxm.tokens_per_s
    assert pcie.phases["train"] > sxm.phases["train"]
    assert pcie.usd == pytest.approx(pcie.billed_seconds / 3600 * pcie.price.usd_per_gpu_hour)
    assert "756" in pcie.source and "989" in sxm.source  # each derived from its own board's spec


def test_render_shows_the_table(llama_estimate):
    from rich.console import Console

    _, est = llama_estimate
    console = Console(width=200, record=True)
    console.print(render(est))
    text = console.export_text()
    for word in ("A100-40GB", "H100", "derived", "GPU memory", "₸"):
        assert word in text
    json.dumps(est.to_dict(), default=str)  # --json works


def test_the_cap_is_held_against_the_catalog_rows_too(llama_estimate):
    """`--budget` on a machine whose own row is free (a CPU) still says which GPUs to rent stay under it."""
    from arzan.estimate import catalog_within_cap

    recipe, est = llama_estimate
    assert catalog_within_cap(recipe, est) is None  # no cap, nothing to say
    fitting = sorted((o for o in est.options if o.fits is not False and o.billed_seconds), key=lambda o: o.kzt)
    capped = recipe.model_copy(update={"budget": recipe.budget.model_copy(update={"max_kzt": fitting[0].kzt / 2})})
    own = "; the recipe's own row (▸) is within it"  # this CPU's row: free, so the exit status is 0
    assert est.target is not None and check_budget(capped, est) is None
    assert catalog_within_cap(capped, est) == (f"over the cap on every catalog GPU it fits on (the cheapest: "
                                               f"{fitting[0].device} at {fitting[0].price.provider}, "
                                               f"{kzt_text(fitting[0].kzt)}){own}")
    between = (fitting[1].kzt + fitting[2].kzt) / 2
    capped = recipe.model_copy(update={"budget": recipe.budget.model_copy(update={"max_kzt": between})})
    assert catalog_within_cap(capped, est).startswith(f"within the cap on 2 of the {len(fitting)} catalog GPUs "
                                                      f"it fits on: {fitting[0].device} ")
    roomy = recipe.model_copy(update={"budget": recipe.budget.model_copy(update={"max_kzt": fitting[-1].kzt * 2})})
    assert catalog_within_cap(roomy, est) == "within the cap on every catalog GPU it fits on"
    # a time cap is held against time: the nearest row is the fastest, not the cheapest
    fastest = min(fitting, key=lambda o: o.billed_seconds)
    timed = recipe.model_copy(update={"budget": recipe.budget.model_copy(
        update={"max_hours": fastest.billed_seconds / 3600 / 2})})
    assert catalog_within_cap(timed, est).startswith(f"over the cap on every catalog GPU it fits on (the fastest: "
                                                     f"{fastest.device} at {fastest.price.provider}, "
                                                     f"{hms(fastest.billed_seconds)} billed)")


def test_budget_refusal_names_the_estimate_the_cap_and_the_override(write_recipe):
    r = load_recipe(REPO / "recipes" / "smoke.yaml", ["train.max_steps=40", "cost.usd_per_gpu_hour=100"])
    est = estimate(r)
    assert check_budget(r, est) is None  # no caps
    r.budget = r.budget.model_copy(update={"max_kzt": est.target.kzt / 2})
    msg = check_budget(r, est)
    assert "budget.max_kzt" in msg and "--allow-over-budget" in msg
    assert kzt_text(est.target.kzt) in msg  # the estimate, as printed
    with pytest.raises(ArzanError, match="refusing to start"):
        preflight_budget(r)
    warning, step_s, steps = preflight_budget(r, allow_over_budget=True)
    assert "--allow-over-budget" in warning
    assert steps == 40 and step_s == pytest.approx(est.target.phases["train"] / 40)  # the meter's prior
    r.budget = r.budget.model_copy(update={"max_kzt": est.target.kzt * 10})
    assert preflight_budget(r)[0] is None


# --- the check that matters: estimate, then run it -------------------------------------------------------------
# The target is 15%. bench/results/cpu-smoke-estimate-check*.json hold this check repeated on
# the shared 2-core box it was written on: quiet, all 13 runs within 15% (sd 7-9%, worst +14.3%);
# while other engineers' tests ran (load 4-7), ten runs erred by -21.5 to +16.7% (sd 12%), because the
# box changes speed between the warm-up and the run. 35% is three of those deviations, so the test
# does not flake on a busy box; ARZAN_ESTIMATE_TOLERANCE=0.15 holds it to the target on a quiet one.
TOLERANCE = float(os.environ.get("ARZAN_ESTIMATE_TOLERANCE", "0.35"))


@pytest.fixture
def one_thread():
    """One torch thread for timing tests: with two OpenMP threads on a 2-core box shared with other
    processes, each step waits at barriers for a descheduled thread and step times swing 5-10x
    (measured: 0.08-1.2 s per smoke step with 2 threads, 0.04-0.05 s with 1, same box, same minute)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_estimate_matches_a_real_cpu_run(tmp_path, record_property, one_thread):
    """Estimate the smoke run, run it, compare time and money.

    The CPU throughput and fixed overheads are calibrated by a short warm-up run in this same test
    (bench/throughput.py's check_estimate, the code that fills throughput.yaml), so what is checked
    is the estimator's arithmetic (steps, epochs, padding, evaluations, checkpoints, the generation
    check, overheads) rather than a speed measured on another machine on another day. The shipped
    CPU entry is compared too, and reported, but not asserted.
    """
    c = _bench().check_estimate(REPO / "recipes" / "smoke.yaml", tmp_path)
    for key in ("error", "shipped_entry_error", "calibrated_seen_tokens_per_s"):
        record_property(key, c[key])
    print(f"estimate {c['estimated_s']:.1f}s vs bill {c['billed_s']:.1f}s: {c['error']:+.1%} "
          f"(shipped CPU entry: {c['shipped_entry_error']:+.1%})")
    (seen, trained), (led_seen, led_trained) = c["tokens"]["estimated"], c["tokens"]["ledger"]
    # 240 steps are several epochs: whole epochs are exact, the partial one is priced at the mean row
    assert led_seen == pytest.approx(seen, rel=0.01) and led_trained == pytest.approx(trained, rel=0.02)
    assert c["evals"]["estimated"] == c["evals"]["ran"]  # as many evaluations as the Trainer ran
    assert c["error_money"] == pytest.approx(c["error"], abs=1e-9)  # money is time x price: one error
    assert abs(c["error"]) <= TOLERANCE, f"estimate off by {c['error']:+.1%} (tolerance {TOLERANCE:.0%})"


@pytest.mark.parametrize("size", ["0B", "-1B", "nanB", "infB"])
def test_a_size_hint_that_is_not_a_size_is_named(write_recipe, size):
    from arzan.estimate import estimate

    recipe = load_recipe(write_recipe(base_recipe(model={"name": "no-such-org/no-such-model", "backend": "auto"})))
    with pytest.raises(ArzanError, match=rf"--size: '{size}' is not a size"):
        estimate(recipe, size_hint=size)


def test_estimate_checks_the_budget_against_the_gpu_asked_for():
    """`--gpu H200 --budget ...` asks whether the run fits the cap on an H200, not on this CPU."""
    from typer.testing import CliRunner

    from arzan.cli import app

    smoke = str(REPO / "recipes" / "smoke.yaml")
    runner = CliRunner()
    on_h200 = runner.invoke(app, ["estimate", smoke, "--gpu", "H200", "--budget", "0.001USD"])
    assert on_h200.exit_code == 3, on_h200.output  # a script can stop before renting
    assert "over budget" in on_h200.output and "H200" in on_h200.output.split("over budget")[1]
    roomy = runner.invoke(app, ["estimate", smoke, "--gpu", "H200", "--budget", "1000USD"])
    assert roomy.exit_code == 0 and "over budget" not in roomy.output


def test_small_money_keeps_significant_digits_in_the_terminal():
    """A CPU step costs thousandths of a tenge; '0.00 ₸' would say the step or the cap check was free."""
    from arzan.numbers import fixed

    assert kzt_text(0.0031) == "0.0031 ₸" and kzt_text(0.25) == "0.25 ₸" and kzt_text(5300.4) == "5,300 ₸"
    assert fixed(0.0042, 2) == "0.0042" and fixed(1234.5, 1) == "1,234.5" and fixed(0.0, 2) == "0.00"


def test_a_tokenizer_of_another_model_is_warned_about(llama_estimate, tiny_tokenizer):
    """The tiny model's tokenizer standing in for Llama-3.1-8B's counts other tokens: the estimate
    says so in its notes; the model's own tokenizer (same vocabulary) gets no such note."""
    recipe, est = llama_estimate
    assert any("tokenizer has" in n and "128,256-token vocabulary" in n for n in est.notes)
    tiny = recipe_from_dict(base_recipe(train={"max_steps": 5}))
    assert not any("tokenizer has" in n for n in estimate(tiny, tokenizer=tiny_tokenizer).notes)


def test_a_busy_cpu_is_said_next_to_the_cpu_estimate(tiny_tokenizer, monkeypatch):
    import os

    tiny = recipe_from_dict(base_recipe(train={"max_steps": 5}))
    monkeypatch.setattr(os, "getloadavg", lambda: (4.0 * (os.cpu_count() or 1), 0.0, 0.0))
    assert any("this machine is busy" in n for n in estimate(tiny, tokenizer=tiny_tokenizer).notes)
    monkeypatch.setattr(os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert not any("busy" in n for n in estimate(tiny, tokenizer=tiny_tokenizer).notes)


def test_a_cpu_estimate_prices_the_commands_own_start_up():
    """`arzan train` bills its imports and checks as setup (~7 s on this box): the pre-check that
    guards a small cap must count them, or the setup alone passes the cap before a step is bought."""
    from arzan.estimate import estimate
    from arzan.throughput import load_table

    o = load_table().overheads["cpu"]
    assert o["command_s"] > 0
    est = estimate(load_recipe(REPO / "recipes" / "smoke.yaml", ["cost.usd_per_gpu_hour=1"]))
    assert est.target.device == "cpu" and est.target.phases["setup"] >= o["setup_s"] + o["command_s"]


def test_the_cap_as_read_is_printed_before_anything_is_paid(tmp_path):
    """`--budget 1,500h` is 1,500 hours, not 1.5: the estimate says which it read."""
    from typer.testing import CliRunner

    from arzan.cli import app

    out = CliRunner().invoke(app, ["estimate", str(REPO / "recipes" / "smoke.yaml"), "--budget", "1,500h"])
    assert out.exit_code == 0 and "budget cap: 1,500 h" in out.output
    out = CliRunner().invoke(app, ["estimate", str(REPO / "recipes" / "smoke.yaml"), "--budget", "1m"])
    assert out.exit_code == 0 and "budget cap: 0.017 h (1m00s)" in out.output  # a minute, not a misread figure


def test_estimate_prices_this_machine_at_the_users_own_rate(tmp_path):
    """`arzan train --price 1` bills 1 USD per hour of this machine; the estimate can say it first."""
    from typer.testing import CliRunner

    from arzan.cli import app

    runner = CliRunner()
    free = runner.invoke(app, ["estimate", str(REPO / "recipes" / "smoke.yaml"), "--json"])
    paid = runner.invoke(app, ["estimate", str(REPO / "recipes" / "smoke.yaml"), "--json", "--price", "1"])
    assert free.exit_code == 0 and paid.exit_code == 0, paid.output
    doc = lambda out: json.loads(out[out.index("{"):])  # noqa: E731 - past a progress bar on stderr
    free_t, paid_t = doc(free.output)["target"], doc(paid.output)["target"]
    assert free_t["usd"] == 0 and paid_t["usd"] == pytest.approx(paid_t["billed_seconds"] / 3600, rel=1e-6)
    bad = runner.invoke(app, ["estimate", str(REPO / "recipes" / "smoke.yaml"), "--price", "-1"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output


def test_estimate_json_over_the_cap_is_still_json_alone_on_stdout():
    """A script reads `--json` from stdout: the over-budget verdict goes into it and to stderr, not after it."""
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "arzan", "estimate", str(REPO / "recipes" / "smoke.yaml"), "--json",
                          "--price", "1", "--budget", "0.0001KZT"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 3, res.stderr
    doc = json.loads(res.stdout)
    assert doc["over_budget"].startswith("the estimate for 'smoke' is ") and "over budget:" in res.stderr
