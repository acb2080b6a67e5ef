"""The report from real CPU runs of the tiny model, one of them interrupted, equals their ledgers."""

from __future__ import annotations

import json
import os
import signal

import pytest
from transformers import TrainerCallback

from arzan.report import build_report
from arzan.train import train_from_recipe
from tests.conftest import REPO, SHARED_DATA
from tests.test_report import parse, shown

SHORT = ["train.max_steps=24", "train.logging_steps=4", "train.save_steps=100", "train.eval_steps=12"]


class SigtermAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.fixture(scope="module")
def real_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("real-runs")
    smoke = REPO / "recipes" / "smoke.yaml"
    a = train_from_recipe(smoke, [*SHORT, "name=kk-t4"], out=root / "kk-t4", cost_overrides={"gpu": "T4"})
    b = train_from_recipe(smoke, [*SHORT, "name=kk-cut", "train.learning_rate=1e-3"], out=root / "kk-cut",
                          cost_overrides={"usd_per_gpu_hour": 2.0}, callbacks=[SigtermAt(8)])
    c = train_from_recipe(smoke, [*SHORT, "name=kk-l4"], out=root / "kk-l4", cost_overrides={"gpu": "L4"})
    assert (a.status, b.status, c.status) == ("finished", "interrupted", "finished")
    if SHARED_DATA.is_dir():
        from arzan.evaluation import run_eval

        run_eval(c.run_dir, tasks="kazakh_local", limit=4, data_dir=SHARED_DATA)
    return [a.run_dir, b.run_dir, c.run_dir]


def test_report_figures_equal_the_real_ledgers(real_runs, tmp_path):
    page = parse(build_report(real_runs, tmp_path / "report.html"))
    for folder in real_runs:
        led = json.loads((folder / "cost.json").read_text())
        rid = led["run_id"]
        assert float(page.cells[(rid, "kzt")]["value"]) == pytest.approx(led["money"]["kzt"], rel=1e-12)
        assert float(page.cells[(rid, "usd")]["value"]) == pytest.approx(led["money"]["usd"], rel=1e-12)
        assert shown(page.cells[(rid, "tokens")]["text"]) == led["tokens"]["trained"] > 0
        assert float(page.cells[(rid, "wall")]["value"]) == pytest.approx(sum(led["phases"].values()))
        assert float(page.cells[(rid, "gpu_hours")]["value"]) == pytest.approx(led["gpu_hours"], rel=1e-12)
        assert float(page.cells[(rid, "kzt_per_1m")]["value"]) == pytest.approx(
            led["money"]["kzt_per_1m_tokens"], rel=1e-12)
        for col, key in (("kwh", "kwh"), ("co2", "co2_kg")):
            if led["energy"][key] is None:
                assert page.cells[(rid, col)]["text"] == "—"
            else:
                assert float(page.cells[(rid, col)]["value"]) == pytest.approx(led["energy"][key], rel=1e-12)
    assert set(page.svgs) >= {"loss_vs_kzt", "throughput", "cost_by_phase"}


def test_interrupted_real_run_says_why_and_how_to_resume(real_runs, tmp_path):
    out = build_report(real_runs, tmp_path / "report.html")
    html = out.read_text(encoding="utf-8")
    led = json.loads((real_runs[1] / "cost.json").read_text())
    assert led["status"] == "interrupted" and "SIGTERM" in led["status_reason"]
    assert f"arzan train --resume {real_runs[1]}" in html
    assert "SIGTERM" in html
    assert "stopped (interrupted)" in html  # its timeline does not call it finished


def test_scores_of_a_real_eval_reach_the_report(real_runs, tmp_path):
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data/kazakh-eval is absent")
    page = parse(build_report(real_runs, tmp_path / "report.html"))
    doc = json.loads((real_runs[2] / "eval.json").read_text())
    rid = json.loads((real_runs[2] / "cost.json").read_text())["run_id"]
    assert doc["tasks"]
    for task, head in doc["tasks"].items():
        assert float(page.cells[(rid, f"score:{task}")]["value"]) == pytest.approx(head[head["metric"]], rel=1e-12)
        assert page.cells[(json.loads((real_runs[0] / "cost.json").read_text())["run_id"], f"score:{task}")][
            "text"] == "—"  # an unscored run shows no score
    assert "score_vs_kzt" in page.svgs
