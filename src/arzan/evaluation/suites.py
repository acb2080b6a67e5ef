"""Which lm-eval tasks "Kazakh" means, and where their data will come from.

Why this exists: `--tasks kazakh` has to expand to the same list on every machine, mixing
lm-eval's own Kazakh tasks with arzan's shipped YAMLs and a user's own YAML files; and every
local data file has to be checked before a model is loaded, so a bad row costs seconds, not a
GPU-hour of loading an 8B model first.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from arzan.errors import ArzanError, yaml_problem
from arzan.evaluation.taskdata import DATA_DIR_ENV, local_path, validate_file

# Kazakh tasks that lm-eval 0.4.13 itself ships; each name checked against its task registry
# (tests/test_eval_suites.py keeps it that way). `global_piqa_nonparallel_*` exists as `_cloze_`
# (log-likelihood) and `_generation_` (free text) variants.
LM_EVAL_KAZAKH = [
    "belebele_kaz_Cyrl",
    "include_base_44_kazakh",
    "global_piqa_nonparallel_cloze_kaz_cyrl",
    "multiblimp_kaz",
]
ARZAN_KAZAKH = [
    "arzan_kkcopa",
    "arzan_kazmmlu_kk",
    "arzan_mmlu_translated_kk",
    "arzan_unt_kk",
    "arzan_constitution_kk",
    "arzan_dastur_kk",
    "arzan_kazllm_kk",
]
SUITES: dict[str, list[str]] = {
    # everything scored by log-likelihood: cheap enough to run after every fine-tune
    "kazakh": LM_EVAL_KAZAKH + ARZAN_KAZAKH,
    # plus the generative tasks, which cost minutes of decoding per hundred items on an 8B model
    "kazakh_full": LM_EVAL_KAZAKH + ARZAN_KAZAKH
    + ["global_piqa_nonparallel_generation_kaz_cyrl", "arzan_kazllm_gsm8k_kk"],
    # the two sets with a shared local copy: runs offline from --data-dir
    "kazakh_local": ["arzan_belebele_kk", "arzan_kkcopa"],
}
# lm-eval tasks that have an arzan twin reading the same items from a local file
LOCAL_TWINS = {"belebele_kaz_Cyrl": "arzan_belebele_kk"}


def tasks_dir() -> Path:
    return Path(str(resources.files("arzan") / "resources" / "tasks"))


class _Loader(yaml.SafeLoader):
    """Reads task YAMLs without importing the functions their `!function` tags name."""


class FunctionRef(str):
    """A `!function module.name` value: a callable lm-eval imports, not a registry name."""


_Loader.add_constructor("!function", lambda loader, node: FunctionRef(loader.construct_scalar(node)))


def with_includes(path: Path, cfg: dict, depth: int = 0) -> dict:
    """The config as lm-eval builds it: an `include:` file's keys (relative to this YAML, recursively)
    under this file's own. arzan's tasks keep metric_list, output_type and custom_dataset in a shared
    template. An include that cannot be read is left for lm-eval to report."""
    include = cfg.get("include")
    if not isinstance(include, str) or depth > 8:
        return cfg
    base_path = Path(include) if Path(include).is_absolute() else path.parent / include
    try:
        base = yaml.load(base_path.read_text(encoding="utf-8"), Loader=_Loader)
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return cfg
    if not isinstance(base, dict):
        return cfg
    return {**with_includes(base_path, base, depth + 1), **{k: v for k, v in cfg.items() if k != "include"}}


def read_task_yaml(path: Path) -> dict:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except UnicodeDecodeError:
        raise ArzanError(f"{path}: not UTF-8 text (Windows Notepad may have saved it as UTF-16: save it as "
                         "UTF-8)") from None
    except yaml.YAMLError as e:
        raise ArzanError(f"{path}: unreadable task YAML ({yaml_problem(e)})") from None
    except OSError as e:
        raise ArzanError(f"{path}: unreadable task YAML ({e.strerror or type(e).__name__})") from None
    if not isinstance(data, dict) or not (data.get("task") or data.get("group")):
        raise ArzanError(f"{path}: not an lm-eval task: it needs a `task:` (or `group:`) name")
    return data


def task_file(name: str, folders: list[Path]) -> tuple[Path, dict] | None:
    """The YAML that defines task `name` among the folders a plan includes, with its config as
    lm-eval builds it (includes merged): to name it, and say what it lacks, in an error."""
    for folder in folders:
        if (found := index_yamls(Path(folder)).get(name)) is not None:
            return found[0], with_includes(*found)
    return None


def task_name(cfg: dict) -> str:
    return str(cfg["task"] if isinstance(cfg.get("task"), str) else cfg["group"])


def index_yamls(folder: Path) -> dict[str, tuple[Path, dict]]:
    """{task or group name: (file, config)} for the task YAMLs directly in `folder`; other YAML
    files there (a user's folder may hold anything) are skipped, as lm-eval skips them."""
    out = {}
    for p in sorted(folder.glob("*.yaml")):
        try:
            cfg = read_task_yaml(p)
        except ArzanError:
            continue
        out[task_name(cfg)] = (p, cfg)
    return out


def _one_file_per_name(path: Path, name: str) -> None:
    """lm-eval reads every task YAML in the folder of the one named and keeps the first of two with
    one task name: another file's questions would be scored under this file's name."""
    for other in sorted(path.parent.glob("*.yaml")):
        if other.resolve() == path.resolve():
            continue
        try:
            clash = task_name(read_task_yaml(other)) == name
        except ArzanError:
            continue
        if clash:
            raise ArzanError(f"{path}: task '{name}' is also the task of {other} in the same folder, and lm-eval "
                             "would score only one of them; rename one task or move one file")


def shallow(folders: list[Path], into: Path) -> list[Path]:
    """lm-eval reads every YAML below an include path, recursively: a quiz YAML in the repository's
    root (as the README shows) made it index arzan's own task files a second time, with a warning per
    task, and everything under the folder. A user's folder is handed over as links to its own files,
    without its subfolders (a sibling `include:` template still resolves, and data paths into a
    subfolder do too: taskdata.local_path follows the link). arzan's own task folder goes as it is."""
    out = []
    for i, folder in enumerate(folders):
        if folder == tasks_dir():
            out.append(folder)
            continue
        sub = into / str(i)
        try:
            sub.mkdir(parents=True)
            for file in sorted(p for p in folder.iterdir() if p.is_file()):
                (sub / file.name).symlink_to(file.resolve())
        except OSError:  # no symlinks here (some Windows set-ups): the folder as it is, warnings and all
            out.append(folder)
            continue
        out.append(sub)
    return out


@dataclass
class Plan:
    """What to hand lm-eval: task names, extra include paths, and where each task's data is."""
    tasks: list[str]
    include_paths: list[Path]
    needs_lm_eval_registry: bool
    data_source: dict[str, str] = field(default_factory=dict)
    substituted: dict[str, str] = field(default_factory=dict)


def resolve(tasks: list[str] | str, data_dir: str | os.PathLike | None = None) -> Plan:
    """Expands suites and YAML paths, swaps in local twins, and validates every local file."""
    items = [t.strip() for t in (tasks.split(",") if isinstance(tasks, str) else tasks) if t and t.strip()]
    if not items:
        raise ArzanError("no tasks given; try --tasks kazakh (suites: " + ", ".join(SUITES) + ")")
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV)
    known = index_yamls(tasks_dir())
    include, names, substituted = [tasks_dir()], [], {}
    for item in items:
        if item.endswith((".yaml", ".yml")):
            path = Path(item).expanduser().resolve()
            if not path.is_file():
                raise ArzanError(f"{item}: task YAML not found")
            cfg = read_task_yaml(path)
            base = cfg.get("include")
            if isinstance(base, str) and not (path.parent / base).is_file():  # an absolute one joins to itself
                raise ArzanError(f"{path}: include: {base} not found (looked in {path.parent})")
            _one_file_per_name(path, task_name(cfg))
            known.update(index_yamls(path.parent))
            include.append(path.parent)
            names.append(task_name(cfg))
        else:
            names.extend(SUITES.get(item, [item]))
    for builtin, twin in LOCAL_TWINS.items():
        if builtin in names and data_dir and _local_file(known[twin][1], data_dir):
            names = [twin if n == builtin else n for n in names]  # a suite and the name given again: both
            substituted[builtin] = twin
    names = list(dict.fromkeys(names))
    plan = Plan(names, list(dict.fromkeys(include)), any(n not in known for n in names), {}, substituted)
    for name in names:
        for leaf in _leaves(name, known):
            path, cfg = known[leaf]
            _check_metrics(path, cfg)
            kw = cfg.get("dataset_kwargs") or {}
            local = local_path(kw.get("local_file"), data_dir, str(path))
            if local is not None:
                from arzan.evaluation.taskdata import SCHEMAS

                if kw.get("schema", "mc") not in SCHEMAS:  # the YAML's field, not the data file, is wrong
                    raise ArzanError(f"{path}: dataset_kwargs.schema: unknown schema {kw.get('schema')!r}; known: "
                                     f"{', '.join(SCHEMAS)}")
                validate_file(local, kw.get("schema", "mc"))
                plan.data_source[leaf] = f"local:{local}"
            elif kw.get("hub_path") or cfg.get("dataset_path"):
                plan.data_source[leaf] = f"hub:{kw.get('hub_path') or cfg.get('dataset_path')}"
            elif kw.get("local_file"):
                raise ArzanError(f"{path}: data file {kw['local_file']!r} not found "
                                 f"(data dir: {data_dir or 'none'}) and no Hub dataset named")
    return plan


def _check_metrics(path: Path, cfg: dict) -> None:
    """A metric name lm-eval does not know is scored as nothing: lm-eval only logs it, runs the whole
    paid eval and reports no score (an unknown aggregation fails after it). Refused here, before a
    model is loaded (and before a training whose eval.tasks name the file). Not checked: a task with
    its own process_results (it names its own metrics), a `!function` callable, and a metric of a
    generate_until task, which lm-eval may fetch from Hugging Face `evaluate` (rouge, sacrebleu)."""
    cfg = with_includes(path, cfg)
    if cfg.get("process_results") is not None:
        return
    import importlib

    try:
        importlib.import_module("lm_eval.api.metrics")  # its decorators fill the registries
        from lm_eval.api.registry import aggregation_registry, metric_registry
    except ImportError:  # lm-eval missing is said by whoever runs it
        return
    import difflib

    generated = cfg.get("output_type", "generate_until") == "generate_until"
    for i, entry in enumerate(cfg.get("metric_list") or [], start=1):
        if not isinstance(entry, dict) or entry.get("hf_evaluate"):
            continue
        for key, registry in (("metric", metric_registry), ("aggregation", aggregation_registry)):
            name = entry.get(key)
            if key == "metric" and generated:
                continue
            if isinstance(name, str) and not isinstance(name, FunctionRef) and name not in registry:
                near = difflib.get_close_matches(name, list(registry.keys()), n=3, cutoff=0.5)
                hint = f"did you mean {' or '.join(near)}?" if near else f"lm-eval's: {', '.join(sorted(registry.keys()))}"
                raise ArzanError(f"{path}: metric_list entry {i}: {key} {name!r} is not one lm-eval knows ({hint})")


def _local_file(cfg: dict, data_dir: str | os.PathLike) -> bool:
    kw = cfg.get("dataset_kwargs") or {}
    return local_path(kw.get("local_file"), data_dir) is not None


def _leaves(name: str, known: dict[str, tuple[Path, dict]]) -> list[str]:
    if name not in known:
        return []  # an lm-eval built-in: its data is lm-eval's business
    cfg = known[name][1]
    if "group" in cfg and isinstance(cfg.get("task"), list):
        return [leaf for sub in cfg["task"] if isinstance(sub, str) for leaf in _leaves(sub, known)]
    return [name]
