"""Base model + LoRA adapter, through unsloth on a CUDA GPU or transformers + peft anywhere.

Unsloth is imported only when it will be used: it refuses to import without a GPU, and it must
be imported before transformers/trl so that its patches apply.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

from arzan.cost.ledger import package_version
from arzan.errors import ArzanError, described, first_line
from arzan.recipe import Recipe


@dataclass
class BackendInfo:
    """Which code actually trained: recorded in the ledger and the model card."""

    name: str  # "hf" | "unsloth"
    version: str  # "peft 0.21.2" or "unsloth 2026.10.9"
    requested: str
    method: str  # "lora" | "qlora"
    device: str  # "cpu" | "cuda"
    dtype: str
    trainable_params: int = 0
    total_params: int = 0
    fallback_reason: str | None = None


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


_UNSLOTH_IMPORT_ERROR: list[str] = []  # why `import unsloth` failed in this process, if it did


def import_unsloth_early(requested: str) -> None:
    """Import unsloth before trl/transformers/peft are used, as unsloth requires for its patches.

    Called by `load_recipe` as soon as the backend is known, before recipe validation imports trl.
    A failed import is remembered so that `auto` falls back to hf and says why.
    """
    if requested not in ("auto", "unsloth") or importlib.util.find_spec("unsloth") is None:
        return
    if not cuda_available() or _UNSLOTH_IMPORT_ERROR:
        return
    try:
        import unsloth  # noqa: F401
    except Exception as exc:  # unsloth raises many kinds on a bad driver or version mix
        _UNSLOTH_IMPORT_ERROR.append(described(exc))


def choose_backend(requested: str) -> tuple[str, str | None]:
    """(backend to use, why auto fell back to hf or None)."""
    has_cuda = cuda_available()
    has_unsloth = importlib.util.find_spec("unsloth") is not None
    if has_cuda and has_unsloth and requested in ("auto", "unsloth"):
        import_unsloth_early(requested)
    broken = _UNSLOTH_IMPORT_ERROR[0] if _UNSLOTH_IMPORT_ERROR else None
    if requested == "unsloth":
        if not has_cuda:
            raise ArzanError("model.backend: 'unsloth' needs a CUDA GPU and none was found; "
                             "use backend: auto (falls back to hf) or hf")
        if not has_unsloth:
            raise ArzanError("model.backend: 'unsloth' is not installed; pip install 'arzan[gpu]'")
        if broken:
            raise ArzanError(f"model.backend: unsloth failed to import ({broken}); use backend: hf")
        return "unsloth", None
    if requested == "auto":
        if has_cuda and has_unsloth and not broken:
            return "unsloth", None
        return "hf", ("no CUDA GPU" if not has_cuda else "unsloth not installed" if not has_unsloth
                      else f"unsloth failed to import: {broken}")
    return "hf", None


def check_machine(recipe: Recipe) -> list[str]:
    """The refusals `load_model` would raise on this machine, before a folder or a download exists:
    a run that cannot start must not leave a failed run folder that blocks the corrected rerun.
    Returns warnings for settings this machine will not honour (and says which it uses instead)."""
    m = recipe.model
    on_cuda = cuda_available()
    backend, _ = choose_backend(m.backend)  # raises for backend: unsloth without CUDA or without unsloth
    _torch_dtype(m.dtype, on_cuda)  # raises for bfloat16/float16 on a CPU
    if m.load_in_4bit and (not on_cuda or importlib.util.find_spec("bitsandbytes") is None):
        raise ArzanError(_NO_4BIT)
    if on_cuda:
        _check_precision(recipe)
        if backend == "hf":
            _check_flash_attention(m.attn_implementation)
    _check_trackers(recipe.train.report_to)
    _check_optimizer(recipe.train.optim)
    warnings = []
    if on_cuda and (count := _visible_gpus()) > 1:
        warnings.append(f"this machine has {count} GPUs; arzan trains on one (cuda:0) and bills "
                        f"cost.gpu_count: {recipe.cost.gpu_count}: if you pay for all {count}, set cost.gpu_count: "
                        f"{count}, or rent one")
    if backend == "unsloth" and m.attn_implementation:
        warnings.append(f"model.attn_implementation: {m.attn_implementation} is not used: unsloth runs its own "
                        "attention kernels")
    if not on_cuda:
        for flag in ("bf16", "fp16"):
            if getattr(recipe.train, flag, None):
                warnings.append(f"train.{flag}: true needs a GPU; this CPU trains in float32")
    return warnings


def busy_cpu_note() -> str | None:
    """Said when a CPU run is about to start, after every refusal (a refused run needs no warning)."""
    if cuda_available() or (busy := cpu_load()) is None:
        return None
    return (f"this machine is busy (load {busy[0]:.1f} on {busy[1]} cores): a CPU run slows down with it, most "
            "with several torch threads each (OMP_NUM_THREADS=1 helps)")


def cpu_load() -> tuple[float, int] | None:
    """(1-minute load, cores) when other work holds over half the cores, else None. A CPU run is
    timed and estimated on idle cores: a shared 2-core box ran the smoke recipe 2.5x slower with
    tests beside it, 5x with two torch threads against one."""
    import os

    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on every platform
        return None
    cores = os.cpu_count() or 1
    return (load, cores) if load > 0.5 * cores else None


def _visible_gpus() -> int:
    import torch

    return torch.cuda.device_count()


def _check_flash_attention(impl: str | None) -> None:
    """transformers raises an ImportError for flash attention without its package (flash_attn, or
    flash_attn_interface for FA3; the `kernels` package is its fallback) or on a card older than
    compute capability 8 (a T4): after the model download and a billed setup."""
    if not impl or "flash_attention" not in impl:
        return
    import torch

    package = "flash_attn_interface" if impl == "flash_attention_3" else "flash_attn"
    if importlib.util.find_spec(package) is None and importlib.util.find_spec("kernels") is None:
        raise ArzanError(f"model.attn_implementation: {impl} needs the {package} package (or `kernels`), not "
                         "installed here; pip install it, or set attn_implementation: sdpa")
    if torch.cuda.get_device_capability()[0] < 8:
        raise ArzanError(f"model.attn_implementation: {impl} needs compute capability 8+; {_gpu_name()} "
                         "is older: set attn_implementation: sdpa")


def _check_trackers(report_to: list[str] | str) -> None:
    """A `report_to` tracker that is not installed fails in the Trainer's constructor: after the
    model download and load, with a traceback. Checked here, on the machine that trains (an
    estimate on a laptop need not have the Colab's wandb)."""
    from transformers.integrations import get_available_reporting_integrations

    names = [report_to] if isinstance(report_to, str) else list(report_to)
    missing = [n for n in names if n not in ("none", "all") and n not in get_available_reporting_integrations()]
    if missing:
        raise ArzanError(f"train.report_to: {', '.join(missing)} is not installed here; pip install it, or set "
                         "report_to: none")


def _check_optimizer(optim: str) -> None:
    """An 8-bit or paged optimizer (the T4 and L4 recipes' adamw_8bit) is bitsandbytes: without it,
    transformers fails when the trainer builds its optimizer, after the model load and a billed
    setup, with a traceback and a `failed` run folder. transformers' own list says which they are."""
    from transformers import trainer_optimizer

    needs = {str(getattr(o, "value", o)) for o in getattr(trainer_optimizer, "_BITSANDBYTES_OPTIMIZERS", [])}
    if optim in needs and importlib.util.find_spec("bitsandbytes") is None:
        raise ArzanError(f"train.optim: {optim} is a bitsandbytes optimizer and bitsandbytes is not installed here "
                         "(pip install 'arzan[gpu]' on a CUDA machine); or set optim: adamw_torch")


_NO_4BIT = ("model.load_in_4bit: 4-bit QLoRA needs a CUDA GPU and bitsandbytes (pip install 'arzan[gpu]'); "
            "set load_in_4bit: false on a CPU")


def check_model_name(recipe: Recipe) -> Any:
    """Load the model's tokenizer (kilobytes) before the run folder exists: a typo in model.name, a
    gated repo without access or a folder with no model fails here in one line, instead of after the
    data step with a `failed` run folder (and, with --overwrite, a good run already moved aside).
    Returns the tokenizer, so the budget pre-check counts tokens without loading it again; None for
    the tiny offline model, which is built on first use."""
    from arzan.runplan import load_tokenizer
    from arzan.tiny import is_tiny

    if is_tiny(recipe.model.name):
        return None
    return load_tokenizer(recipe, purpose="for this run")


def resolve_model_name(name: str) -> str:
    from arzan.tiny import is_tiny, tiny_model_dir

    return str(tiny_model_dir()) if is_tiny(name) else name


def native_bf16() -> bool:
    """bf16 in the GPU's hardware (compute capability 8+: A100, L4, H100). torch's plain
    `is_bf16_supported()` also says yes on a T4 or V100, where bf16 is emulated far slower than the
    fp16 those cards have, and unsloth swaps in a strict check when imported: without
    `including_emulation=False` the answer would depend on what the process had imported."""
    import torch

    return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)


def gpu_dtype() -> Any:
    """The 16-bit dtype a GPU computes in when the recipe says `auto`: bf16 where the hardware has
    it, else fp16 (a T4). Training, `arzan eval` and `arzan merge` ask this one place, so a QLoRA
    adapter is scored on the compute dtype it was trained in."""
    import torch

    return torch.bfloat16 if native_bf16() else torch.float16


def _torch_dtype(requested: str, on_cuda: bool) -> Any:
    import torch

    if requested != "auto":
        if not on_cuda and requested != "float32":
            raise ArzanError(f"model.dtype: '{requested}' training needs a GPU; on a CPU use float32 or auto")
        if requested == "bfloat16" and not native_bf16():
            raise ArzanError("model.dtype: bfloat16 needs a GPU with bf16 in hardware (A100, L4, H100); "
                             f"this {_gpu_name()} emulates it far slower than fp16: use float16 or auto")
        return getattr(torch, requested)
    return gpu_dtype() if on_cuda else torch.float32


def _gpu_name() -> str:
    import torch

    major, minor = torch.cuda.get_device_capability()
    return f"{torch.cuda.get_device_name()} (compute capability {major}.{minor})"


def _check_precision(recipe: Recipe) -> None:
    """train.bf16 / train.fp16 against the dtype the weights load in, on this GPU. unsloth's trainer
    raises a TypeError on a mismatch (fp16 weights, bf16 training) and transformers refuses bf16 the
    card cannot do: both after the model download and a billed setup, with a traceback."""
    loaded = str(_torch_dtype(recipe.model.dtype, True)).split(".")[-1]
    bf16, fp16 = getattr(recipe.train, "bf16", None), getattr(recipe.train, "fp16", None)
    if bf16 and fp16:
        raise ArzanError("train.bf16 and train.fp16: both true; set one (or neither: arzan follows model.dtype)")
    if bf16 and not native_bf16():
        raise ArzanError(f"train.bf16: true needs a GPU with bf16 in hardware; this {_gpu_name()} has none: remove it "
                         "(arzan trains in fp16 there) or set fp16: true")
    if (bf16 and loaded == "float16") or (fp16 and loaded == "bfloat16"):
        raise ArzanError(f"train.{'bf16' if bf16 else 'fp16'}: true contradicts the {loaded} weights "
                         f"(model.dtype: {recipe.model.dtype}); remove it, arzan follows the weights' dtype")


def mixed_precision(loaded: str, requested_bf16: bool | None, requested_fp16: bool | None) -> tuple[bool, bool]:
    """(bf16, fp16) for the Trainer on a GPU: what the recipe says, else the dtype the weights loaded
    in (float32 weights: the card's own 16-bit type)."""
    half = loaded if loaded in ("bfloat16", "float16") else ("bfloat16" if native_bf16() else "float16")
    bf16 = requested_bf16 if requested_bf16 is not None else (half == "bfloat16" and not requested_fp16)
    fp16 = requested_fp16 if requested_fp16 is not None else (half == "float16" and not requested_bf16)
    return bool(bf16), bool(fp16)


def nf4_config(compute_dtype: Any) -> Any:
    """QLoRA's 4-bit base (NF4, double-quantised constants), in one place: training, inference and
    `arzan eval` load the same base, so a QLoRA adapter is scored on the weights it was trained on."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def lora_config(recipe: Recipe) -> Any:
    from peft import LoraConfig

    lo = recipe.lora
    return LoraConfig(task_type="CAUSAL_LM", r=lo.r, lora_alpha=lo.lora_alpha, lora_dropout=lo.lora_dropout,
                      target_modules=lo.target_modules, bias=lo.bias, use_rslora=lo.use_rslora,
                      modules_to_save=lo.modules_to_save)


def _ensure_pad(tokenizer: Any) -> None:
    """Padding never reaches the loss (labels come from assistant masks), so eos is a safe pad."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token


def _load_hf(recipe: Recipe, name: str, on_cuda: bool) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    m = recipe.model
    kwargs: dict[str, Any] = {"revision": m.revision, "trust_remote_code": m.trust_remote_code,
                              "dtype": _torch_dtype(m.dtype, on_cuda)}
    if m.attn_implementation:
        kwargs["attn_implementation"] = m.attn_implementation
    if m.load_in_4bit:
        if not on_cuda or importlib.util.find_spec("bitsandbytes") is None:
            raise ArzanError(_NO_4BIT)
        kwargs["quantization_config"] = nf4_config(kwargs["dtype"])
    if on_cuda:
        kwargs["device_map"] = {"": 0}
    try:
        tokenizer = AutoTokenizer.from_pretrained(name, revision=m.revision, trust_remote_code=m.trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(name, **kwargs)
    except (OSError, ValueError) as exc:
        raise ArzanError(f"model.name: cannot load '{m.name}': {first_line(exc)}") from None
    if m.load_in_4bit:
        from peft import prepare_model_for_kbit_training

        # peft's stock QLoRA preparation (norms, embeddings and lm_head cast to float32); it would also
        # switch checkpointing on whatever train.gradient_checkpointing says, so it gets the recipe's
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=on_cuda and recipe.train.gradient_checkpointing is not False)
    return _with_lora(model, recipe), tokenizer


def check_target_modules(model: Any, targets: list[str] | str) -> None:
    """Every name in lora.target_modules must match a module: peft refuses a list where none does,
    but takes [q_proj, nope] quietly, writing the typo into adapter_config.json as if it were trained."""
    if isinstance(targets, str):  # "all-linear": peft finds them
        return
    leaves = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules() if name}
    unknown = [t for t in targets if t not in leaves]
    if unknown:
        import torch

        linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules()
                         if isinstance(m, torch.nn.Linear) and name.rsplit(".", 1)[-1] != "lm_head"})
        raise ArzanError(f"lora.target_modules: {', '.join(map(repr, unknown))} "
                         f"{'matches' if len(unknown) == 1 else 'match'} no module of this model (its linear layers: "
                         f"{', '.join(linear)})")


def _with_lora(model: Any, recipe: Recipe) -> Any:
    """peft's get_peft_model, with a target-module typo as a one-line error naming the field."""
    from peft import get_peft_model
    from transformers import set_seed

    check_target_modules(model, recipe.lora.target_modules)
    set_seed(recipe.train.seed)  # the adapter's initial weights follow train.seed, as unsloth's random_state does
    try:
        model = get_peft_model(model, lora_config(recipe))
    except ValueError as exc:  # peft's NoMatchingPeftModuleError and friends
        raise ArzanError(f"lora.target_modules: {first_line(exc)}") from None
    return _trainable_in_float32(model)


def half_precision_autocast(model: Any) -> Any:
    """Generation with the trained model, as it trained: under float16 autocast when its weights are
    float16. The float32 copies _trainable_in_float32 made (modules_to_save, lora.bias) otherwise meet
    float16 activations in a plain matmul and the generation check fails on dtypes."""
    import contextlib

    import torch

    if not any(p.dtype == torch.float16 for p in model.parameters()):
        return contextlib.nullcontext()
    device = next(model.parameters()).device.type
    return torch.autocast(device_type=device, dtype=torch.float16)


def _trainable_in_float32(model: Any) -> Any:
    """peft upcasts the LoRA matrices to float32, but not a lora.modules_to_save copy (lm_head) nor the
    biases lora.bias makes trainable: on float16 weights (a T4, model.dtype: float16) they stay float16,
    and the fp16 GradScaler refuses them at the first optimizer step ("Attempting to unscale FP16
    gradients"), after the load was paid for. Trained in float32 as the adapter is; bfloat16 needs no
    scaler and keeps its smaller copy."""
    import torch

    for param in model.parameters():
        if param.requires_grad and param.dtype == torch.float16:
            param.data = param.data.float()
    return model


def _load_unsloth(recipe: Recipe, name: str) -> tuple[Any, Any]:
    from unsloth import FastLanguageModel  # noqa: I001 - must precede transformers' use

    m, lo = recipe.model, recipe.lora
    # use_exact_model_name: unsloth would otherwise swap in its own mirror (and drop `revision`),
    # while the ledger and model card name the repo the recipe asked for.
    try:
        model, tokenizer = FastLanguageModel.from_pretrained(
            model_name=name, max_seq_length=recipe.train.max_length,
            dtype=None if m.dtype == "auto" else _torch_dtype(m.dtype, True), load_in_4bit=m.load_in_4bit,
            revision=m.revision, trust_remote_code=m.trust_remote_code, use_exact_model_name=True)
    except (OSError, ValueError, RuntimeError) as exc:  # unsloth wraps the hub's error in a RuntimeError
        raise ArzanError(f"model.name: cannot load '{m.name}' with unsloth: "
                         f"{first_line(exc.__cause__ or exc)}") from None
    checkpointing = "unsloth" if recipe.train.gradient_checkpointing is not False else False
    check_target_modules(model, lo.target_modules)
    try:
        model = FastLanguageModel.get_peft_model(
            model, r=lo.r, lora_alpha=lo.lora_alpha, lora_dropout=lo.lora_dropout, target_modules=lo.target_modules,
            bias=lo.bias, use_rslora=lo.use_rslora, modules_to_save=lo.modules_to_save,
            use_gradient_checkpointing=checkpointing, random_state=recipe.train.seed)
    except (TypeError, ValueError) as exc:  # e.g. a modules_to_save entry unsloth cannot train
        raise ArzanError(f"lora: unsloth's get_peft_model refused the recipe: {first_line(exc)}") from None
    return model, tokenizer  # no template of unsloth's own choosing: runplan.load_tokenizer refuses a missing one


def load_model(recipe: Recipe) -> tuple[Any, Any, BackendInfo]:
    """Load base + fresh LoRA. Responses-only training is done by the data's assistant masks."""
    backend, why = choose_backend(recipe.model.backend)
    on_cuda = cuda_available()
    name = resolve_model_name(recipe.model.name)
    if backend == "unsloth":
        model, tokenizer = _load_unsloth(recipe, name)
        ver = f"unsloth {package_version('unsloth')}"
    else:
        model, tokenizer = _load_hf(recipe, name, on_cuda)
        ver = f"transformers {package_version('transformers')} + peft {package_version('peft')}"
    _ensure_pad(tokenizer)
    trainable, total = model.get_nb_trainable_parameters()
    info = BackendInfo(name=backend, version=ver, requested=recipe.model.backend,
                       method="qlora" if recipe.model.load_in_4bit else "lora",
                       device="cuda" if on_cuda else "cpu",
                       # what the base was loaded in (QLoRA: the compute dtype); not a parameter's dtype,
                       # which peft's QLoRA preparation casts to float32 for the norms and embeddings
                       dtype=str(_torch_dtype(recipe.model.dtype, on_cuda)).split(".")[-1],
                       trainable_params=int(trainable), total_params=int(total), fallback_reason=why)
    return model, tokenizer, info
