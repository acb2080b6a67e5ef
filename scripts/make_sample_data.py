"""Generate arzan's shipped Kazakh sample data (alpaca JSONL).

    python scripts/make_sample_data.py            # rewrites src/arzan/resources/sample/kk_arith.jsonl
    python scripts/make_sample_data.py --out x.jsonl

The tasks are ones a tiny random-weight model can pick up in a minute on a CPU (number words
and digits, small sums, comparisons, the order of weekdays and months), so the offline demo
shows a loss that falls and answers that change. Output is deterministic (fixed seed, no
dependence on dict or set order), and tests check the committed file is reproduced byte for byte.
Kazakh suffixes are listed word by word rather than computed, so each form can be checked by eye.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

SEED = 20261123
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "src/arzan/resources/sample/kk_arith.jsonl"

ONES = ["", "бір", "екі", "үш", "төрт", "бес", "алты", "жеті", "сегіз", "тоғыз"]
TENS = ["", "он", "жиырма", "отыз", "қырық", "елу", "алпыс", "жетпіс", "сексен", "тоқсан"]

# Genitive ("of N") of the last word of a number: -ның/-нің after vowels and м, н, ң;
# -дың/-дің after л, р, у, з; -тың/-тің after voiceless consonants.
GENITIVE = {
    "нөл": "нөлдің", "бір": "бірдің", "екі": "екінің", "үш": "үштің", "төрт": "төрттің",
    "бес": "бестің", "алты": "алтының", "жеті": "жетінің", "сегіз": "сегіздің",
    "тоғыз": "тоғыздың", "он": "онның", "жиырма": "жиырманың", "отыз": "отыздың",
    "қырық": "қырықтың", "елу": "елудің", "алпыс": "алпыстың", "жетпіс": "жетпістің",
    "сексен": "сексеннің", "тоқсан": "тоқсанның", "жүз": "жүздің",
}
# The conjunction "and" after a word: мен after vowels and sonorants, бен after з/ж, пен after
# voiceless consonants ("жеті мен бес", "сегіз бен бір", "бес пен үш").
AND = {
    "нөл": "мен", "бір": "мен", "екі": "мен", "үш": "пен", "төрт": "пен", "бес": "пен",
    "алты": "мен", "жеті": "мен", "сегіз": "бен", "тоғыз": "бен", "он": "мен",
    "жиырма": "мен", "отыз": "бен", "қырық": "пен", "елу": "мен", "алпыс": "пен",
    "жетпіс": "пен", "сексен": "мен", "тоқсан": "мен", "жүз": "бен",
}
ORDINALS = ["бірінші", "екінші", "үшінші", "төртінші", "бесінші", "алтыншы", "жетінші",
            "сегізінші", "тоғызыншы", "оныншы", "он бірінші", "он екінші"]
# (name, ablative "from/after the day")
DAYS = [("дүйсенбі", "дүйсенбіден"), ("сейсенбі", "сейсенбіден"), ("сәрсенбі", "сәрсенбіден"),
        ("бейсенбі", "бейсенбіден"), ("жұма", "жұмадан"), ("сенбі", "сенбіден"),
        ("жексенбі", "жексенбіден")]
MONTHS = [("қаңтар", "қаңтардан"), ("ақпан", "ақпаннан"), ("наурыз", "наурыздан"),
          ("сәуір", "сәуірден"), ("мамыр", "мамырдан"), ("маусым", "маусымнан"),
          ("шілде", "шілдеден"), ("тамыз", "тамыздан"), ("қыркүйек", "қыркүйектен"),
          ("қазан", "қазаннан"), ("қараша", "қарашадан"), ("желтоқсан", "желтоқсаннан")]


def words(n: int) -> str:
    """Kazakh cardinal for 0..999: 42 -> "қырық екі", 123 -> "жүз жиырма үш"."""
    if not 0 <= n <= 999:
        raise ValueError(n)
    if n == 0:
        return "нөл"
    hundreds, rest = divmod(n, 100)
    tens, ones = divmod(rest, 10)
    parts = ([ONES[hundreds]] if hundreds > 1 else []) + (["жүз"] if hundreds else [])
    parts += [TENS[tens]] if tens else []
    parts += [ONES[ones]] if ones else []
    return " ".join(parts)


def genitive(n: int) -> str:
    *head, last = words(n).split()
    return " ".join(head + [GENITIVE[last]])


def conj(n: int) -> str:
    return f"{words(n)} {AND[words(n).split()[-1]]}"


def cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def build(seed: int = SEED) -> list[dict]:
    rng = random.Random(seed)
    # the demo prompts the docs and the smoke recipe show, always present whatever the draws
    pairs: list[tuple[str, str]] = [
        ("Мына санды цифрмен жаз: қырық екі", "42"),
        ("Мына санды сөзбен жаз: 42", "қырық екі"),
        (f"{cap(conj(7))} {genitive(5)} қосындысы қанша?", "12"),
    ]
    # words -> digits: every number to 100, and a sample of hundreds
    to_digits = ["Мына санды цифрмен жаз: {w}", "Цифрмен жаз: {w}"]
    for n in list(range(101)) + rng.sample(range(101, 1000), 50):
        pairs.append((rng.choice(to_digits).format(w=words(n)), str(n)))
    # digits -> words
    to_words = ["{n} санын сөзбен жаз.", "Мына санды сөзбен жаз: {n}"]
    for n in rng.sample(range(0, 101), 70) + rng.sample(range(101, 1000), 50):
        pairs.append((rng.choice(to_words).format(n=n), words(n)))
    # sums in words and in digits
    for _ in range(80):
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        pairs.append((cap(f"{conj(a)} {genitive(b)} қосындысы қанша?"), str(a + b)))
    for _ in range(60):
        a, b = rng.randint(1, 50), rng.randint(1, 50)
        pairs.append((f"{a} + {b} неге тең?", str(a + b)))
    # which is larger / smaller
    for _ in range(60):
        a, b = rng.sample(range(0, 100), 2)
        which, pick = rng.choice([("үлкен", max), ("кіші", min)])
        if rng.random() < 0.5:
            pairs.append((f"Қай сан {which}: {a} әлде {b}?", str(pick(a, b))))
        else:
            pairs.append((f"Қайсысы {which}: {words(a)} әлде {words(b)}?", cap(words(pick(a, b)))))
    # weekdays and months: order, ordinal, position
    for items, unit, its, whole in ((DAYS, "күн", "күні", "аптаның"), (MONTHS, "ай", "айы", "жылдың")):
        k = len(items)
        for i, (name, abl) in enumerate(items):
            pairs.append((f"{cap(abl)} кейін қай {unit} келеді?", cap(items[(i + 1) % k][0])))
            pairs.append((f"{cap(abl)} бұрын қай {unit} болады?", cap(items[(i - 1) % k][0])))
            pairs.append((f"{cap(whole)} {ORDINALS[i]} {its} қандай?", cap(name)))
            pairs.append((f"{cap(name)} — {whole} нешінші {its}?", str(i + 1)))
    pairs += [("Аптада неше күн бар?", "7"), ("Жылда неше ай бар?", "12")]

    seen, rows = set(), []
    for instruction, output in pairs:
        if instruction not in seen:  # a repeated question keeps its first answer
            seen.add(instruction)
            rows.append({"instruction": instruction, "input": "", "output": output})
    rng.shuffle(rows)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()
    rows = build()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    args.out.write_bytes(text.encode("utf-8"))
    print(f"wrote {len(rows)} rows to {args.out}")


if __name__ == "__main__":
    main()
