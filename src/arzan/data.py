"""Training data: load, check, mix, and tokenize exactly as the trainer will see it.

arzan hands SFTTrainer a pre-tokenized dataset (``input_ids`` + ``assistant_masks``; TRL turns
the mask into labels). Tokenizing here rather than inside the trainer means `arzan estimate`
counts the very tokens that will be paid for, and bad rows are reported with their row number
before a GPU is rented.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from datasets import Dataset, concatenate_datasets

from arzan.errors import ArzanError, first_line
from arzan.recipe import DataSection, DataSource, resolve_data_path

# fields each format needs after `columns:` renaming; optional ones may be absent
FORMAT_FIELDS: dict[str, tuple[list[str], list[str]]] = {
    "alpaca": (["instruction", "output"], ["input", "system"]),
    "messages": (["messages"], []),
    "prompt_completion": (["prompt", "completion"], []),
    "text": (["text"], []),
}
ROLES = {"system", "user", "assistant"}
# each row's source and row number, carried through mixing and tokenizing so that a row max_length
# drops or cuts can be named; removed before the trainer sees the set
ORIGIN = ("_source", "_row")


@dataclass
class SourceInfo:
    """Provenance of one source, written to the ledger so anyone can check what was trained on."""

    name: str
    format: str
    rows_available: int
    rows_used: int
    fingerprint: str
    license: str | None = None


@dataclass
class Truncation:
    """What max_length did to one split: rows it dropped (no answer token left inside the window)
    and rows it cut short (the answer runs past the window, so its end-of-turn is never learnt).
    A paying user must hear of both: the ledger's row counts would otherwise claim every row.
    The first few rows of each kind are named by source and row, so they can be found and fixed."""

    rows: int  # rows tokenized
    dropped: int  # by max_length: answer tokens before it, none left inside it
    cut: int
    max_length: int
    empty: int = 0  # rows with no answer token to train on at any length (an empty answer)
    # [source, row] of the first EXAMPLES rows of each kind, in source order
    dropped_rows: list[list] = field(default_factory=list)
    cut_rows: list[list] = field(default_factory=list)
    empty_rows: list[list] = field(default_factory=list)

    EXAMPLES = 5

    @classmethod
    def notes(cls, recorded: Any) -> list[str]:
        """The ledger's summary.data_truncation as the lines the card and the report print."""
        if not isinstance(recorded, dict):
            return []
        counts, lists = {"rows", "dropped", "cut", "max_length", "empty"}, {"dropped_rows", "cut_rows", "empty_rows"}
        made = [(split, cls(**{k: v for k, v in t.items() if k in counts | lists}))
                for split, t in recorded.items()
                if isinstance(t, dict) and counts - {"empty"} <= set(t)
                and all(isinstance(v, int) and not isinstance(v, bool) for k, v in t.items() if k in counts)
                and all(_is_row_list(v) for k, v in t.items() if k in lists)]
        return truncation_lines(dict(made))

    def note(self, label: str) -> str | None:
        if not self.dropped and not self.cut and not self.empty:
            return None
        parts = ([f"{self.dropped:,} of {self.rows:,} rows dropped (no answer token within max_length "
                  f"{self.max_length}{_where(self.dropped_rows, self.dropped)})"] if self.dropped else []) + \
                ([f"{self.cut:,} cut short (the answer runs past max_length {self.max_length}: its end is "
                  f"never learnt{_where(self.cut_rows, self.cut)})"] if self.cut else []) + \
                ([f"{self.empty:,} of {self.rows:,} rows dropped (no answer to train "
                  f"on{_where(self.empty_rows, self.empty)})"] if self.empty else [])
        fix = "; raise train.max_length or shorten those rows" if self.dropped or self.cut else ""
        return f"{label}: " + ", ".join(parts) + fix


def _is_row_list(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(p, list) and len(p) == 2 and isinstance(p[0], str) and isinstance(p[1], int) for p in value)


def _where(at: list[list], count: int) -> str:
    """'; d.jsonl rows 6, 7 and 3 more': where the first rows of one kind are."""
    if not at:
        return ""
    by_source: dict[str, list[int]] = {}
    for source, row in at:
        by_source.setdefault(source, []).append(row)
    named = "; ".join(f"{src} row{'s' if len(rows) > 1 else ''} {', '.join(f'{r:,}' for r in rows)}"
                      for src, rows in by_source.items())
    more = count - len(at)
    return f"; {named}" + (f" and {more:,} more" if more > 0 else "")


def truncation_lines(by_split: dict[str, Truncation]) -> list[str]:
    """One line per split max_length did something to: the terminal, the card and the report say the same."""
    return [n for split, t in by_split.items() if (n := t.note(f"{split} data")) is not None]


@dataclass
class PreparedData:
    train: Dataset
    eval: Dataset | None
    sources: list[SourceInfo] = field(default_factory=list)
    truncation: dict[str, Truncation] = field(default_factory=dict)  # "train" / "eval"

    def truncation_notes(self) -> list[str]:
        return truncation_lines(self.truncation)

    @property
    def trained_tokens(self) -> int:
        return count_tokens(self.train)[1]


@contextmanager
def quiet_progress() -> Iterator[None]:
    """No `datasets` progress bars inside: the quick passes around tokenizing (and TRL's own pass
    over an already-tokenized set) printed a dozen bars before the first line about money."""
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar, is_progress_bar_enabled

    was = is_progress_bar_enabled()
    disable_progress_bar()
    try:
        yield
    finally:
        if was:
            enable_progress_bar()


def _source_name(src: DataSource) -> str:
    return src.path or f"{src.hub}{':' + src.config if src.config else ''}[{src.split}]"


class _Numbered(dict):
    """A JSONL row that remembers its line: with blank lines between rows, "row 6" must be the line
    an editor shows, as the JSON error's number is."""

    def __init__(self, row: dict, line: int) -> None:
        super().__init__(row)
        self.line = line


def _row_number(row: Any, index: int) -> int:
    return getattr(row, "line", index)


def _read_local(path: Path, label: str) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    try:
        if suffix == ".jsonl":
            rows = []
            with path.open(encoding="utf-8-sig") as fh:  # -sig: real files often start with a BOM
                for n, line in enumerate(fh, start=1):
                    if line.strip():
                        try:
                            row = json.loads(line)
                        except json.JSONDecodeError as exc:
                            raise ArzanError(f"{label}: row {n}: not valid JSON ({exc.msg})") from None
                        if not isinstance(row, dict):
                            raise ArzanError(f"{label}: row {n}: expected an object with named fields")
                        rows.append(_Numbered(row, n))
            return rows
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8-sig"))
            if isinstance(data, dict) and len(data) == 1 and isinstance(next(iter(data.values())), list):
                data = next(iter(data.values()))  # {"train": [...]} style
            if not isinstance(data, list):
                raise ArzanError(f"{label}: a .json data file holds a list of rows")
            return data
        if suffix == ".csv":
            limit = csv.field_size_limit(2**31 - 1)  # a long answer is data, not an error (default 128 KiB)
            try:
                with path.open(encoding="utf-8-sig", newline="") as fh:
                    reader = csv.DictReader(fh)
                    try:
                        return list(reader)
                    except csv.Error as exc:
                        raise ArzanError(f"{label}: line {reader.line_num}: not valid CSV ({exc})") from None
            finally:
                csv.field_size_limit(limit)  # process-wide: leave it as it was
        if suffix == ".parquet":
            import pyarrow as pa

            try:
                return Dataset.from_parquet(str(path)).to_list()
            except (pa.ArrowException, ValueError) as exc:
                raise ArzanError(f"{label}: not a readable parquet file ({first_line(exc)})") from None
    except json.JSONDecodeError as exc:
        raise ArzanError(f"{label}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except UnicodeDecodeError:
        with path.open("rb") as fh:
            utf16 = fh.read(2) in (b"\xff\xfe", b"\xfe\xff")
        if utf16:
            raise ArzanError(f"{label}: saved as UTF-16 (Windows 'Unicode', PowerShell's >): save it as UTF-8") \
                from None
        raise ArzanError(f"{label}: {_first_non_utf8_line(path)}not UTF-8 text (saved as Windows-1251 or "
                         "Latin-1? save it as UTF-8)") from None
    except OSError as exc:
        raise ArzanError(f"{label}: cannot read file ({exc.strerror or exc})") from None
    raise ArzanError(f"{label}: unsupported file type '{suffix}' (use .jsonl, .json, .csv or .parquet)")


def _first_non_utf8_line(path: Path) -> str:
    """'line N: ' for the first line that is not UTF-8, so a mostly good file can be fixed where it breaks."""
    try:
        with path.open("rb") as fh:
            for n, line in enumerate(fh, start=1):
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError:
                    return f"line {n}: "
    except OSError:
        pass
    return ""


def _load_source(src: DataSource, base_dir: Path) -> tuple[Dataset, str, str]:
    if src.path is not None:
        path = resolve_data_path(src.path, base_dir)
        if not path.is_file():
            raise ArzanError(f"{src.path}: data file not found")
        rows = _read_local(path, src.path)
        digest = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]
        if not rows:
            raise ArzanError(f"{src.path}: the dataset is empty")
        bad = next((_row_number(r, i) for i, r in enumerate(rows, 1) if not isinstance(r, dict)), None)
        if bad:
            raise ArzanError(f"{src.path}: row {bad}: expected an object with named fields")
        return _rows_to_dataset(rows, src, src.path), src.path, digest
    from datasets import load_dataset

    label = _source_name(src)
    try:
        ds = load_dataset(src.hub, src.config, split=src.split, revision=src.revision)
    except Exception as exc:  # the hub raises many types; the user needs the id and the reason
        first = first_line(exc)
        offline = any(w in f"{type(exc).__name__} {first}".lower() for w in ("offline", "connect", "resolve"))
        hint = (" (no hub here: load it once where there is one, datasets caches it; or save it as a .jsonl "
                "file and give that as the source's path)" if offline else "")
        raise ArzanError(f"{label}: cannot load dataset from the hub: {first}{hint}") from None
    return ds, label, f"hub:{src.hub}@{src.revision or 'main'}#{ds._fingerprint}"


def _check_columns(src: DataSource, label: str, found: list[str]) -> None:
    required, optional = FORMAT_FIELDS[src.format]
    for key in src.columns:
        if key not in required + optional:
            raise ArzanError(f"{label}: columns.{key}: not a field of format '{src.format}' "
                             f"(fields: {', '.join(required + optional)})")
    missing = [k for k in required if src.columns.get(k, k) not in found]
    if missing:
        want = ", ".join(f"'{src.columns.get(k, k)}'" for k in missing)
        raise ArzanError(f"{label}: missing column {want} for format '{src.format}' "
                         f"(found: {', '.join(found)}; map names with columns: {{field: column}})")


def _rows_to_dataset(rows: list[dict[str, Any]], src: DataSource, label: str) -> Dataset:
    """Rows of a local file as a Dataset with the columns the format reads.

    Every row's keys count (a key only some rows have is None in the others; Dataset.from_list
    would take the columns from the first row alone and drop the rest silently). Numbers in text
    fields become their text ("42": arithmetic answers), so pyarrow sees one type per column.
    """
    found = list(dict.fromkeys(k for r in rows for k in r if isinstance(k, str)))
    _check_columns(src, label, found)
    required, optional = FORMAT_FIELDS[src.format]
    field_of = {src.columns.get(k, k): k for k in required + optional}
    columns = {col: [_cell(r.get(col), field_of[col], f"{label}: row {_row_number(r, n)}", col)
                     for n, r in enumerate(rows, start=1)]
               for col in found if col in field_of}
    columns[ORIGIN[1]] = [_row_number(r, n) for n, r in enumerate(rows, start=1)]  # the row an editor shows
    return Dataset.from_dict(columns)


def _cell(value: Any, field_name: str, where: str, column: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if field_name == "messages":  # kept as JSON text; _messages checks the structure per row
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    kind = {dict: "a mapping", list: "a list", bool: "true/false"}.get(type(value), type(value).__name__)
    shown = json.dumps(value, ensure_ascii=False, default=str)
    raise ArzanError(f"{where}: column '{column}' must be text, got {kind} ({shown:.40})")


def _normalise(ds: Dataset, src: DataSource, label: str, system_prompt: str | None) -> Dataset:
    required, optional = FORMAT_FIELDS[src.format]
    rename = {col: key for key, col in src.columns.items()}
    _check_columns(src, label, [c for c in ds.column_names if c != ORIGIN[1]])
    ds = ds.rename_columns({c: k for c, k in rename.items() if c in ds.column_names})
    keep = [k for k in required + optional + [ORIGIN[1]] if k in ds.column_names]  # a local file's row numbers
    ds = ds.select_columns(keep)

    # one column set for every format, so sources of different formats mix in one dataset
    empty: dict[str, str | None] = {"text": None, "messages": None, "prompt": None, "completion": None}

    def to_row(row: dict[str, Any], idx: int) -> dict[str, Any]:
        where = f"{label}: row {row.get(ORIGIN[1]) or idx + 1}"
        if src.format == "text":
            return {**empty, "text": _text(row["text"], where, "text")}
        if src.format == "prompt_completion":
            return {**empty, "prompt": _text(row["prompt"], where, "prompt"),
                    "completion": _text(row["completion"], where, "completion")}
        if src.format == "alpaca":
            user = _text(row["instruction"], where, "instruction")
            if row.get("input") is not None and str(row["input"]).strip():
                user = f"{user}\n\n{_text(row['input'], where, 'input')}"
            msgs = [{"role": "user", "content": user},
                    {"role": "assistant", "content": _text(row["output"], where, "output")}]
            sys_text = (_text(row["system"], where, "system") if row.get("system") is not None
                        and str(row["system"]).strip() else None) or system_prompt
        else:
            msgs = _messages(row["messages"], where)
            sys_text = system_prompt if msgs[0]["role"] != "system" else None
        if sys_text:
            msgs = [{"role": "system", "content": sys_text}, *msgs]
        return {**empty, "messages": json.dumps(msgs, ensure_ascii=False)}

    def with_origin(row: dict[str, Any], idx: int) -> dict[str, Any]:
        return {**to_row(row, idx), ORIGIN[0]: label, ORIGIN[1]: row.get(ORIGIN[1]) or idx + 1}

    with quiet_progress():  # rows checked, not tokenized: quick, and one bar per source is noise
        return ds.map(with_origin, with_indices=True, remove_columns=ds.column_names)


def _text(value: Any, where: str, name: str) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool) and value == value:
        value = str(value)  # a hub column of numbers: the answer "42" is text to a language model
    if not isinstance(value, str) or not value.strip():
        raise ArzanError(f"{where}: '{name}' must be non-empty text (got {value!r:.40})")
    return value


def _messages(value: Any, where: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ArzanError(f"{where}: 'messages' is not a list of {{role, content}}") from None
    if not isinstance(value, list) or not value:
        raise ArzanError(f"{where}: 'messages' must be a non-empty list of {{role, content}}")
    out = []
    for m in value:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, int | float) and not isinstance(content, bool):
            content = str(content)
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(content, str):
            raise ArzanError(f"{where}: each message needs role (system/user/assistant) and content text")
        out.append({"role": m["role"], "content": content})
    if not any(m["role"] == "assistant" for m in out):
        raise ArzanError(f"{where}: no assistant message to learn from")
    if next(m["role"] for m in out if m["role"] != "system") == "assistant":
        raise ArzanError(f"{where}: the conversation starts with an assistant message; an answer needs a user "
                         "message before it")
    return out


def _sample(ds: Dataset, sample: float | None, seed: int, label: str, resumed: bool = False,
            field: str = "sample") -> Dataset:
    """A fraction, or a number of rows; more rows than there are is refused, not quietly all of them,
    since a mix given in rows per source would then not be the mix asked for. A resume takes all of
    them, as the arzan before this check did for the session it continues."""
    if sample is None or sample == 1:
        return ds
    n = int(sample) if sample > 1 else max(1, round(len(ds) * sample))
    if n > len(ds) and not resumed:
        raise ArzanError(f"{field}: {n} rows asked of {label}, which has {len(ds)}; ask for at most {len(ds)}, "
                         "or a fraction (1 = all of them)")
    return ds.shuffle(seed=seed).select(range(min(n, len(ds))))


def load_sources(sources: list[DataSource], section: DataSection, base_dir: Path,
                 resumed: bool = False) -> tuple[Dataset, list[SourceInfo]]:
    """Read every source, rename its columns, sample it, and mix them into one normalised set."""
    parts, infos = [], []
    for i, src in enumerate(sources):
        raw, label, digest = _load_source(src, base_dir)
        if len(raw) == 0:
            raise ArzanError(f"{label}: the dataset is empty")
        norm = _sample(_normalise(raw, src, label, section.system_prompt), src.sample, section.seed, label, resumed,
                       field=f"data.sources[{i}].sample")
        parts.append(norm)
        infos.append(SourceInfo(label, src.format, len(raw), len(norm), digest, src.license))
    mixed = concatenate_datasets(parts) if len(parts) > 1 else parts[0]
    return mixed.shuffle(seed=section.seed) if len(parts) > 1 else mixed, infos


def training_chat_template(tokenizer: Any) -> str | None:
    """The template to tokenize with: TRL's own with generation markers where it has one."""
    from trl.chat_template_utils import (
        get_training_chat_template,
        has_generation_markers,
    )

    if not tokenizer.chat_template:
        raise ArzanError("the tokenizer has no chat template; use data format 'text' or 'prompt_completion', "
                         "or an instruct model")
    if has_generation_markers(tokenizer.chat_template):
        return tokenizer.chat_template
    try:
        return get_training_chat_template(tokenizer)
    except ValueError:
        return None  # e.g. Llama-3.1's template: TRL 1.14 has no patch, so masks come from prefixes


def _assistant_mask_by_prefix(tokenizer: Any, msgs: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """Mask from rendered prefixes: what messages[:i+1] adds after messages[:i]'s generation prompt.

    Works for any template that renders a conversation as a growing prefix (Llama 3.x, Mistral,
    ChatML); the end-of-turn token lands inside the span, so the model learns to stop.
    """
    full = tokenizer.apply_chat_template(msgs, tokenize=False)
    spans = []
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        start = tokenizer.apply_chat_template(msgs[:i], tokenize=False, add_generation_prompt=True)
        end = tokenizer.apply_chat_template(msgs[: i + 1], tokenize=False)
        if not (full.startswith(start) and full.startswith(end)):
            raise ArzanError("the chat template does not render conversations as growing prefixes, so assistant "
                             "tokens cannot be located; set data.assistant_only_loss: false")
        spans.append((len(start), len(end)))
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    mask = [int(any(a < e and b > s for s, e in spans)) for a, b in enc["offset_mapping"]]
    return enc["input_ids"], mask


def _tokenize_row(row: dict[str, Any], tokenizer: Any, template: str | None, assistant_only: bool) -> dict[str, Any]:
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    if row["text"] is not None:
        ids = tokenizer(row["text"], add_special_tokens=True)["input_ids"] + eos
        return {"input_ids": ids, "assistant_masks": [1] * len(ids)}
    if row["prompt"] is not None:
        p = tokenizer(row["prompt"], add_special_tokens=True)["input_ids"]
        c = tokenizer(row["completion"], add_special_tokens=False)["input_ids"] + eos
        return {"input_ids": p + c, "assistant_masks": [0 if assistant_only else 1] * len(p) + [1] * len(c)}
    msgs = json.loads(row["messages"])
    if template is not None:
        out = tokenizer.apply_chat_template(msgs, tokenize=True, return_dict=True, chat_template=template,
                                            return_assistant_tokens_mask=True)
        ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
    else:
        ids, mask = _assistant_mask_by_prefix(tokenizer, msgs)
    return {"input_ids": ids, "assistant_masks": mask if assistant_only else [1] * len(ids)}


def tokenize(ds: Dataset, tokenizer: Any, section: DataSection, max_length: int,
             label: str = "data") -> tuple[Dataset, Truncation]:
    """Tokenize, truncate to max_length (keep start, as TRL does) and drop rows left with no target;
    says how many rows that dropped or cut short."""
    needs_template = any(m is not None for m in ds["messages"])
    template = training_chat_template(tokenizer) if needs_template else None
    out = ds.map(_tokenize_row, fn_kwargs={"tokenizer": tokenizer, "template": template,
                                           "assistant_only": section.assistant_only_loss},
                 remove_columns=[c for c in ds.column_names if c not in ORIGIN], desc=f"Tokenizing {label}")
    # a row cut short: an answer token past the window (its last assistant token is beyond max_length)
    with quiet_progress():  # the tokenizing bar above is the one worth watching
        out = out.map(lambda r: {"input_ids": r["input_ids"][:max_length],
                                 "assistant_masks": r["assistant_masks"][:max_length],
                                 "_cut": any(r["assistant_masks"][max_length:]),
                                 "_empty": not any(r["assistant_masks"]),
                                 "_lost": not any(r["assistant_masks"][:max_length])})
        kept = out.filter(lambda r: not r["_lost"])
    if len(kept) == 0:
        raise ArzanError(f"{label}: every label is masked: no assistant tokens survive in any row "
                         f"(max_length {max_length} may cut every answer, or the chat template hides them)")
    cut, empty, lost = kept["_cut"], out["_empty"], out["_lost"]
    dropped = [x and not e for x, e in zip(lost, empty, strict=True)]
    truncation = Truncation(len(out), sum(dropped), sum(cut), max_length, sum(empty),
                            _first(out, dropped), _first(kept, cut), _first(out, empty))
    return kept.remove_columns(["_cut", "_empty", "_lost", *(c for c in ORIGIN if c in kept.column_names)]), truncation


def _first(ds: Dataset, picked: list[bool]) -> list[list]:
    """[source, row] of the first Truncation.EXAMPLES picked rows, in source order."""
    if not any(picked) or ORIGIN[0] not in ds.column_names:
        return []
    where = sorted((s, r) for s, r, p in zip(ds[ORIGIN[0]], ds[ORIGIN[1]], picked, strict=True) if p)
    return [list(w) for w in where[:Truncation.EXAMPLES]]


def count_tokens(ds: Dataset) -> tuple[int, int]:
    """(tokens seen, tokens trained on) for one pass over a tokenized set."""
    seen = sum(len(x) for x in ds["input_ids"])
    trained = sum(sum(m) for m in ds["assistant_masks"])
    return seen, trained


@dataclass
class RawData:
    """Rows checked and mixed but not tokenized: bad data fails here, before a model is downloaded."""

    train: Dataset
    eval: Dataset | None
    sources: list[SourceInfo]


def load_data(section: DataSection, base_dir: Path, resumed: bool = False) -> RawData:
    train_raw, infos = load_sources(section.sources, section, base_dir, resumed)
    eval_raw = None
    if section.eval_sources:
        eval_raw, eval_infos = load_sources(section.eval_sources, section, base_dir, resumed)
        infos += eval_infos
    elif section.eval_fraction > 0:
        n_eval = math.ceil(len(train_raw) * section.eval_fraction)  # how datasets rounds the test split
        if len(train_raw) < 2 or n_eval >= len(train_raw):
            raise ArzanError(f"data.eval_fraction: {section.eval_fraction:g} of {len(train_raw)} rows leaves "
                             "nothing to train on; lower it or add data")
        split = train_raw.train_test_split(test_size=section.eval_fraction, seed=section.seed)
        train_raw, eval_raw = split["train"], split["test"]
    return RawData(train_raw, eval_raw, infos)


def tokenize_data(raw: RawData, tokenizer: Any, section: DataSection, max_length: int) -> PreparedData:
    train, cut = tokenize(raw.train, tokenizer, section, max_length, "train data")
    truncation = {"train": cut}
    evals = None
    if raw.eval is not None:
        evals, truncation["eval"] = tokenize(raw.eval, tokenizer, section, max_length, "eval data")
    return PreparedData(train, evals, raw.sources, truncation)


def prepare_data(section: DataSection, tokenizer: Any, max_length: int, base_dir: Path) -> PreparedData:
    """Exactly what the trainer trains on; `arzan estimate` counts tokens through the same call."""
    return tokenize_data(load_data(section, base_dir), tokenizer, section, max_length)
