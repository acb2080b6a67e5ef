"""bench/throughput.py: the table it derives, the GPU path's parts that a CPU can run, its results."""

from __future__ import annotations

import importlib.util
import json

import pytest
import yaml

from arzan.throughput import load_table
from arzan.vram import ModelShape
from tests.conftest import REPO

RESULTS = REPO / "bench" / "results"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_throughput", REPO / "bench" / "throughput.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_derived_entries_are_what_their_derivation_says(bench):
    """Nobody edits a derived number by hand: the shipped lines are exactly `--derive`'s output."""
    shipped = {e["id"]: e for e in bench.raw_table()["entries"] if e["basis"] == "derived"}
    derived = {e["id"]: e for e in bench.derive_entries()}
    assert shipped == derived


def test_every_entry_says_where_it_came_from():
    raw = yaml.safe_load((REPO / "src/arzan/resources/throughput.yaml").read_text())
    gpus = set(raw["specs"])
    for e in raw["entries"]:
        assert e["basis"] in ("measured", "derived"), e["id"]
        if e["basis"] == "derived":
            assert e["derived"] and e["measured"] is None and e["device"] in gpus
        else:
            m = e["measured"]
            assert m["device"] and m["date"] and m["command"].startswith("python bench/throughput.py")
            assert (REPO / m["result"]).is_file(), m["result"]
    for spec in raw["specs"].values():
        assert spec["source"].startswith("https://") and spec["note"]
    for anchor in raw["anchors"].values():
        assert anchor["source"].startswith("https://")
    # the catalog's GPUs all have figures for both methods and both backends
    from arzan.cost.prices import load_catalog

    have = {(e.device, e.method, e.backend) for e in load_table().entries}
    for gpu in load_catalog().gpus:
        for method in ("lora", "qlora"):
            assert {(gpu, method, "hf"), (gpu, method, "unsloth")} <= have


def test_cpu_result_is_recorded_with_versions_and_command():
    shipped = next(e for e in load_table().entries if e.device == "cpu")
    raw = next(e for e in yaml.safe_load((REPO / "src/arzan/resources/throughput.yaml").read_text())["entries"]
               if e["id"] == shipped.id)
    doc = json.loads((REPO / raw["measured"]["result"]).read_text())
    for key in ("device", "versions", "command", "date", "entry", "seen_tokens_per_s", "trained_tokens_per_s",
                "step_s", "price", "estimator_check", "runs", "overheads"):
        assert key in doc, key
    assert doc["versions"]["torch"] and doc["versions"]["trl"] and doc["repeats"] >= 3
    assert doc["command"] == raw["measured"]["command"]
    assert shipped.basis == "measured" and shipped.seen_tokens_per_s == doc["entry"]["seen_tokens_per_s"]
    assert doc["seen_tokens_per_s"]["min"] <= shipped.seen_tokens_per_s <= doc["seen_tokens_per_s"]["max"]


def test_steady_rate_leaves_out_the_first_interval(bench):
    rows = [{"step": s, "loss": 1.0, "tokens_seen": 100 * s, "tokens_trained": 10 * s,
             "elapsed_s": 5.0 + s if s > 2 else 3.0 * s} for s in (2, 4, 6, 8)]
    rows.append({"step": 8, "eval_loss": 1.0, "tokens_seen": 800, "tokens_trained": 80, "elapsed_s": 14})
    r = bench.steady_rate(rows)
    assert r["seen_tokens_per_s"] == pytest.approx(100) and r["step_s"] == pytest.approx(1.0)


def test_random_model_builder_on_a_cpu(bench, tmp_path, tiny_dir):
    """The GPU benchmark's model builder, with a tiny config: loads, and has the config's size."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
           "num_key_value_heads": 2, "vocab_size": 1000, "tie_word_embeddings": False}
    out = bench.random_model(tmp_path / "m", cfg, device="cpu", dtype="float32")
    model = AutoModelForCausalLM.from_pretrained(out)
    assert sum(p.numel() for p in model.parameters()) == ModelShape.from_config(cfg).total_params
    assert AutoTokenizer.from_pretrained(out).chat_template  # recipes can use it as is
    assert bench.random_model(out, cfg, device="cpu") == out  # a second call reuses the folder


def test_gpu_recipe_is_the_reference_workload(bench, tmp_path, tiny_tokenizer):
    data = bench.synthetic_text(tiny_tokenizer, tmp_path / "long.jsonl", rows=3, length=300)
    rows = [json.loads(x)["text"] for x in data.read_text().splitlines()]
    assert len(rows) == 3 and all(len(tiny_tokenizer(t)["input_ids"]) >= 300 for t in rows)
    ref = bench.raw_table()["derivation"]["reference"]
    for backend in ("hf", "unsloth"):
        for qlora in (False, True):
            r = bench.gpu_recipe(tmp_path / "m", data, backend, qlora, 12, tmp_path / "out", "H100")
            assert r.model.load_in_4bit is qlora and r.model.backend == backend
            assert r.train.max_length == ref["max_length"] and r.train.packing
            assert r.train.per_device_train_batch_size * r.train.gradient_accumulation_steps == 8
            assert r.lora.r == ref["lora"]["r"] and r.cost.gpu == "H100"


@pytest.mark.slow
def test_gpu_benchmark_path_runs_on_a_cpu_with_a_tiny_model(bench, tmp_path, tiny_tokenizer):
    """Everything `--mode gpu` does per configuration (random model, long packed rows, arzan's training
    path, summary, result file, table entry), on a CPU with a small config and 128-token sequences."""
    from arzan.throughput import entry_from_dict

    cfg = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
           "num_key_value_heads": 2, "vocab_size": 1000, "tie_word_embeddings": False}
    model = bench.random_model(tmp_path / "m", cfg, device="cpu", dtype="float32")
    data = bench.synthetic_text(tiny_tokenizer, tmp_path / "long.jsonl", rows=4 * 8 + 8, length=128 + 16)
    info = {k: v for k, v in bench.device_info().items() if k != "gpu"}
    [path] = bench.gpu_runs(["hf-lora"], model, data, tmp_path, 4, info, "pytest", tmp_path / "out",
                            max_length=128, label="tiny")
    doc = json.loads(path.read_text())
    assert "error" not in doc, doc.get("error")
    assert doc["seen_tokens_per_s"] > 0 and doc["trained_tokens_per_s"] > 0 and doc["versions"]["trl"]
    e = doc["entry"]
    assert e["basis"] == "measured" and e["micro_batch_tokens"] == 128 and e["context"] == 128
    assert doc["run"]["padding"] == 1.0 and doc["run"]["steps"] == 4
    assert entry_from_dict(e, {}).shape.total_params == ModelShape.from_config(cfg).total_params
