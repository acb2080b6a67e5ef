"""Recipes: one YAML file per experiment, validated before anything is downloaded or paid for.

Field names follow TRL's ``SFTConfig`` and peft's ``LoraConfig`` wherever those exist, so a user
who knows TRL reads a recipe without a glossary. Every error names the file, the field path and
what would be accepted, because a typo found after renting a GPU costs money.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import math
import re
import tempfile
import typing
import warnings
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from arzan.errors import ArzanError, first_line

ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PACKAGE_SCHEME = "arzan://"  # files shipped inside the package, e.g. arzan://sample/kk_arith.jsonl


class RecipeError(ArzanError):
    """A recipe that cannot run; the message names file and field."""


class _NoYesForANumber(BaseModel):
    @field_validator("*", mode="before")
    @classmethod
    def _no_yes_for_a_number(cls, v: Any, info: Any) -> Any:
        """pydantic reads `max_steps: true` as 1 step: a YAML yes/no is never a number here."""
        if isinstance(v, bool) and info.field_name in cls.model_fields:
            annotation = cls.model_fields[info.field_name].annotation
            kinds = {annotation} | set(get_args(annotation))
            if bool not in kinds and kinds & {int, float}:
                raise ValueError("expected a number")
        return v


class _Strict(_NoYesForANumber):
    # inf/nan pass float checks (`gt=0`) and then break arithmetic far away: refuse them here
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class ModelSection(_Strict):
    name: str = Field(min_length=1, description="hub id, local folder, or arzan/tiny-llama-kk")
    revision: str | None = None
    backend: Literal["auto", "hf", "unsloth"] = "auto"
    load_in_4bit: bool = False
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    trust_remote_code: bool = False
    attn_implementation: str | None = None


class LoraSection(_Strict):
    r: int = Field(16, gt=0, le=1024)
    lora_alpha: int = Field(16, gt=0)
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = Field(default_factory=lambda: list(ALL_PROJECTIONS))
    bias: Literal["none", "all", "lora_only"] = "none"
    use_rslora: bool = False
    modules_to_save: list[str] | None = None

    @field_validator("target_modules")
    @classmethod
    def _some_modules(cls, v: list[str] | str) -> list[str] | str:
        if isinstance(v, list) and (not v or not all(isinstance(m, str) and m.strip() for m in v)):
            raise ValueError(f"name at least one module, e.g. {', '.join(ALL_PROJECTIONS)} or all-linear")
        return v


class DataSource(_Strict):
    path: str | None = None
    hub: str | None = None
    config: str | None = None
    split: str = "train"
    revision: str | None = None
    format: Literal["alpaca", "messages", "prompt_completion", "text"]
    columns: dict[str, str] = Field(default_factory=dict)
    sample: float | None = Field(None, gt=0)
    license: str | None = None

    @model_validator(mode="after")
    def _one_location(self) -> DataSource:
        if (self.path is None) == (self.hub is None):
            raise ValueError("give exactly one of 'path' (local file) or 'hub' (dataset id)")
        return self

    @field_validator("sample")
    @classmethod
    def _sample_kind(cls, v: float | None) -> float | None:
        if v is not None and v > 1 and v != int(v):
            raise ValueError("sample is a fraction in (0, 1] (1 = every row) or a whole number of rows")
        return v


class DataSection(_Strict):
    sources: list[DataSource] = Field(min_length=1)
    eval_sources: list[DataSource] = Field(default_factory=list)
    eval_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    system_prompt: str | None = None
    assistant_only_loss: bool = True
    seed: int = 42


# SFTConfig fields arzan sets itself: a recipe that set them would fight the run folder layout.
_RESERVED_TRAIN_FIELDS = {
    "output_dir": "run folder", "logging_dir": "run folder", "overwrite_output_dir": "--overwrite",
    "resume_from_checkpoint": "--resume", "hub_token": "HF_TOKEN", "push_to_hub": "output.push_to_hub",
    "hub_model_id": "output.hub_model_id", "use_cpu": "the device it runs on",
    "save_strategy": "checkpoints every save_steps and save_every_minutes",
    "disable_tqdm": "its own progress line", "dataloader_pin_memory": "the device it runs on",
    # arzan tokenizes and masks the data itself (data.py), so TRL's own data options cannot apply
    "assistant_only_loss": "data.assistant_only_loss", "completion_only_loss": "data.assistant_only_loss",
    "dataset_kwargs": "the data section", "dataset_text_field": "the data section's format",
    "truncation_mode": "keep_start, at train.max_length, when the data is tokenized",
}
# depend on the machine (GPU, installed DeepSpeed, config files): type-checked, not tried on this one
_MACHINE_FIELDS = {"bf16", "fp16", "tf32", "bf16_full_eval", "fp16_full_eval", "deepspeed", "fsdp",
                   "fsdp_config", "accelerator_config", "parallelism_config", "ddp_backend", "torch_compile_backend"}


@lru_cache(maxsize=1)
def sft_config_fields() -> frozenset[str]:
    from trl import SFTConfig

    return frozenset(f.name for f in dataclasses.fields(SFTConfig))


def _field_error(field: str, reason: str) -> PydanticCustomError:
    """A validation error for a field below the validator's own location (`train` + `adam_beta1`)."""
    return PydanticCustomError("arzan_field", "{reason}", {"field": field, "reason": reason})


@lru_cache(maxsize=1)
def _sft_hints() -> dict[str, Any]:
    from trl import SFTConfig

    try:
        return typing.get_type_hints(SFTConfig)
    except Exception:  # an annotation that does not resolve: the raw field types below
        return {}


@lru_cache(maxsize=None)
def _sft_field(name: str) -> tuple[TypeAdapter | None, tuple[str, ...]]:
    """(validator for the field's SFTConfig type, its allowed values if it is a choice) — cached."""
    from trl import SFTConfig

    field = next(f for f in dataclasses.fields(SFTConfig) if f.name == name)
    ann = _sft_hints().get(name) or (field.type if not isinstance(field.type, str) else Any)
    try:
        adapter = TypeAdapter(ann, config=ConfigDict(arbitrary_types_allowed=True, coerce_numbers_to_str=True))
    except Exception:
        adapter = None
    choices: list[str] = list(field.metadata.get("choices") or [])
    for member in typing.get_args(ann) + (ann,):
        inner = typing.get_args(member) or (member,)  # list[DebugOption] -> DebugOption
        for t in inner:
            if isinstance(t, type) and issubclass(t, enum.Enum):
                choices += [str(e.value) for e in t]
    if name == "report_to":
        from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

        choices = ["none", "all", *INTEGRATION_TO_CALLBACK]
    return adapter, tuple(dict.fromkeys(choices))


def _coerce_sft_value(name: str, value: Any) -> Any:
    adapter, _ = _sft_field(name)
    if adapter is None:
        return value
    try:
        out = adapter.validate_python(value)
    except ValidationError as exc:
        raise _field_error(name, _type_problem(exc.errors(), value)) from None
    if isinstance(out, float) and isinstance(value, str) and not math.isfinite(out):
        raise _field_error(name, f"expected a finite number (got {value!r})")
    return out.value if isinstance(out, enum.Enum) else _exponent_numbers(out)


_EXPONENT_NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+$")


def _exponent_numbers(value: Any) -> Any:
    """`{min_lr: 1e-6}`: PyYAML reads 1e-6 as text (YAML 1.1 wants a dot); inside free-form mappings
    such as lr_scheduler_kwargs nothing else would turn it back into the number it is."""
    if isinstance(value, dict):
        return {k: _exponent_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_exponent_numbers(v) for v in value]
    if isinstance(value, str) and _EXPONENT_NUMBER.match(value) and math.isfinite(number := float(value)):
        return number
    return value


def _check_choice(name: str, value: Any) -> None:
    _, choices = _sft_field(name)
    if not choices or value is None:
        return
    if isinstance(value, enum.Enum):
        value = value.value
    if name == "debug" and isinstance(value, str):
        value = value.split()
    for v in value if isinstance(value, list) else [value]:
        if isinstance(v, enum.Enum):
            v = v.value
        if isinstance(v, str) and v not in choices:
            close = difflib.get_close_matches(v, choices, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise _field_error(name, f"{v!r} is not allowed{hint} (allowed: {', '.join(choices)})")


class TrainSection(_NoYesForANumber):
    """SFTConfig fields by their TRL names; any other SFTConfig field is accepted too."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, allow_inf_nan=False)

    max_length: int = Field(1024, gt=0)
    num_train_epochs: float = Field(1.0, gt=0)
    max_steps: int = -1
    per_device_train_batch_size: int = Field(2, gt=0)
    per_device_eval_batch_size: int = Field(8, gt=0)
    gradient_accumulation_steps: int = Field(4, gt=0)
    learning_rate: float = Field(2e-4, gt=0, lt=1)
    lr_scheduler_type: str = "linear"
    warmup_steps: float = Field(0, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    logging_steps: int = Field(10, gt=0)
    save_steps: int = Field(100, gt=0)
    save_total_limit: int | None = Field(2, gt=0)
    eval_steps: int | None = Field(None, gt=0)
    packing: bool = False
    seed: int = 42
    optim: str = "adamw_torch"
    gradient_checkpointing: bool | None = None  # None: on for CUDA, off for CPU
    bf16: bool | None = None  # None: bf16 where the GPU supports it, fp32 on CPU
    fp16: bool | None = None
    report_to: list[str] | str = "none"
    # arzan's own: checkpoint on the clock too, so a preempted spot run loses minutes, not hours
    save_every_minutes: float | None = Field(None, gt=0)

    @field_validator("max_steps")
    @classmethod
    def _steps_or_epochs(cls, v: int) -> int:
        if v == 0 or v < -1:  # transformers would still train a step, and bill it, at max_steps 0
            raise ValueError("must be a positive number of optimizer steps, or -1 to train num_train_epochs")
        return v

    @model_validator(mode="after")
    def _only_sft_fields(self) -> TrainSection:
        """Names must be SFTConfig's; values are coerced to SFTConfig's types (YAML reads `1e-8` as text)."""
        known = sft_config_fields()
        extra = self.__pydantic_extra__ or {}
        for key in list(extra):
            if key in _RESERVED_TRAIN_FIELDS:
                raise _field_error(key, f"'{key}' is set by arzan ({_RESERVED_TRAIN_FIELDS[key]}); remove it")
            if key not in known:
                raise _field_error(key, _unknown_message(key, known | set(type(self).model_fields)))
            if extra[key] is not None:
                _check_choice(key, extra[key])  # first: `debug: [zz]` should list the options, not the types
                extra[key] = _coerce_sft_value(key, extra[key])
        for key, value in self.sft_kwargs().items():
            _check_choice(key, value)
        return self

    def sft_kwargs(self) -> dict[str, Any]:
        data = self.model_dump()
        data.pop("save_every_minutes")
        return {k: v for k, v in data.items() if v is not None}


@contextmanager
def _accelerate_state_kept():
    """Building an SFTConfig resets accelerate's process-wide state to this (CPU) config: put it back."""
    from accelerate.state import AcceleratorState, PartialState

    saved = [(cls, dict(cls._shared_state)) for cls in (PartialState, AcceleratorState)]
    try:
        yield
    finally:
        for cls, state in saved:
            cls._shared_state.clear()
            cls._shared_state.update(state)


def check_sft_config(train: TrainSection, has_eval: bool) -> None:
    """Build the SFTConfig train.py will build (on a CPU, in a folder never created) so that a value
    TRL rejects fails here, before a run folder exists; the error names the field where TRL's does."""
    from trl import SFTConfig

    kw = {k: v for k, v in train.sft_kwargs().items() if k not in _MACHINE_FIELDS}
    if kw.get("padding_free") and not kw.get("packing"):
        kw["padding_free"] = False  # train.py's fallback on the hf backend
    kw.setdefault("gradient_checkpointing", False)
    if has_eval:
        kw.setdefault("eval_strategy", "steps" if kw.get("eval_steps") else "epoch")
    out = Path(tempfile.gettempdir()) / "arzan-recipe-check-never-written"
    try:
        with warnings.catch_warnings(), _accelerate_state_kept():
            warnings.simplefilter("ignore")
            SFTConfig(output_dir=str(out), use_cpu=True, bf16=False, fp16=False, disable_tqdm=True,
                      dataloader_pin_memory=False, save_strategy="steps", **kw)
    except (ValueError, TypeError) as exc:
        text = re.sub(r"--(\w+)", r"\1", " ".join(str(exc).split()))
        set_here = set(train.model_fields_set) | set(train.model_extra or {})
        hits = [(m.start(), k) for k in set_here if (m := re.search(rf"\b{re.escape(k)}\b", text))]
        raise _field_error(f"train.{min(hits)[1]}" if hits else "train", f"TRL rejects it: {text}") from None


class BudgetSection(_Strict):
    max_kzt: float | None = Field(None, gt=0)
    max_usd: float | None = Field(None, gt=0)
    max_hours: float | None = Field(None, gt=0)


class CostSection(_Strict):
    gpu: str | None = None
    provider: str | None = None
    pricing: str | None = None
    usd_per_gpu_hour: float | None = Field(None, ge=0)
    kzt_per_gpu_hour: float | None = Field(None, ge=0)
    gpu_count: int = Field(1, gt=0)
    overhead_minutes: float = Field(0.0, ge=0)
    usd_kzt: float | None = Field(None, gt=0)
    grid_kg_co2_per_kwh: float | None = Field(None, ge=0)

    @model_validator(mode="after")
    def _one_price(self) -> CostSection:
        if self.usd_per_gpu_hour is not None and self.kzt_per_gpu_hour is not None:
            raise ValueError("give usd_per_gpu_hour or kzt_per_gpu_hour, not both")
        return self


class OutputSection(_Strict):
    dir: str | None = None  # default: runs/<name>
    save_merged: bool = False
    push_to_hub: bool = False
    hub_model_id: str | None = None
    hub_private: bool = True

    @model_validator(mode="after")
    def _hub_id(self) -> OutputSection:
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("push_to_hub needs hub_model_id (e.g. your-name/kazakh-llama)")
        return self


class EvalSection(_Strict):
    """After training: a generation check (does it answer and stop?) and, if tasks are named, lm-eval."""

    tasks: list[str] | str = Field(default_factory=list)  # e.g. kazakh, kazakh_local; [] = none
    limit: int | None = Field(None, gt=0)
    data_dir: str | None = None  # local copies of the Kazakh eval files (Belebele, kkCOPA)
    generation_check: bool = True
    prompts: list[str] | None = None  # default: arzan's Kazakh prompts
    max_new_tokens: int = Field(64, gt=0)
    chat_template: bool = False  # lm-eval questions in the model's chat template (arzan eval --chat-template)


class Recipe(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)
    description: str | None = None
    model: ModelSection
    lora: LoraSection = Field(default_factory=LoraSection)
    data: DataSection
    train: TrainSection = Field(default_factory=TrainSection)
    budget: BudgetSection = Field(default_factory=BudgetSection)
    cost: CostSection = Field(default_factory=CostSection)
    output: OutputSection = Field(default_factory=OutputSection)
    eval: EvalSection = Field(default_factory=EvalSection)

    # where relative data paths are resolved from; not part of the YAML
    _base_dir: Path = Path(".")

    @model_validator(mode="before")
    @classmethod
    def _no_secrets(cls, data: Any) -> Any:
        where = _find_secret(data)
        if where is not None:
            path, what = where
            raise _field_error(path, f"{what}: secrets never go in a recipe (it is saved with the run folder); "
                                     "set the HF_TOKEN environment variable instead")
        return data

    @model_validator(mode="after")
    def _trl_accepts_train(self) -> Recipe:
        check_sft_config(self.train, has_eval=bool(self.data.eval_sources) or self.data.eval_fraction > 0)
        return self

    @property
    def base_dir(self) -> Path:
        return self._base_dir

    def run_dir(self, out: str | Path | None = None) -> Path:
        return Path(out or self.output.dir or Path("runs") / self.name)

    def resolved_yaml(self) -> str:
        """The recipe as it ran, loadable from the run folder by `--resume`.

        Local data paths are written absolute so the run folder's copy finds them; secrets never
        live in a recipe (hub tokens come from the environment).
        """
        data = self.model_dump(mode="json")
        for group in ("sources", "eval_sources"):
            for src in data["data"][group]:
                if src["path"] and not src["path"].startswith(PACKAGE_SCHEME):
                    src["path"] = str(resolve_data_path(src["path"], self.base_dir).resolve())
        ev = data["eval"]
        if ev["data_dir"]:
            ev["data_dir"] = str(self.eval_data_dir())
        if isinstance(ev["tasks"], list):
            ev["tasks"] = self.eval_tasks()
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)

    def eval_data_dir(self) -> Path | None:
        """`eval.data_dir`, read from the recipe's folder like every other path in it."""
        d = self.eval.data_dir
        return resolve_data_path(d, self.base_dir).resolve() if d else None

    def eval_tasks(self) -> list[str] | str:
        """`eval.tasks` with a user's task YAML files as absolute paths (names stay names)."""
        tasks = self.eval.tasks
        if isinstance(tasks, str):
            return tasks
        return [str(resolve_data_path(t, self.base_dir).resolve()) if _is_task_file(t) else t for t in tasks]


_SECRET_KEY = re.compile(r"(^|_)(api_?key|password|passwd|secret|credentials?|private_key)(_|$)|^(\w+_)?token$",
                         re.I)
_NOT_SECRET_KEYS = {"eos_token", "pad_token", "bos_token", "unk_token", "sep_token", "cls_token", "mask_token"}
_HF_TOKEN = re.compile(r"(?<![A-Za-z0-9])hf_[A-Za-z0-9]{30,}")
_URL_CREDENTIALS = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:]+:[^\s/@]*@")


def _find_secret(node: Any, path: str = "") -> tuple[str, str] | None:
    """(field path, what it looks like) of the first secret anywhere in a raw recipe, else None."""
    if isinstance(node, dict):
        for key, value in node.items():
            sub = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and key.lower() not in _NOT_SECRET_KEYS and _SECRET_KEY.search(key):
                return sub, f"'{key}' names a secret"
            if (found := _find_secret(value, sub)) is not None:
                return found
    elif isinstance(node, list):
        for i, value in enumerate(node):
            if (found := _find_secret(value, f"{path}[{i}]")) is not None:
                return found
    elif isinstance(node, str):
        if _HF_TOKEN.search(node):
            return path, "the value looks like a Hugging Face token"
        if _URL_CREDENTIALS.search(node):
            return path, "the value is a URL with a user name and password in it"
    return None


def resolve_data_path(path: str, base_dir: Path) -> Path:
    """Relative paths are read from the recipe's folder first, then from the working folder."""
    if path.startswith(PACKAGE_SCHEME):
        from importlib.resources import files

        return Path(str(files("arzan") / "resources" / path[len(PACKAGE_SCHEME):]))
    p = Path(path).expanduser()
    if p.is_absolute():
        return p
    for candidate in (base_dir / p, Path.cwd() / p):
        if candidate.exists():
            return candidate
    return base_dir / p


def _unknown_message(key: str, allowed: set[str]) -> str:
    close = difflib.get_close_matches(key, sorted(allowed), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown field '{key}'{hint}"


# how pydantic names the member of a union in an error location: `list[str]`, `literal['all-linear']`
_UNION_MEMBER = re.compile(r"^(str|int|float|bool|none|bytes|any|list|dict|set|tuple|"
                           r"(literal|list|dict|set|tuple|json-or-python|is-instance|lax-or-strict|nullable)\[.*\])$")
_MEMBER_WORDS = {"str": "text", "int": "a whole number", "float": "a number", "bool": "true or false",
                 "none": "null", "list[str]": "a list of text", "any": "any value"}


def _describe_member(tag: str) -> str:
    if tag.startswith("literal["):
        return tag[len("literal["):-1]
    if tag.startswith("dict["):
        return "a mapping"
    if tag.startswith("list["):
        return _MEMBER_WORDS.get(tag, "a list")
    return _MEMBER_WORDS.get(tag, tag)


def _split_loc(loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], str | None]:
    """(location of the field, the union member the error is about or None); validator names dropped."""
    parts = tuple(p for p in loc if not str(p).startswith("function-"))
    for i, p in enumerate(parts):
        if isinstance(p, str) and _UNION_MEMBER.match(p):
            return parts[:i], p
    return parts, None


def _field_path(loc: tuple[Any, ...]) -> str:
    path = ""
    for p in (str(p) for p in _split_loc(loc)[0]):
        path += f"[{p}]" if p.isdigit() else (f".{p}" if path else p)
    return path


def _type_problem(errors: list[dict[str, Any]], value: Any) -> str:
    """One reason for a value that failed every member of a union, or the single reason otherwise."""
    members = [m for e in errors if (m := _split_loc(e["loc"])[1]) is not None]
    if members:
        allowed = " or ".join(dict.fromkeys(_describe_member(m) for m in members))
        return f"expected {allowed} (got {value!r:.60})"
    err = errors[0]
    inner = _field_path(err["loc"])
    return f"{inner + ': ' if inner else ''}{err['msg']} (got {err.get('input', value)!r:.60})"


def _format_error(err: dict[str, Any], source: str, group: list[dict[str, Any]] | None = None) -> str:
    if err["type"] == "arzan_field":
        loc = ".".join(p for p in (_field_path(err["loc"]), err["ctx"]["field"]) if p)
        return f"{source}: {loc or 'recipe'}: {err['ctx']['reason']}"
    loc = _field_path(err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if _split_loc(err["loc"])[1] is not None:  # a union: every member failed; say what each would take
        group = group or [err]
        ends_at_member = [e for e in group if _UNION_MEMBER.match(str(e["loc"][-1]))]
        value = (ends_at_member or group)[0].get("input")
        return f"{source}: {loc}: {_type_problem(group, value)}"
    if err["type"] == "extra_forbidden":
        section = _model_at(err["loc"][:-1])
        allowed = set(section.model_fields) if section else set()
        msg = _unknown_message(str(err["loc"][-1]), allowed)
        if allowed:
            msg += f" (allowed: {', '.join(sorted(allowed))})"
    elif err["type"] == "missing":
        msg = "required field is missing"
    elif err["type"] == "literal_error":
        msg = f"{msg} (got {err.get('input')!r})"
    elif "input" in err and not isinstance(err["input"], dict | list):
        msg = f"{msg} (got {err['input']!r})"
    return f"{source}: {loc or 'recipe'}: {msg}"


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    model: Any = Recipe
    for part in loc:
        if isinstance(part, int) or str(part).isdigit():
            continue
        field = model.model_fields.get(str(part)) if hasattr(model, "model_fields") else None
        if field is None:
            return None
        ann = field.annotation
        for candidate in getattr(ann, "__args__", ()) + (ann,):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                model = candidate
                break
            inner = getattr(candidate, "__args__", ())
            if inner and isinstance(inner[0], type) and issubclass(inner[0], BaseModel):
                model = inner[0]
                break
    return model if isinstance(model, type) else None


_SET_RE = re.compile(r"^([A-Za-z_][\w.]*)=(.*)$", re.S)


def apply_overrides(raw: dict[str, Any], overrides: list[str], source: str = "--set") -> dict[str, Any]:
    """`--set train.learning_rate=1e-4 data.sources.0.sample=200`: values parse as YAML."""
    for item in overrides:
        m = _SET_RE.match(item.strip())
        if not m:
            if re.match(r"^[\w.]+\[\d+\]", item.strip()):  # data.sources[0].path=...: a list item is a dot and its index
                fixed_key = re.sub(r"\[(\d+)\]", r".\1", item.strip().split("=", 1)[0])
                raise RecipeError(f"{source}: '{item}': a list item is named with a dot: {fixed_key}=...")
            raise RecipeError(f"{source}: '{item}' is not KEY=VALUE (e.g. train.learning_rate=1e-4)")
        keys = m.group(1).split(".")
        try:
            value = yaml.safe_load(m.group(2)) if m.group(2) else None
        except yaml.YAMLError as exc:
            problem = getattr(exc, "problem", None) or first_line(exc)
            raise RecipeError(f"{source}: '{item}': the value is not valid YAML ({problem}); "
                              "quote text, write lists as [a, b] and mappings as {k: v}") from None
        node: Any = raw
        for i, key in enumerate(keys[:-1]):
            if isinstance(node, list):
                if not key.isdigit() or int(key) >= len(node):
                    raise RecipeError(f"{source}: '{'.'.join(keys[: i + 1])}' is not an index of that list")
                node = node[int(key)]
            elif isinstance(node, dict):
                if node.get(key) is None:  # `eval:` with nothing under it is an empty section
                    node[key] = {}
                node = node[key]
            else:
                raise RecipeError(f"{source}: '{'.'.join(keys[:i])}' is a value, not a section")
        last = keys[-1]
        if isinstance(node, list):
            if not last.isdigit() or int(last) >= len(node):
                raise RecipeError(f"{source}: '{m.group(1)}' is not an index of that list")
            node[int(last)] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise RecipeError(f"{source}: '{'.'.join(keys[:-1])}' is a value, not a section")
    return raw


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.safe_load, except that a key given twice in one mapping is an error: PyYAML keeps the
    last one silently, so a second `train:` section would quietly drop the first one's settings."""

    def construct_mapping(self, node, deep=False):
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                continue  # unhashable or odd keys: PyYAML's own construct_mapping reports them
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key '{key}' (the second would silently replace the first)",
                    key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    path = Path(path)
    if path.is_dir():
        raise RecipeError(f"{path}: is a folder; give a recipe YAML file (a run folder's own is {path / 'recipe.yaml'})")
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    try:
        raw = yaml.load(path.read_text(encoding="utf-8-sig"), Loader=_UniqueKeyLoader)  # noqa: S506 - safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or first_line(exc)
        raise RecipeError(f"{path}:{where}: malformed YAML: {problem}") from None
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not UTF-8 text") from None
    if raw is None:
        raise RecipeError(f"{path}: the file is empty; a recipe needs at least name:, model: and data: "
                          "(recipes/smoke.yaml is the smallest one that runs)")
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping (name:, model:, data:, ...), got {type(raw).__name__}")
    raw = apply_overrides(raw, overrides or [])
    backend = (raw.get("model") or {}).get("backend", "auto") if isinstance(raw.get("model"), dict) else "auto"
    from arzan.model import (
        import_unsloth_early,  # before validation imports trl (unsloth must be first)
    )

    import_unsloth_early(str(backend))
    try:
        recipe = recipe_from_dict(raw, source=str(path))
    except RecipeError as exc:  # a bad value given with --set is the command line's, not the file's
        head, msg = f"{path}: ", str(exc)
        for o in overrides or []:
            key = re.sub(r"\.(\d+)(?=\.|$)", r"[\1]", o.split("=", 1)[0].strip())  # data.sources.0 -> [0]
            # the field itself, one under it, or a section above it whose cross-field check it broke
            parents = [key[:m.start()] for m in re.finditer(r"[.\[]", key)]
            if msg.startswith((f"{head}{key}:", f"{head}{key}.", f"{head}{key}[", *(f"{head}{p}:" for p in parents))):
                raise RecipeError(f"--set: {msg[len(head):]}") from None
        raise
    recipe._base_dir = path.resolve().parent
    check_files(recipe, source=str(path))
    return recipe


def recipe_from_dict(raw: dict[str, Any], source: str = "recipe") -> Recipe:
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}  # a union's members fail together: one problem
        for err in exc.errors():
            groups.setdefault(_split_loc(err["loc"])[0], []).append(err)
        problems = list(groups.values())
        first = _format_error(problems[0][0], source, problems[0])
        n = len(problems) - 1
        where = [_field_path(g[0]["loc"]) or "recipe" for g in problems[1:4]]
        named = f": {', '.join(where)}{', ...' if n > 3 else ''}" if where else ""
        more = f" (and {n} more problem{'s' if n > 1 else ''}{named})" if n else ""
        raise RecipeError(first + more) from None


def _is_task_file(task: str) -> bool:
    return task.endswith((".yaml", ".yml"))


def check_files(recipe: Recipe, source: str) -> None:
    """Every local path a recipe names exists, checked before training is paid for."""
    for group in ("sources", "eval_sources"):
        for i, src in enumerate(getattr(recipe.data, group)):
            if src.path is not None and not resolve_data_path(src.path, recipe.base_dir).is_file():
                places = list(dict.fromkeys(str(d) for d in (recipe.base_dir.resolve(), Path.cwd().resolve())))
                raise RecipeError(f"{source}: data.{group}[{i}].path: file not found: {src.path} (looked in "
                                  f"{' and '.join(places)})")
    ev = recipe.eval
    if ev.data_dir and not recipe.eval_data_dir().is_dir():
        raise RecipeError(f"{source}: eval.data_dir: folder not found: {ev.data_dir} (read from the recipe's "
                          "folder, then the working folder)")
    for i, task in enumerate(ev.tasks if isinstance(ev.tasks, list) else []):
        if _is_task_file(task) and not resolve_data_path(task, recipe.base_dir).is_file():
            raise RecipeError(f"{source}: eval.tasks[{i}]: task file not found: {task}")
