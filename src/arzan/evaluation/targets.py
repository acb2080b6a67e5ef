"""What `arzan eval TARGET` evaluates: a run folder, an adapter, a model folder or a Hub id.

Why the run folder is the usual target: it already says everything needed (the adapter, the
tokenizer it was trained with, and via adapter_config.json the base it sits on), and it is where
the bill lives, so the scores belong next to it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from arzan.errors import ArzanError, first_line
from arzan.runfolder import recipe_model, recipe_section


@dataclass
class Target:
    """`base` is loadable (a folder or Hub id); `base_name` is what eval.json records."""
    kind: str  # run | adapter | model
    base: str
    base_name: str
    adapter: Path | None
    tokenizer: str
    out_dir: Path
    trained_4bit: bool = False  # a QLoRA run: its recipe.yaml loaded the base in 4-bit
    revision: str | None = None  # the base's Hub revision the run's recipe pinned
    # the run's recipe, so the base is loaded as training loaded it: its dtype (None: `auto`, the
    # GPU's own 16-bit type) and whether its code comes from the Hub repo
    dtype: str | None = None
    trust_remote_code: bool = False
    trained_chat: bool = False  # its recipe scores lm-eval tasks in the chat template (eval.chat_template)


def resolve_target(target: str | os.PathLike, out_dir: Path | None = None) -> Target:
    from arzan.tiny import is_tiny, tiny_model_dir

    def loadable(name: str) -> str:
        return str(tiny_model_dir()) if is_tiny(name) else name

    given = Path(target).expanduser()
    p = given.resolve() if given.exists() else given
    if p.is_dir():
        adapter = p / "adapter" if (p / "adapter" / "adapter_config.json").is_file() else p
        if (adapter / "adapter_config.json").is_file():
            default_out = p.parent if adapter == p and p.name == "adapter" else p
            trained = recipe_model(default_out)
            base = _adapter_base(adapter, trained, default_out / "recipe.yaml")
            tokenizer = str(adapter) if (adapter / "tokenizer_config.json").is_file() else loadable(base)
            revision, dtype = trained.get("revision"), trained.get("dtype")
            return Target("run" if adapter != p else "adapter", loadable(base), base, adapter,
                          tokenizer, out_dir or default_out, trained.get("load_in_4bit") is True,
                          revision if isinstance(revision, str) and revision else None,
                          dtype if dtype in ("bfloat16", "float16", "float32") else None,
                          trained.get("trust_remote_code") is True,
                          recipe_section(default_out, "eval").get("chat_template") is True)
        if (p / "config.json").is_file():
            return Target("model", str(p), str(p), None, str(p), out_dir or p)
        if (p / "recipe.yaml").is_file() and (p / "cost.json").is_file():  # a run that never saved an adapter
            from arzan.cost.ledger import live_writer_age, read_ledger
            from arzan.runfolder import ledger_doc

            try:
                live = live_writer_age(read_ledger(p / "cost.json")) is not None
            except ArzanError:
                live = False
            if live:
                raise ArzanError(f"{p}: this run is still training and has saved no adapter yet; score it once "
                                 "it stops")
            status = ledger_doc(p).get("status") or "unknown"
            raise ArzanError(f"{p}: this run has no adapter to score yet (its status is {status}); "
                             f"finish or resume it first: arzan train --resume {p}")
        raise ArzanError(f"{p}: not a run folder (no adapter/adapter_config.json), "
                         "adapter folder (adapter_config.json) or model folder (config.json)")
    name = str(target)
    hub_like = (re.fullmatch(r"[\w.-]+/[\w.-]+", name) and not p.exists()
                and not p.parent.is_dir() and not name.startswith((".", "~")))
    if is_tiny(name) or hub_like:
        return Target("model", loadable(name), name, None, loadable(name),
                      out_dir or evals_folder(name))
    raise ArzanError(f"{target}: no such run folder or model folder, and not a Hub id (org/name)")


def evals_folder(model: str, four_bit: bool = False, chat: bool = False) -> Path:
    """Where `arzan eval MODEL` puts a plain model's scores: a 4-bit or chat-template scoring beside
    the plain 16-bit one, never over it (a fine-tune of each kind needs its own to be set against)."""
    return Path("evals") / (re.sub(r"[^\w.-]+", "_", model) + ("-4bit" if four_bit else "") + ("-chat" if chat else ""))


def base_scores_beside(result: dict) -> list[str]:
    """The eval.json and the base's own scores found under evals/ (every 4-bit and chat kind: compare
    pairs the matching one), so a fine-tune's scores are shown with the gain over its base at once."""
    scored = result.get("model") or {}
    base = scored.get("base") if scored.get("kind") != "model" else None
    found = [evals_folder(base, bit, chat) for bit in (False, True) for chat in (False, True)] if base else []
    return [str(result["path"]), *(str(f) for f in found if (f / "eval.json").is_file())]


def _adapter_base(adapter: Path, trained: dict, recipe: Path) -> str:
    """The run's recipe first (`trained`: its model section), as `arzan merge` (export.base_model_of)
    decides: it holds the name the user chose, where the adapter's config may hold a machine's cache
    folder (the tiny model) or unsloth's renaming; that name is what a base model's own eval records,
    so `arzan compare` can pair them. An adapter without its run folder has only its config."""
    if isinstance(trained.get("name"), str) and trained["name"]:
        return trained["name"]
    cfg_file = adapter / "adapter_config.json"
    try:
        base = json.loads(cfg_file.read_text(encoding="utf-8")).get("base_model_name_or_path")
    except (OSError, ValueError) as e:  # ValueError: bad JSON, or not UTF-8 text
        raise ArzanError(f"{cfg_file}: unreadable adapter config ({first_line(e)})") from None
    if not base:
        raise ArzanError(f"{cfg_file}: no base_model_name_or_path, and no model.name in {recipe}")
    return str(base)


def eval_command(target: str | Path, tasks: str | list[str], limit: int | None = None,
                 data_dir: str | Path | None = None, four_bit: bool = False, chat_template: bool = False) -> str:
    """The `arzan eval` command line that scores `target` on `tasks` (a suite, task names or task
    files), quoted for a shell: a task file or data folder under "My Drive" has a space in its path."""
    import shlex

    parts = ["arzan eval", shlex.quote(str(target)), "--tasks",
             shlex.quote(tasks if isinstance(tasks, str) else ",".join(tasks))]
    if limit:
        parts += ["--limit", str(limit)]
    if data_dir:
        parts += ["--data-dir", shlex.quote(str(data_dir))]
    return " ".join(parts + (["--load-in-4bit"] if four_bit else []) + (["--chat-template"] if chat_template else []))


