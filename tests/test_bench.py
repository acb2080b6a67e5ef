"""bench/throughput.py: the table it derives, the GPU path's parts that a CPU can run, its results."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

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
    out = bench.random_model(tmp_path / "m", {**cfg, **bench.LLAMA3_ARCH}, device="cpu", dtype="float32")
    model = AutoModelForCausalLM.from_pretrained(out)
    assert sum(p.numel() for p in model.parameters()) == ModelShape.from_config(cfg).total_params
    saved = json.loads((out / "config.json").read_text())  # the published Llama 3 rope and norm settings
    assert saved["rope_parameters"]["rope_type"] == "llama3" and saved["rope_parameters"]["rope_theta"] == 500000
    assert saved["rms_norm_eps"] == 1e-5
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


def test_gpu_mode_options_model_results_and_configs(bench):
    """--model picks a shipped architecture (8B by default, issue 4's benchmark), --results is where the
    JSON goes (on the lent machine: $OUT, the only folder that comes back)."""
    p = bench.build_parser()
    a = p.parse_args(["--mode", "gpu", "--model", "Llama-3.2-1B", "--results", "/tmp/x", "--time-limit", "480"])
    assert (a.model, a.out, a.time_limit) == ("Llama-3.2-1B", "/tmp/x", 480.0)
    assert p.parse_args(["--mode", "gpu"]).model == "Llama-3.1-8B"
    assert p.parse_args(["--out", "/tmp/y"]).out == "/tmp/y"  # the old spelling still works
    with pytest.raises(SystemExit):
        p.parse_args(["--mode", "gpu", "--model", "Llama-2-7B"])
    models = bench.raw_table()["models"]
    for m in bench.GPU_MODELS:  # each one is built from throughput.yaml's config, into its own folder
        assert m in models and bench.model_label(m) == m.lower()
    assert len({bench.model_label(m) for m in bench.GPU_MODELS}) == len(bench.GPU_MODELS)
    with pytest.raises(SystemExit, match="unknown"):
        bench.main(["--mode", "gpu", "--configs", "hf-lora,unsloth-lorra"])


def test_gpu_child_imports_unsloth_before_trl_transformers_peft(bench, tmp_path):
    """A child running an unsloth config on CUDA imports unsloth first, before recipe validation
    (trl) and training (transformers, peft) could; an hf child never imports it. A stand-in unsloth
    module records what was already imported when it was; CUDA is faked (this box has none)."""
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "unsloth.py").write_text(
        "import sys\nBEFORE = sorted(m for m in ('trl', 'transformers', 'peft') if m in sys.modules)\n")
    script = f"""
import importlib.util, json, sys
import torch
torch.cuda.is_available = lambda: True
spec = importlib.util.spec_from_file_location("b", {str(REPO / "bench" / "throughput.py")!r})
b = importlib.util.module_from_spec(spec); spec.loader.exec_module(b)
info = b.unsloth_first(sys.argv[1].split(","))
from pathlib import Path
b.gpu_recipe(Path("m"), Path("d.jsonl"), "unsloth", False, 4, Path("o"))  # validation imports trl
import trl, transformers, peft, unsloth
print(json.dumps({{"info": info, "before": unsloth.BEFORE}}))
"""
    env = {**os.environ, "PYTHONPATH": f"{fake}:{REPO / 'src'}"}

    def child(configs):
        r = subprocess.run([sys.executable, "-c", script, configs], capture_output=True, text=True, env=env,
                           cwd=tmp_path, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        return json.loads(r.stdout.strip().splitlines()[-1])

    un = child("unsloth-lora")
    assert un["info"]["imported"] is True and un["info"]["already_imported_before"] == []
    assert un["before"] == []  # nothing of trl/transformers/peft was loaded when unsloth was imported
    hf = child("hf-lora")
    assert hf["info"] == {"wanted": False}
    assert hf["before"] == ["peft", "transformers", "trl"]  # the order an unpatched run would have had


def test_children_that_fail_or_run_out_of_time_still_leave_a_result(bench, tmp_path):
    """The parent's time limit stops a config that would pass it and records it (with the ledger its run
    folder holds); a config with no time left is skipped; a child that writes its own result keeps it."""
    work, out = tmp_path / "work", tmp_path / "out"
    run = work / "run-tiny-hf-qlora-1"
    run.mkdir(parents=True)
    (run / "cost.json").write_text(json.dumps({"status": "running", "tokens": {"seen": 10}}))
    (run / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 9.5}) + "\n")
    ok_doc = json.dumps({"backend": "hf", "method": "lora"})
    info = {"cpu": "test"}

    def child(name):
        if name == "hf-lora":  # writes its own result, like gpu_runs does
            code = f"import pathlib; pathlib.Path({str(out / 'cpu-tiny-hf-lora.json')!r}).write_text({ok_doc!r})"
        elif name == "unsloth-lora":
            code = "import sys; sys.exit(3)"
        else:
            code = "import time; time.sleep(60)"
        return [sys.executable, "-c", code]

    out.mkdir()
    paths = bench.run_children(["hf-lora", "unsloth-lora", "hf-qlora"], child, out, work, "tiny", 8, info, "t",
                               min_start_s=1)
    docs = {p.name: json.loads(p.read_text()) for p in paths}
    assert docs["cpu-tiny-hf-lora.json"] == json.loads(ok_doc)
    assert docs["cpu-tiny-unsloth-lora.json"]["error"] == "child exited with 3"
    slow = docs["cpu-tiny-hf-qlora.json"]
    assert slow["error"].startswith("timed out") and slow["ledger"]["tokens"]["seen"] == 10
    assert slow["losses"] == [[1, 9.5]]
    [skipped] = bench.run_children(["unsloth-qlora"], child, out, work, "tiny", 0.5, info, "t", min_start_s=1)
    assert json.loads(skipped.read_text())["error"].startswith("skipped")


def test_unsloth_vs_hf_summary_pairs_the_backends(bench, tmp_path):
    def doc(backend, tps, loss):
        return {"backend": backend, "method": "lora", "model": "Llama-3.2-1B", "device": {}, "versions": {},
                "command": "c", "date": "d", "steps": 3, "seen_tokens_per_s": tps * 2, "trained_tokens_per_s": tps,
                "peak_memory_gb": 10.0, "loss": {"final": loss, "per_step": [[1, 12.0], [3, loss]]},
                "price": {"kzt_per_1m_trained": 1e6 / tps}, "unsloth_import": {"already_imported_before": []},
                "entry": {"measured": {"result": f"bench/results/h200-llama-3.2-1b-{backend}-lora.json"}}}

    paths = []
    for name, d in [("hf", doc("hf", 1000.0, 11.0)), ("unsloth", doc("unsloth", 2500.0, 11.1)),
                    ("bad", {"error": "x", "config": "hf-qlora"})]:
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(d))
    s = json.loads(bench.compare(paths, tmp_path, "h200-llama-3.2-1b").read_text())
    lora = s["by_method"]["lora"]
    assert lora["speedup_trained_tokens_per_s"] == pytest.approx(2.5) and "qlora" not in s["by_method"]
    assert lora["final_loss"] == {"hf": 11.0, "unsloth": 11.1} and lora["unsloth_imported_first"] is True
    assert bench.compare(paths[:1], tmp_path, "x") is None  # one backend alone: nothing to compare


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
    assert e["id"] == "cpu-lora-hf-tiny"  # not the reference model: --record adds it, replaces nothing
    assert doc["run"]["padding"] == 1.0 and doc["run"]["steps"] == 4
    assert entry_from_dict(e, {}).shape.total_params == ModelShape.from_config(cfg).total_params
    # loss and the whole ledger come back in the result (the run folder stays in the work dir)
    run = Path(doc["run"]["run_dir"])
    assert doc["ledger"] == json.loads((run / "cost.json").read_text())
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    assert doc["loss"]["per_step"] == [[r["step"], r["loss"]] for r in rows if r.get("loss") is not None]
    assert len(doc["loss"]["per_step"]) == 4  # logging_steps 1
    assert doc["loss"]["final"] == doc["ledger"]["summary"]["final_loss"] is not None
    assert doc["peak_memory_gb"] > 0 and doc["ledger"]["tokens"]["seen"] == doc["run"]["tokens"]["seen"]


def test_the_matmul_rate_is_measured_as_a_rate(bench):
    """The peak a GPU result records beside the table's; on a CPU, float32 at a small size: a finite
    positive rate in TFLOP/s (a 2-core box does well under 10)."""
    import math

    rate = bench.matmul_tflops("cpu", n=256, repeats=4)
    assert math.isfinite(rate) and 0 < rate < 10
