"""Loads and checks the data behind arzan's Kazakh lm-eval tasks.

Why a loader instead of lm-eval's `dataset_path`: the same task has to run from a Hub id for real
users and from a local file offline (tests, air-gapped machines, the shared copies under
../shared/data). Real files also carry byte-order marks, answers as Cyrillic letters or as
1-based strings, and the odd broken row; each of those must stop the run with the file and the
row named, before an 8B model is loaded, not surface as a KeyError deep inside lm-eval.

The task YAMLs point `custom_dataset` here. lm-eval calls `load(**metadata, **dataset_kwargs)`,
so the data folder arrives as `arzan_data_dir` (TaskManager metadata) and the task's own
`dataset_kwargs` say which file and which Hub dataset it is.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

from arzan.errors import ArzanError, first_line
from arzan.evaluation.schemas import SCHEMAS

DATA_DIR_ENV = "ARZAN_KK_EVAL_DIR"


def read_rows(path: str | os.PathLike) -> list[tuple[int, dict]]:
    """(line or row number, record) pairs from a .jsonl/.json/.csv file; BOM tolerated."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ArzanError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ArzanError(f"{path}: cannot read as UTF-8 text ({e})") from None
    suffix = path.suffix.lower()
    if suffix == ".csv":  # a quoted field may hold newlines: the csv module splits records, not lines
        reader, rows, start = csv.DictReader(io.StringIO(text, newline="")), [], 2
        try:
            for row in reader:
                rows.append((start, row))  # numbered by the line the record starts on
                start = reader.line_num + 1
        except csv.Error as e:
            raise ArzanError(f"{path}: row {start}: not valid CSV ({e})") from None
        return rows
    if suffix == ".json" and text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ArzanError(f"{path}: not valid JSON ({e})") from None
        return list(enumerate(data, start=1))
    if suffix not in (".jsonl", ".json"):
        raise ArzanError(f"{path}: unsupported file type {suffix!r}; use .jsonl, .json or .csv")
    rows = []
    for n, line in enumerate(text.split("\n"), start=1):  # not splitlines: U+2028 may sit inside a string
        line = line.removesuffix("\r")
        if line.strip():
            try:
                rows.append((n, json.loads(line)))
            except json.JSONDecodeError as e:
                raise ArzanError(f"{path}: line {n}: not valid JSON ({e.msg} at column {e.colno})") from None
    return rows


def convert(schema: str, rows: list[tuple[int, Any]], where: str, unit: str = "line") -> list[dict]:
    """Checks every row against `schema` and returns the rows with the fields the YAML needs."""
    if schema not in SCHEMAS:
        raise ArzanError(f"{where}: unknown schema {schema!r}; known: {', '.join(SCHEMAS)}")
    required, conv = SCHEMAS[schema]
    if not rows:
        raise ArzanError(f"{where}: no rows")
    out = []
    for n, row in rows:
        if not isinstance(row, dict):
            raise ArzanError(f"{where}: {unit} {n}: expected a JSON object, got {type(row).__name__}")
        missing = [c for c in required if c not in row]
        if missing:
            raise ArzanError(f"{where}: {unit} {n}: missing column(s) {', '.join(map(repr, missing))} "
                             f"(schema {schema!r} needs {', '.join(required)})")
        try:
            out.append({**{k: _plain(v) for k, v in row.items()}, **conv(row)})
        except ValueError as e:
            raise ArzanError(f"{where}: {unit} {n}: {e}") from None
    return out


def _plain(v: Any) -> Any:
    """Raw columns pass through as text: one row's `4` and the next's `"қала"` would stop Arrow."""
    return v if v is None or isinstance(v, (str, list, dict)) else str(v)


def _dataset(docs: list[dict], where: str) -> Any:
    import datasets
    import pyarrow as pa

    try:
        return datasets.Dataset.from_list(docs)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError) as e:
        raise ArzanError(f"{where}: the rows do not form one table ({first_line(e)}); "
                         "give each column one type in every row") from None


def validate_file(path: str | os.PathLike, schema: str = "mc") -> int:
    """Reads and checks a local file the way the task will; returns the number of rows."""
    unit = "row" if Path(path).suffix.lower() == ".csv" else "line"
    docs = convert(schema, read_rows(path), str(path), unit)
    _dataset(docs, str(path))  # what the task will build from it
    return len(docs)


def local_path(local_file: str | None, data_dir: str | os.PathLike | None,
               config_source: str | None = None) -> Path | None:
    """Where a task's local file is, if anywhere: absolute, next to a user's YAML, or in the data dir."""
    if not local_file:
        return None
    p = Path(local_file).expanduser()
    if p.is_absolute():
        return p
    if config_source and (Path(config_source).parent / p).is_file():  # load() resolves suites.shallow's links
        return Path(config_source).parent / p
    data_dir = data_dir or os.environ.get(DATA_DIR_ENV)
    if data_dir and (Path(data_dir) / p).is_file():
        return Path(data_dir) / p
    return None


def _found_below(local_file: str | None, data_dir: str | None) -> Path | None:
    """--data-dir ../shared/data when the file is in ../shared/data/kazakh-eval: say so."""
    if not local_file or not data_dir or not Path(data_dir).is_dir():
        return None
    return next((p.parent for p in sorted(Path(data_dir).glob(f"*/{local_file}"))), None)


def load(schema: str, local_file: str | None = None, hub_path: str | None = None,
         hub_name: str | None = None, hub_data_files: str | None = None, hub_split: str = "test",
         hub_configs_matching: str | None = None, arzan_data_dir: str | None = None,
         config_source: str | None = None, **_: Any):
    """lm-eval's `custom_dataset` hook: a DatasetDict with one `test` split, local file first."""
    import datasets

    if config_source and config_source != "inline":  # the user's file, not the link suites.shallow made
        config_source = str(Path(config_source).resolve())
    path = local_path(local_file, arzan_data_dir, config_source)
    if path is not None:
        unit = "row" if path.suffix.lower() == ".csv" else "line"
        docs = convert(schema, read_rows(path), str(path), unit)
    elif hub_path:
        try:
            if hub_configs_matching:  # e.g. KazMMLU: one config per subject, Kazakh ones end "in kaz)"
                found = datasets.get_dataset_config_names(hub_path)
                names = [c for c in found if hub_configs_matching in c]
                if not names:  # renamed subsets would otherwise score zero items after the model loaded
                    shown = ", ".join(found[:5]) + (", ..." if len(found) > 5 else "")
                    raise ArzanError(f"{config_source or 'task'}: no subset of hub:{hub_path} has "
                                     f"{hub_configs_matching!r} in its name (it has {shown or 'none'})")
                parts = [(c, datasets.load_dataset(hub_path, c, split=hub_split)) for c in names]
            else:
                kw = {"data_files": hub_data_files} if hub_data_files else {}
                split = "train" if hub_data_files else hub_split
                parts = [(hub_name, datasets.load_dataset(hub_path, hub_name, split=split, **kw))]
        except ArzanError:
            raise
        except Exception as e:  # offline, gated, renamed: the hub raises many types
            first = first_line(e)
            below = _found_below(local_file, arzan_data_dir)
            raise ArzanError(f"{config_source or 'task'}: cannot load hub:{hub_path} ({type(e).__name__}: "
                             f"{first}); offline or gated? put {local_file or 'its file'} in the folder given "
                             f"by --data-dir (or {DATA_DIR_ENV})" + (f"; it is in {below}: give that folder" if below
                                                                      else "")) from None
        docs = []
        for name, ds in parts:
            where = f"hub:{hub_path}" + (f"[{name}]" if name else "")
            docs += [{**d, "subject": name} if hub_configs_matching else d
                     for d in convert(schema, list(enumerate(ds, start=1)), where, "row")]
    else:
        raise ArzanError(f"{config_source or 'task'}: {local_file!r} not found (looked in "
                         f"{arzan_data_dir or os.environ.get(DATA_DIR_ENV) or 'no data dir'}) "
                         "and the task names no Hub dataset")
    return datasets.DatasetDict({"test": _dataset(docs, str(path) if path else f"hub:{hub_path}")})
