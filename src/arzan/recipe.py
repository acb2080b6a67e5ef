"""Recipes: one YAML file per experiment, validated before anything is downloaded or paid for.

Field names follow TRL's ``SFTConfig`` and peft's ``LoraConfig`` wherever those exist, so a user
who knows TRL reads a recipe without a glossary. Every error names the file, the field path and
what would be accepted, because a typo found after renting a GPU costs money.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from arzan.errors import ArzanError

ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PACKAGE_SCHEME = "arzan://"  # files shipped inside the package, e.g. arzan://sample/kk_arith.jsonl


class RecipeError(ArzanError):
    """A recipe that cannot run; the message names file and field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


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
            raise ValueError("sample is a fraction in (0, 1] or a whole number of rows")
        return v


class DataSection(_Strict):
    sources: list[DataSource] = Field(min_length=1)
    eval_sources: list[DataSource] = Field(default_factory=list)
    eval_fraction: float = Field(0.0, ge=0.0, lt=1.0)
    system_prompt: str | None = None
    assistant_only_loss: bool = True
    seed: int = 42


# SFTConfig fields arzan sets itself: a recipe that set them would fight the run folder layout.
_RESERVED_TRAIN_FIELDS = {"output_dir", "logging_dir", "resume_from_checkpoint", "hub_token",
                          "push_to_hub", "hub_model_id", "use_cpu", "overwrite_output_dir"}


@lru_cache(maxsize=1)
def sft_config_fields() -> frozenset[str]:
    from trl import SFTConfig

    return frozenset(f.name for f in dataclasses.fields(SFTConfig))


class TrainSection(BaseModel):
    """SFTConfig fields by their TRL names; any other SFTConfig field is accepted too."""

    model_config = ConfigDict(extra="allow", validate_assignment=True)

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

    @model_validator(mode="after")
    def _only_sft_fields(self) -> TrainSection:
        known = sft_config_fields()
        for key in self.model_extra or {}:
            if key in _RESERVED_TRAIN_FIELDS:
                raise ValueError(f"'{key}' is set by arzan (run folder, --resume, output.*); remove it")
            if key not in known:
                raise ValueError(_unknown_message(key, known | set(type(self).model_fields)))
        return self

    def sft_kwargs(self) -> dict[str, Any]:
        data = self.model_dump()
        data.pop("save_every_minutes")
        return {k: v for k, v in data.items() if v is not None}


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
        return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


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


def _field_path(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if not str(p).startswith("function-")]
    path = ""
    for p in parts:
        path += f"[{p}]" if p.isdigit() else (f".{p}" if path else p)
    return path


def _format_error(err: dict[str, Any], source: str) -> str:
    loc = _field_path(err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
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
            raise RecipeError(f"{source}: '{item}' is not KEY=VALUE (e.g. train.learning_rate=1e-4)")
        keys, value = m.group(1).split("."), yaml.safe_load(m.group(2)) if m.group(2) else None
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


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise RecipeError(f"{path}: recipe file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8-sig"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"{path}:{where}: malformed YAML: {problem}") from None
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not UTF-8 text") from None
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping (name:, model:, data:, ...), got {type(raw).__name__}")
    raw = apply_overrides(raw, overrides or [])
    backend = (raw.get("model") or {}).get("backend", "auto") if isinstance(raw.get("model"), dict) else "auto"
    from arzan.model import (
        import_unsloth_early,  # before validation imports trl (unsloth must be first)
    )

    import_unsloth_early(str(backend))
    recipe = recipe_from_dict(raw, source=str(path))
    recipe._base_dir = path.resolve().parent
    check_files(recipe, source=str(path))
    return recipe


def recipe_from_dict(raw: dict[str, Any], source: str = "recipe") -> Recipe:
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        first = _format_error(errors[0], source)
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        raise RecipeError(first + more) from None


def check_files(recipe: Recipe, source: str) -> None:
    for group in ("sources", "eval_sources"):
        for i, src in enumerate(getattr(recipe.data, group)):
            if src.path is not None and not resolve_data_path(src.path, recipe.base_dir).is_file():
                raise RecipeError(f"{source}: data.{group}[{i}].path: file not found: {src.path}")
