"""What arzan decides on a GPU it cannot see here: bf16 or fp16, flash attention, refusals.

The GPU's own answers (native bf16, compute capability, name) are stood in by monkeypatching torch;
what is checked is arzan's decision from them, which the real GPU runs in tests/test_gpu.py depend on.
Each refusal must come before a model download and a billed setup, as a one-line ArzanError.
"""

from __future__ import annotations

import pytest
import torch

from arzan import model as arzan_model
from arzan.errors import ArzanError
from arzan.recipe import load_recipe, recipe_from_dict
from tests.conftest import base_recipe


@pytest.fixture
def gpu(monkeypatch):
    """A stand-in card: set .native (bf16 in hardware) and .capability; name follows the capability."""
    class Card:
        native, capability = True, (8, 0)

    card = Card()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True:
                        card.native or including_emulation)  # torch 2.13: emulation counts by default
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: card.capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla T4" if card.capability < (8, 0) else "A100")
    return card


def test_a_t4_computes_in_fp16_not_emulated_bf16(gpu):
    """torch's is_bf16_supported() says yes on a T4 (emulation); arzan asks for the hardware."""
    gpu.native, gpu.capability = False, (7, 5)
    assert torch.cuda.is_bf16_supported() is True  # the trap
    assert arzan_model.gpu_dtype() == torch.float16 and arzan_model._torch_dtype("auto", True) == torch.float16
    gpu.native, gpu.capability = True, (8, 0)
    assert arzan_model.gpu_dtype() == torch.bfloat16


def test_mixed_precision_follows_the_weights_dtype(gpu):
    mp = arzan_model.mixed_precision
    assert mp("bfloat16", None, None) == (True, False)
    assert mp("float16", None, None) == (False, True)  # float16 weights on an A100: fp16, not bf16
    assert mp("float32", None, None) == (True, False)
    gpu.native = False
    assert mp("float32", None, None) == (False, True)
    assert mp("bfloat16", None, True) == (False, True)  # the recipe's word is kept (refused earlier if wrong)


def packages(monkeypatch, flash_attn: bool) -> None:
    """flash_attn installed or not; unsloth never (the hf backend is the one that honours attn_implementation)."""
    real = arzan_model.importlib.util.find_spec
    stand_in = {"flash_attn": object() if flash_attn else None, "kernels": None, "unsloth": None}
    monkeypatch.setattr(arzan_model.importlib.util, "find_spec",
                        lambda name, *a: stand_in[name] if name in stand_in else real(name, *a))


def _recipe(write_recipe, model=None, train=None):
    r = base_recipe()
    r["model"] = {**r["model"], **(model or {})}
    r["train"] = {**r["train"], **(train or {})}
    return load_recipe(write_recipe(r))


@pytest.mark.parametrize(("native", "model", "train", "said"), [
    (False, {"dtype": "bfloat16"}, {}, "model.dtype: bfloat16 needs a GPU with bf16 in hardware (A100, L4, H100); "
                                       "this Tesla T4 (compute capability 7.5) emulates it"),
    (False, {}, {"bf16": True}, "train.bf16: true needs a GPU with bf16 in hardware; this Tesla T4"),
    (True, {"dtype": "float16"}, {"bf16": True}, "train.bf16: true contradicts the float16 weights (model.dtype: float16)"),
    (True, {}, {"fp16": True}, "train.fp16: true contradicts the bfloat16 weights (model.dtype: auto)"),
    (True, {}, {"bf16": True, "fp16": True}, "train.bf16 and train.fp16: both true"),
    (True, {"attn_implementation": "flash_attention_2"}, {}, "model.attn_implementation: flash_attention_2 needs "
                                                             "the flash_attn package (or `kernels`)"),
])
def test_precision_and_attention_a_gpu_cannot_run_are_refused_before_loading(gpu, write_recipe, native, model,
                                                                             train, said, monkeypatch):
    recipe = _recipe(write_recipe, model, train)
    gpu.native, gpu.capability = native, (8, 0) if native else (7, 5)
    packages(monkeypatch, flash_attn=False)
    with pytest.raises(ArzanError) as err:
        arzan_model.check_machine(recipe)
    assert str(err.value).startswith(said) and "\n" not in str(err.value)


def test_flash_attention_on_a_card_older_than_ampere_is_refused(gpu, write_recipe, monkeypatch):
    recipe = _recipe(write_recipe, {"attn_implementation": "flash_attention_2"})
    gpu.native, gpu.capability = False, (7, 5)
    packages(monkeypatch, flash_attn=True)
    with pytest.raises(ArzanError, match=r"flash_attention_2 needs compute capability 8\+; Tesla T4 \(compute "
                                         r"capability 7.5\) is older: set attn_implementation: sdpa"):
        arzan_model.check_machine(recipe)
    gpu.native, gpu.capability = True, (9, 0)
    assert arzan_model.check_machine(recipe) == []


def test_unsloth_says_it_ignores_attn_implementation(gpu, write_recipe, monkeypatch):
    import importlib.machinery
    import sys
    import types

    recipe = _recipe(write_recipe, {"attn_implementation": "flash_attention_2", "backend": "unsloth"})
    unsloth = types.ModuleType("unsloth")
    unsloth.__spec__ = importlib.machinery.ModuleSpec("unsloth", None)
    monkeypatch.setitem(sys.modules, "unsloth", unsloth)
    real = arzan_model.importlib.util.find_spec
    monkeypatch.setattr(arzan_model.importlib.util, "find_spec",
                        lambda name, *a: unsloth.__spec__ if name == "unsloth" else None if name == "flash_attn"
                        else real(name, *a))
    monkeypatch.setattr(arzan_model, "_UNSLOTH_IMPORT_ERROR", [])
    [warning] = arzan_model.check_machine(recipe)  # flash_attn missing is no refusal: unsloth never uses it
    assert warning == "model.attn_implementation: flash_attention_2 is not used: unsloth runs its own attention kernels"


def test_a_machine_with_more_gpus_trains_and_bills_one_and_says_so(gpu, write_recipe, monkeypatch):
    recipe = _recipe(write_recipe)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    [warning] = arzan_model.check_machine(recipe)
    assert warning == ("this machine has 2 GPUs; arzan trains on one (cuda:0) and bills cost.gpu_count: 1: if you "
                       "pay for all 2, set cost.gpu_count: 2, or rent one")


def test_energy_is_read_from_the_gpu_it_trains_on_found_by_uuid(monkeypatch):
    """CUDA_VISIBLE_DEVICES=3: torch's cuda:0 is NVML's GPU 3; the handle is found by UUID, and only
    that GPU's counter is read (the host's other GPUs are someone else's energy)."""
    from types import SimpleNamespace

    from arzan.cost.energy import nvml_handles

    asked = []
    pynvml = SimpleNamespace(nvmlDeviceGetHandleByUUID=lambda u: asked.append(u) or f"handle {u}")
    fake_torch = SimpleNamespace(cuda=SimpleNamespace(
        device_count=lambda: 2, get_device_properties=lambda i: SimpleNamespace(uuid=f"uuid-of-visible-{i}")))
    assert nvml_handles(pynvml, fake_torch) == ["handle GPU-uuid-of-visible-0"] and asked == ["GPU-uuid-of-visible-0"]


def test_a_busy_cpu_is_said_before_a_cpu_run(monkeypatch):
    """A CPU run is estimated on idle cores; a box busy with other work ran it 2.5-5x slower."""
    import os

    monkeypatch.setattr(arzan_model, "cuda_available", lambda: False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.7, 1.0, 1.0))
    note = arzan_model.busy_cpu_note()
    assert note.startswith("this machine is busy (load 1.7 on 2 cores)") and "OMP_NUM_THREADS=1" in note
    monkeypatch.setattr(os, "getloadavg", lambda: (0.4, 1.0, 1.0))
    assert arzan_model.busy_cpu_note() is None


@pytest.mark.parametrize("lora", [{"modules_to_save": ["lm_head"]}, {"bias": "all"}])
def test_what_lora_trains_beside_the_adapter_is_float32_on_float16_weights(lora):
    """A T4 (or model.dtype: float16) trains with fp16 and a GradScaler, which refuses float16
    gradients at the first optimizer step. peft upcasts only the LoRA matrices; a modules_to_save
    copy and the biases lora.bias trains stayed float16: a crash after the paid-for load."""
    from transformers import AutoModelForCausalLM

    from arzan.tiny import tiny_model_dir

    recipe = recipe_from_dict(base_recipe(lora={"r": 4, "lora_alpha": 8, **lora}, eval={"max_new_tokens": 4}))
    weights = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir()), dtype=torch.float16)
    if lora.get("bias") == "all":  # the tiny Llama has no biases: give its attention some, as Qwen2's has
        for layer in weights.model.layers:
            layer.self_attn.q_proj.bias = torch.nn.Parameter(torch.zeros(layer.self_attn.q_proj.out_features,
                                                                         dtype=torch.float16))
    model = arzan_model._with_lora(weights, recipe)
    trained = {n: p for n, p in model.named_parameters() if p.requires_grad}
    beside = [n for n in trained if "lora_" not in n]
    assert beside and {trained[n].dtype for n in trained} == {torch.float32}, beside
    assert {p.dtype for n, p in model.named_parameters() if not p.requires_grad} == {torch.float16}  # frozen stay
    for p in trained.values():
        p.grad = torch.ones_like(p)
    optimizer = torch.optim.SGD(list(trained.values()), lr=0.1)
    scaler = torch.amp.GradScaler("cpu")
    scaler.scale(torch.ones(()))
    scaler.unscale_(optimizer)  # raised "Attempting to unscale FP16 gradients." before
    # the generation check after training runs the same model outside the Trainer's autocast
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    from arzan.runtime import check_generation

    meter = SimpleNamespace(ledger=SimpleNamespace(summary=SimpleNamespace(generation_check=None)))
    check_generation(recipe, meter, model, AutoTokenizer.from_pretrained(str(tiny_model_dir())), None)
    assert meter.ledger.summary.generation_check["prompts"]  # it answered, adapter off and on
