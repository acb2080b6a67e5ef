"""The dataset formats arzan's Kazakh tasks read, and the checks each row must pass.

Why one table of schemas: every source spells "the right answer" differently (a 1-based string,
a Latin or Cyrillic letter, a 0-based int) and lays options out in its own columns. Turning each
into the same `question` / `choices` / `letters` / `label` fields here keeps the task YAMLs to
prompts only, and makes every malformed row fail the same way: with the reason, before lm-eval.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable

LETTERS = "ABCDEFGH"
# Kazakh answer keys in the kz-transformers sets sometimes spell the Latin letter in Cyrillic: by
# look (А В С Е Н) or by sound (Б, Д). Never by alphabet order (А Б В Г Д = A..E), which would
# read В and Д differently; a letter that is neither (Г, Ф, ...) is an error, not a guess.
_CYRILLIC = {"А": "A", "Б": "B", "В": "B", "С": "C", "Д": "D", "Е": "E", "Н": "H"}


def _empty(v: Any) -> bool:
    return (v is None or (isinstance(v, float) and math.isnan(v))
            or (isinstance(v, str) and not v.strip()))


def _text(v: Any) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v).strip()


def _index(value: Any, n: int, base: int) -> int:
    """A 1-based ("2") or 0-based (2) index as an int in [0, n); ValueError says what was wrong."""
    if isinstance(value, bool) or _empty(value):
        raise ValueError(f"answer {value!r} is not a number")
    try:
        number = float(value) if not isinstance(value, int) else value
    except (TypeError, ValueError):
        raise ValueError(f"answer {value!r} is not a number") from None
    if isinstance(number, float) and not number.is_integer():  # "2.5" names no option: never rounded to one
        raise ValueError(f"answer {value!r} is not a whole number")
    i = int(number)
    if n < 2:  # said before the answer: "out of range for 0 choices (expected 0..-1)" helps nobody
        raise ValueError(f"needs at least 2 non-empty choices, found {n}")
    if not base <= i < n + base:
        raise ValueError(f"answer {value!r} is out of range for {n} choices "
                         f"(expected {base}..{n - 1 + base})")
    return i - base


def _letter(value: Any, n: int) -> int:
    raw = "" if _empty(value) else str(value).strip()
    raw = raw.removeprefix("answer").upper()
    key = _CYRILLIC.get(raw, raw)
    if len(key) != 1 or key not in LETTERS[:n]:
        raise ValueError(f"answer {value!r} is not one of the letters {', '.join(LETTERS[:n])}")
    return LETTERS.index(key)


def _options(row: dict, keys: list[str]) -> list[tuple[int, str]]:
    """(position among `keys`, text) of each non-empty option. Empty ones are dropped (UNT rows
    have 4 to 8 options) but keep their place, so an answer key never shifts onto a neighbour."""
    return [(i, _text(row[k])) for i, k in enumerate(keys) if k in row and not _empty(row[k])]


def _keyed(options: list[tuple[int, str]], position: int, value: Any, keys: list[str]) -> int:
    """The index among the kept options of the option the answer key names."""
    kept = [i for i, _ in options]
    if position not in kept:
        raise ValueError(f"answer {value!r} names option {keys[position]!r}, which is empty or missing")
    return kept.index(position)


def _mc(question: Any, choices: list[str], label: int, **extra: Any) -> dict:
    if len(choices) < 2:
        raise ValueError(f"needs at least 2 non-empty choices, found {len(choices)}")
    return {"question": _text(question), "choices": choices, "letters": list(LETTERS[:len(choices)]),
            "label": label, **extra}


def _lower_first(s: str) -> str:
    return s[:1].lower() + s[1:]


def _belebele(r: dict) -> dict:
    choices = [_text(r[f"mc_answer{i}"]) for i in range(1, 5)]
    return {"choices": choices, "letters": list("ABCD"),
            "label": _index(r["correct_answer_num"], 4, base=1)}


def _kkcopa(r: dict) -> dict:
    asks = _text(r["asks-for_kz"]).lower()
    if asks not in ("себебі", "әсері", "салдары"):
        raise ValueError(f"asks-for_kz {r['asks-for_kz']!r} is not 'себебі' (cause) "
                         "or 'салдары' / 'әсері' (effect)")
    return {"premise": _text(r["p_contents_kz"]).rstrip(". "),
            "connector": "себебі" if asks == "себебі" else "сондықтан",
            "choices": [_lower_first(_text(r[f"a{i}_contents_kz"])) for i in (1, 2)],
            "label": _index(r["correct_answers"], 2, base=1)}


def _user_mc(r: dict) -> dict:
    ch = r["choices"]
    if not isinstance(ch, list) or not all(isinstance(c, str) and c.strip() for c in ch):
        raise ValueError("'choices' must be a list of non-empty strings")
    if not isinstance(r["answer"], int) or isinstance(r["answer"], bool):
        raise ValueError(f"'answer' must be a 0-based integer index, got {r['answer']!r}")
    seen: dict[str, int] = {}
    for i, c in enumerate(c.strip() for c in ch):
        if c in seen:  # scored by likelihood, equal options score equal: the answer is a coin toss
            raise ValueError(f"choices {seen[c]} and {i} are the same text {c!r}; each option must differ")
        seen[c] = i
    return _mc(r["question"], [c.strip() for c in ch], _index(r["answer"], len(ch), base=0),
               context=_text(r.get("context") or ""))


def _letters_from(q: str, keys: list[str], answer: str) -> Callable[[dict], dict]:
    def conv(r: dict) -> dict:
        options = _options(r, keys)
        label = _keyed(options, _letter(r[answer], len(keys)), r[answer], keys)
        return _mc(r[q], [t for _, t in options], label)
    return conv


def _numbered(q: str, keys: list[str]) -> Callable[[dict], dict]:
    def conv(r: dict) -> dict:
        options = _options(r, keys)
        label = _keyed(options, _index(r["answer"], len(keys), base=1), r["answer"], keys)
        return _mc(r[q], [t for _, t in options], label)
    return conv


def _gsm8k(r: dict) -> dict:
    target = re.sub(r"[,\s]", "", _text(r["answer"]))
    if not re.fullmatch(r"-?\d+(\.\d+)?", target):
        raise ValueError(f"answer {r['answer']!r} is not a number")
    return {"question": _text(r["question"]), "target": re.sub(r"\.0+$", "", target)}


_OPT = [f"Option {c}" for c in "ABCDE"]
# Each schema: the columns a row must have, and a converter that adds the fields the YAMLs use
# (`question`, `choices`, `letters`, `label`, ...) and raises ValueError for a bad row.
SCHEMAS: dict[str, tuple[list[str], Callable[[dict], dict]]] = {
    "belebele": (["flores_passage", "question", "mc_answer1", "mc_answer2", "mc_answer3",
                  "mc_answer4", "correct_answer_num"], _belebele),
    "kkcopa": (["p_contents_kz", "a1_contents_kz", "a2_contents_kz", "asks-for_kz", "correct_answers"],
               _kkcopa),
    "mc": (["question", "choices", "answer"], _user_mc),
    "option_letter": (["Question", *_OPT[:4], "Correct Answer"],
                      _letters_from("Question", _OPT[:4], "Correct Answer")),
    "kazmmlu": (["Question", *_OPT[:4], "Answer Key"], _letters_from("Question", _OPT, "Answer Key")),
    "unt": (["question", "A", "B", "C", "D", "correct_answer"],
            _letters_from("question", list(LETTERS), "correct_answer")),
    "kazllm_mcq": (["question", "A", "B", "C", "D", "answer"],
                   _letters_from("question", list("ABCD"), "answer")),
    "kazllm_hellaswag": (["ctx", "option1", "option2", "option3", "option4", "answer"],
                         _numbered("ctx", [f"option{i}" for i in range(1, 5)])),
    "kazllm_winogrande": (["sentence", "option1", "option2", "answer"],
                          _numbered("sentence", ["option1", "option2"])),
    "kazllm_gsm8k": (["question", "answer"], _gsm8k),
}
