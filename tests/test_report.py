"""Reports from hand-built run folders that follow docs/architecture.md.

Three runs cover the states a report must handle: a finished run with eval scores, a spot run that
was interrupted (needs its resume command), and a run still writing its metrics (half a line).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from arzan.errors import ArzanError
from arzan.report import build_report

PHASES = ("setup", "data", "train", "eval", "save")


def make_ledger(run_id: str, status: str, *, usd_per_hour: float, gpu: str, phases: dict[str, float],
                trained: int, overhead_s: float = 0.0, gpu_count: int = 1, rate: float = 520.0,
                energy_basis: str = "measured", **extra) -> dict:
    billed = sum(phases.values()) + overhead_s
    usd = billed / 3600 * usd_per_hour * gpu_count
    kzt = usd * rate
    kwh = None if energy_basis == "unavailable" else round(billed / 3600 * 0.3 * gpu_count, 4)
    ledger = {
        "schema_version": 1, "run_id": run_id, "status": status, "status_reason": None, "resume_command": None,
        "started_at": "2026-11-20T08:00:00Z", "updated_at": "2026-11-20T09:10:00Z",
        "finished_at": "2026-11-20T09:10:00Z" if status == "finished" else None,
        "model": {"base": "Qwen/Qwen2.5-1.5B-Instruct", "method": "qlora", "backend": "unsloth",
                  "backend_version": "unsloth 2026.10.9", "trainable_params": 18_464_768,
                  "total_params": 1_562_179_072},
        "hardware": {"device": "cuda", "gpu_name": gpu, "gpu_count": gpu_count, "driver": "560.35",
                     "cuda": "12.6", "cpu": "x86_64, 12 cores", "host": "colab-vm"},
        "software": {"python": "3.11.7", "torch": "2.9.1", "transformers": "5.17.0", "peft": "0.21.2",
                     "trl": "1.14.2", "datasets": "4.8.5", "unsloth": "2026.10.9", "arzan": "0.1.0",
                     "git_commit": "4f2a9c1d"},
        "price": {"provider": "colab", "gpu": gpu, "pricing": "on-demand", "usd_per_gpu_hour": usd_per_hour,
                  "gpu_count": gpu_count, "source": "https://colab.research.google.com/signup",
                  "as_of": "2026-11-01", "overhead_s": overhead_s},
        "exchange": {"usd_kzt": rate, "source": "https://nationalbank.kz/en/exchangerates", "as_of": "2026-11-19"},
        "phases": phases, "billed_seconds": billed, "gpu_hours": billed / 3600 * gpu_count,
        "tokens": {"seen": int(trained * 1.6), "trained": trained, "per_second": 1234.5},
        "energy": {"kwh": kwh, "co2_kg": None if kwh is None else round(kwh * 0.6, 4),
                   "grid_kg_co2_per_kwh": 0.6, "basis": energy_basis,
                   "method": {"measured": "nvml", "estimated": "tdp"}.get(energy_basis, "none")},
        "money": {"usd": usd, "kzt": kzt, "usd_per_1m_tokens": usd / trained * 1e6 if trained else None,
                  "kzt_per_1m_tokens": kzt / trained * 1e6 if trained else None, "basis": "measured"},
        "budget": {"max_kzt": 5000.0, "max_usd": None, "max_hours": None, "spent_kzt": kzt,
                   "projected_kzt": None, "projected_basis": "estimated", "stop_reason": None},
        "progress": {"step": 300, "max_steps": 300, "epoch": 1.0},
        "sessions": [{"index": 0, "started_at": "2026-11-20T08:00:00Z", "finished_at": None, "status": status,
                      "phases": phases, "billed_seconds": billed, "tokens": {"seen": 0, "trained": trained},
                      "money": {"usd": usd, "kzt": kzt}, "steps": [0, 300]}],
        "summary": {"final_loss": 1.31, "eval": None, "generation_check": None},
    }
    for dotted, value in extra.items():
        node = ledger
        *parents, last = dotted.split("__")
        for key in parents:
            node = node[key]
        node[last] = value
    return ledger


def metrics_rows(steps: int, kzt_total: float, seconds: float, tps: float) -> list[dict]:
    rows = []
    for i in range(1, steps + 1):
        f = i / steps
        rows.append({"step": i * 10, "epoch": f, "loss": 2.6 * (0.55 + 0.45 * (1 - f) ** 2), "learning_rate": 2e-4,
                     "grad_norm": 0.8, "tokens_seen": int(i * 16000), "tokens_trained": int(i * 10000),
                     "tokens_per_s": tps * (0.92 + 0.08 * ((i * 7) % 5) / 5), "elapsed_s": seconds * f,
                     "spent_kzt": kzt_total * f, "spent_usd": kzt_total * f / 520.0})
    return rows


def write_run(folder: Path, ledger: dict, rows: list[dict], *, tail: str = "", scores: dict | None = None,
              recipe: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    (folder / "cost.json").write_text(json.dumps(ledger, indent=2), encoding="utf-8")
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + tail, encoding="utf-8")
    if scores is not None:
        (folder / "eval.json").write_text(json.dumps(scores), encoding="utf-8")
    if recipe is not None:
        (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return folder


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    done = make_ledger("qwen-kk-a100", "finished", usd_per_hour=1.18, gpu="A100-40GB", overhead_s=180,
                       phases={"setup": 95.0, "data": 48.0, "train": 3310.0, "eval": 260.0, "save": 22.0},
                       trained=4_212_736)
    cut = make_ledger("qwen-kk-l4-spot", "interrupted", usd_per_hour=0.35, gpu="L4",
                      phases={"setup": 80.0, "data": 51.0, "train": 1822.5, "eval": 0.0, "save": 11.0},
                      trained=1_604_200, status_reason="SIGTERM from the provider (spot preemption) at step 130",
                      resume_command="arzan train --resume runs/qwen-kk-l4-spot", price__pricing="spot",
                      energy_basis="estimated")
    live = make_ledger("llama-kk-t4", "running", usd_per_hour=0.16, gpu="T4", rate=505.5,
                       phases={"setup": 120.0, "data": 70.0, "train": 2510.0, "eval": 0.0, "save": 0.0},
                       trained=905_000, energy_basis="unavailable",
                       progress={"step": 90, "max_steps": 400, "epoch": 0.2},
                       budget__projected_kzt=301.2, model__base="meta-llama/Llama-3.2-1B-Instruct",
                       model__method="lora", model__backend="hf", model__backend_version="peft 0.21.2",
                       updated_at=datetime.now(timezone.utc).isoformat())  # written moments ago: alive
    recipe = {"name": "qwen-kk-a100", "data": {"sources": [
        {"hub": "kz-nlp/alpaca-kk", "revision": "9c1e2f0", "split": "train", "format": "alpaca", "sample": 0.5},
        {"path": "data/extra.jsonl", "split": "train", "format": "messages"}]}}
    scores = {"tasks": {"kkCOPA": {"acc": 0.6125, "acc_stderr": 0.02, "n": 500, "version": "1"},
                        "Belebele": {"acc_norm": 0.4811, "n": 900}, "Flores-101": {"metric": "chrf", "chrf": 31.25}}}
    return [
        write_run(tmp_path / "qwen-kk-a100", done, metrics_rows(30, done["money"]["kzt"], 3310, 1480.0),
                  scores=scores, recipe=recipe),
        write_run(tmp_path / "qwen-kk-l4-spot", cut, metrics_rows(13, cut["money"]["kzt"], 1822, 820.0)),
        write_run(tmp_path / "llama-kk-t4", live, metrics_rows(9, live["money"]["kzt"], 2510, 360.0),
                  tail='{"step": 100, "loss": 1.9, "tokens_per'),
    ]


class Page(HTMLParser):
    """Collects what the tests look at: summary cells, every src/href/style, svgs, figures."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: dict[tuple[str, str], dict] = {}
        self.attrs: list[tuple[str, str, str]] = []
        self.svgs: list[str] = []
        self.empty_figures: list[str] = []
        self.callouts: list[str] = []
        self._cell: dict | None = None
        self._row: str | None = None
        self._callout: list[str] | None = None
        self._depth = 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.attrs += [(tag, k, v or "") for k, v in attrs]
        if tag == "svg":
            self.svgs.append(a.get("data-plot", ""))
        if tag == "figure" and "empty" in (a.get("class") or ""):
            self.empty_figures.append(a.get("data-plot", ""))
        if tag == "tr" and "data-run" in a:
            self._row = a["data-run"]
        if tag == "td" and self._row and "data-col" in a:
            self._cell = {"value": a.get("data-value"), "text": "", "class": a.get("class", "")}
            self.cells[(self._row, a["data-col"])] = self._cell
        if tag == "div" and "callout" in (a.get("class") or ""):
            self._callout, self._depth = [], 0
        if self._callout is not None and tag == "div":
            self._depth += 1

    def handle_endtag(self, tag):
        if tag == "td":
            self._cell = None
        if tag == "tr":
            self._row = None
        if tag == "div" and self._callout is not None:
            self._depth -= 1
            if self._depth == 0:
                self.callouts.append("".join(self._callout))
                self._callout = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data
        if self._callout is not None:
            self._callout.append(data)


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def shown(text: str) -> float:
    return float(text.replace("≈", "").replace(",", "").strip())


def test_summary_figures_equal_the_ledgers(runs, tmp_path):
    out = build_report(runs, tmp_path / "out" / "report.html")
    page = parse(out)
    for folder in runs:
        ledger = json.loads((folder / "cost.json").read_text())
        rid = ledger["run_id"]
        expect = {"kzt": (ledger["money"]["kzt"], 2 if ledger["money"]["kzt"] < 1000 else 0),
                  "usd": (ledger["money"]["usd"], 2), "gpu_hours": (ledger["gpu_hours"], 3),
                  "tokens": (ledger["tokens"]["trained"], 0),
                  "kzt_per_1m": (ledger["money"]["kzt_per_1m_tokens"], 2)}
        if ledger["energy"]["kwh"] is not None:
            expect |= {"kwh": (ledger["energy"]["kwh"], 3), "co2": (ledger["energy"]["co2_kg"], 3)}
        for col, (value, digits) in expect.items():
            cell = page.cells[(rid, col)]
            assert float(cell["value"]) == pytest.approx(value, rel=1e-12), (rid, col)
            assert shown(cell["text"]) == pytest.approx(value, abs=0.51 * 10 ** -digits), (rid, col, cell["text"])
        assert page.cells[(rid, "model")]["text"] == ledger["model"]["base"]
        assert page.cells[(rid, "gpu")]["text"] == f"{ledger['hardware']['gpu_name']} × 1"
        assert float(page.cells[(rid, "wall")]["value"]) == pytest.approx(sum(ledger["phases"].values()))
    assert page.cells[("llama-kk-t4", "kwh")]["text"] == "—"
    assert page.cells[("qwen-kk-l4-spot", "kwh")]["text"].startswith("≈")
    assert page.cells[("qwen-kk-a100", "kzt")]["text"] == "667.29"  # 3,915 s × $1.18/h × 520
    assert page.cells[("qwen-kk-a100", "tokens")]["text"] == "4,212,736"


def test_scores_from_eval_json(runs, tmp_path):
    page = parse(build_report(runs, tmp_path / "r.html"))
    # on 0–100 like the score plot and `arzan compare`, with the item count where eval.json has it
    assert page.cells[("qwen-kk-a100", "score:kkCOPA")]["text"] == "61.3 (n=500)"
    assert float(page.cells[("qwen-kk-a100", "score:kkCOPA")]["value"]) == 0.6125
    assert page.cells[("qwen-kk-a100", "score:Belebele")]["text"] == "48.1 (n=900)"
    assert page.cells[("qwen-kk-a100", "score:Flores-101")]["text"] == "31.2"  # chrF is 0–100 already
    assert page.cells[("llama-kk-t4", "score:kkCOPA")]["text"] == "—"


REF_URL = "https://huggingface.co/example/kazllm-card/blob/0123abc/README.md"


def write_refs(path: Path) -> Path:
    """One published score on a task the fixture runs were scored on, one on a task they were not."""
    path.write_text(yaml.safe_dump({"references": [
        {"model": "KazLLM-8B", "source": REF_URL, "table": "model card, Kazakh table",
         "protocol": "generative, zero-shot, letter parsed", "metric": "acc", "scores": {"kkCOPA": 0.71}},
        {"model": "Other-7B", "source": "https://example.org/not-drawn", "protocol": "x",
         "scores": {"arzan_dastur_kk": 0.4}}]}, allow_unicode=True), encoding="utf-8")
    return path


def test_self_contained_and_holds_every_plot(runs, tmp_path):
    out = build_report(runs, tmp_path / "r.html", references=write_refs(tmp_path / "refs.yaml"))
    html = out.read_text(encoding="utf-8")
    page = parse(out)
    for tag, name, value in page.attrs:
        if name in ("src", "href", "xlink:href", "action", "poster", "srcset"):
            assert not re.match(r"\s*(https?:|//|file:)", value, re.I), (tag, name, value)
    assert not re.search(r"url\(\s*['\"]?\s*(https?:|//)", html, re.I)
    assert not re.search(r"@import|<link\b|<script\b|<iframe\b", html, re.I)
    assert set(page.svgs) == {"loss_vs_kzt", "throughput", "score_vs_kzt", "cost_by_phase"}
    assert page.empty_figures == []
    # the only URLs are the price/exchange sources and the drawn reference's source, as text
    assert set(re.findall(r"https?://[^\s<\"']+", html)) == {
        "https://colab.research.google.com/signup", "https://nationalbank.kz/en/exchangerates", REF_URL}
    assert f"<code>{REF_URL}</code>" in html
    assert "default-src 'none'" in html


def test_stopped_and_running_runs_say_why_and_how_to_resume(runs, tmp_path):
    page = parse(build_report(runs, tmp_path / "r.html"))
    text = "\n".join(page.callouts)
    assert "SIGTERM from the provider (spot preemption) at step 130" in text
    assert "arzan train --resume runs/qwen-kk-l4-spot" in text
    assert "Still running: step 90 of 400" in text
    assert "301.20 ₸" in text


def test_a_running_ledger_nobody_has_written_for_long_says_so_and_how_to_resume(runs, tmp_path):
    """A hard-killed run (no signal, no final write) keeps "running" forever: the report must not."""
    import shutil

    stale = tmp_path / "stale"
    shutil.copytree(runs[-1], stale)
    led = json.loads((stale / "cost.json").read_text())
    assert led["status"] == "running"
    led["updated_at"] = "2026-11-20T09:10:00+00:00"
    (stale / "cost.json").write_text(json.dumps(led))
    text = "\n".join(parse(build_report([stale], tmp_path / "s.html")).callouts)
    assert "Not updated for" in text and "probably died" in text and f"arzan train --resume {stale}" in text
    assert "Still running" not in text


def test_a_finished_run_whose_eval_after_training_failed_says_so_with_the_command_to_redo_it(runs, tmp_path):
    """The terminal said it and exited 3; the report showed a plain finished run."""
    import shutil

    done = tmp_path / "done"
    shutil.copytree(runs[0], done)
    (done / "eval.json").unlink()  # the eval failed: it wrote none
    led = json.loads((done / "cost.json").read_text())
    led["status_reason"] = (f"training finished; the evaluation after it failed (cannot load the data of "
                            f"belebele_kaz_Cyrl); score it with: arzan eval {done} --tasks kazakh")
    (done / "cost.json").write_text(json.dumps(led))
    out = build_report([done], tmp_path / "d.html")
    text = "\n".join(parse(out).callouts)
    assert "Finished training; the work after it did not all run" in text
    page = " ".join(out.read_text(encoding="utf-8").split())
    assert "not evaluated: the evaluation after training did not finish" in page and "not evaluated yet" not in page
    assert f"score it with: arzan eval {done} --tasks kazakh" in text and "Resume it" not in text
    assert f"score it with: arzan eval {done} --tasks kazakh" in out.with_suffix(".md").read_text(encoding="utf-8")
    assert not parse(build_report([runs[0]], tmp_path / "plain.html")).callouts  # a plain finished run: nothing
    from datetime import datetime, timezone

    from arzan.evaluation.session import put_in_ledger

    put_in_ledger(done / "cost.json", None, 30.0, "cuda", datetime.now(timezone.utc))  # the eval, redone since
    text = " ".join("\n".join(parse(build_report([done], tmp_path / "d2.html")).callouts).split())
    index = len(led["sessions"])
    assert f"Since then, finished: arzan eval (session {index})" in text


@pytest.mark.parametrize("resumable, older", [(True, False), (False, False), (True, True)])
def test_a_failed_run_is_offered_the_resume_only_when_it_saved_a_checkpoint(runs, tmp_path, resumable, older):
    """An OOM after a checkpoint resumes; a failure before any would fail again on the same recipe: the
    report says what the terminal said. An older ledger named no resume for any failed run: the folder's
    checkpoints decide."""
    import shutil

    run = tmp_path / "failed"
    shutil.copytree(runs[0], run)
    led = json.loads((run / "cost.json").read_text())
    led.update(status="failed", status_reason="OutOfMemoryError: CUDA out of memory",
               resume_command=f"arzan train --resume {run}" if resumable and not older else None)
    (run / "cost.json").write_text(json.dumps(led))
    if resumable:
        (run / "checkpoints" / "checkpoint-200").mkdir(parents=True)
        (run / "checkpoints" / "checkpoint-200" / "trainer_state.json").write_text("{}")
    text = " ".join("\n".join(parse(build_report([run], tmp_path / "f.html")).callouts).split())
    assert ("Resume it" in text and f"arzan train --resume {run}" in text) is resumable
    assert ("start again with --overwrite" in text) is not resumable


def test_a_running_ledger_whose_process_is_gone_here_is_not_shown_running(runs, tmp_path):
    """kill -9 seconds ago: the ledger is fresh, but its process is gone on this machine (as the
    resume knows at once): the report must not draw it as still running."""
    import shutil
    import socket
    import subprocess
    import sys

    gone = tmp_path / "gone"
    shutil.copytree(runs[-1], gone)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    led = json.loads((gone / "cost.json").read_text())
    led["sessions"][-1].update(host=socket.gethostname(), pid=dead.pid)
    (gone / "cost.json").write_text(json.dumps(led))
    out = build_report([gone], tmp_path / "g.html")
    text = "\n".join(parse(out).callouts)
    assert f"Not running: its process (pid {dead.pid}) is gone" in text and f"arzan train --resume {gone}" in text
    assert "Still running" not in text and "still running" not in out.read_text(encoding="utf-8")  # nor its plot
    assert "Still running" in "\n".join(parse(build_report([runs[-1]], tmp_path / "r.html")).callouts)


def test_runs_priced_at_different_exchange_rates_are_said_to_be(runs, tmp_path):
    """The fixture's T4 run is at 505.5 ₸/$, the others at 520: their ₸ side by side is not one currency."""
    out = build_report(runs, tmp_path / "r.html", markdown=True)
    md = (tmp_path / "r.md").read_text(encoding="utf-8")
    assert "the runs' tenge are at different exchange rates (" in md and "llama-kk-t4: 1 $ = 505.50 ₸" in md
    assert "compare their $ columns" in out.read_text(encoding="utf-8")
    build_report(runs[:2], tmp_path / "same.html", markdown=True)  # both at 520: nothing to say
    assert "different exchange rates" not in (tmp_path / "same.md").read_text(encoding="utf-8")


def test_markdown_next_to_html(runs, tmp_path):
    out = build_report(runs, tmp_path / "r.html")
    md = (tmp_path / "r.md").read_text(encoding="utf-8")
    assert "| 667.29 |" in md and "| 4,212,736 |" in md
    assert "`arzan train --resume runs/qwen-kk-l4-spot`" in md
    images = re.findall(r"!\[[^\]]*\]\(<([^>]+)>\)", md)
    assert len(images) == 4 and all((out.parent / p).is_file() for p in images)
    assert "hub:kz-nlp/alpaca-kk@9c1e2f0" in md and "4f2a9c1d" in md


def test_resume_command_defaults_and_budget_reason(tmp_path):
    ledger = make_ledger("capped", "stopped_budget", usd_per_hour=1.18, gpu="A100-40GB", trained=1000,
                         phases=dict.fromkeys(PHASES, 100.0), budget__stop_reason="max_kzt 300 reached")
    folder = write_run(tmp_path / "capped", ledger, [])
    page = parse(build_report([folder], tmp_path / "r.html"))
    text = "\n".join(page.callouts)
    assert "max_kzt 300 reached" in text and f"arzan train --resume {folder}" in text
    assert set(page.empty_figures) == {"loss_vs_kzt", "throughput", "score_vs_kzt"}


def test_reference_scores_drawn_when_present_and_tolerated_when_bad(runs, tmp_path):
    refs = tmp_path / "refs.yaml"
    refs.write_text(yaml.safe_dump({"references": [
        {"model": "KazLLM-8B", "task": "kkCOPA", "score": 0.71, "source": "paper"},
        {"model": "Qwen2.5-1.5B base", "task": "kkCOPA", "score": 0.55, "cost_kzt": 0.0}]}))
    assert build_report(runs, tmp_path / "a.html", references=refs).is_file()
    refs.write_text(": not [valid yaml")
    html = build_report(runs, tmp_path / "b.html", references=refs).read_text()
    assert "references left out" in html
    assert build_report(runs, tmp_path / "c.html", references=tmp_path / "missing.yaml").is_file()


def test_a_file_that_is_not_an_arzan_report_is_never_written_over(tmp_path, runs):
    """`--out README.html` puts the Markdown at README.md: someone's notes, kept; an earlier report, rewritten."""
    notes = tmp_path / "README.md"
    notes.write_text("my notes\n")
    with pytest.raises(ArzanError, match=r"README.md exists and is not an arzan report"):
        build_report(runs, tmp_path / "README.html")
    assert notes.read_text() == "my notes\n" and not (tmp_path / "README.html").exists()
    build_report(runs, tmp_path / "r.html")
    build_report(runs, tmp_path / "r.html")  # its own earlier report: rewritten, figures folder and all
    assert " by arzan " in (tmp_path / "r.md").read_text()
    (tmp_path / "x_files").mkdir()  # a browser's "save complete page" folder, not a report's figures
    (tmp_path / "x_files" / "loss_vs_kzt.png").write_text("precious")
    with pytest.raises(ArzanError, match=r"x_files exists and is not an earlier arzan report's figures"):
        build_report(runs, tmp_path / "x.html")
    assert (tmp_path / "x_files" / "loss_vs_kzt.png").read_text() == "precious"


def test_clear_errors(tmp_path, runs):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArzanError, match=r"empty: not an arzan run folder \(no cost.json\)"):
        build_report([tmp_path / "empty"], tmp_path / "r.html")
    with pytest.raises(ArzanError, match="no such run folder"):
        build_report([tmp_path / "nope"], tmp_path / "r.html")
    (runs[0] / "cost.json").write_text('{"schema_version": 1, "status": "fin')
    with pytest.raises(ArzanError) as err:
        build_report(runs, tmp_path / "r.html")
    message = str(err.value)
    assert str(runs[0] / "cost.json") in message and "corrupt" in message and "\n" not in message
    assert not (tmp_path / "r.html").exists()
    with pytest.raises(ArzanError, match="at least one run folder"):
        build_report([], tmp_path / "r.html")


@pytest.mark.parametrize("field, value", [("money", {"kzt": "lots"}), ("tokens", {"trained": [1]}),
                                          ("phases", {"train": True})])
def test_a_ledger_figure_that_is_not_a_number_is_named(runs, tmp_path, field, value):
    led = json.loads((runs[0] / "cost.json").read_text())
    led[field] = {**led.get(field, {}), **value}
    (runs[0] / "cost.json").write_text(json.dumps(led))
    dotted = f"{field}.{next(iter(value))}"
    with pytest.raises(ArzanError, match=rf"corrupt ledger, {dotted} is .*, not a number") as err:
        build_report(runs, tmp_path / "r.html")
    assert str(runs[0] / "cost.json") in str(err.value)
    assert not (tmp_path / "r.html").exists()


def test_bad_middle_metrics_line_is_noted_not_fatal(runs, tmp_path):
    metrics = runs[0] / "metrics.jsonl"
    lines = metrics.read_text().splitlines()
    lines[3] = "{oops"
    metrics.write_text("\n".join(lines) + "\n")
    html = build_report(runs, tmp_path / "r.html").read_text()
    assert "line 4 is not JSON, skipped" in html


def test_free_cpu_run_plots_against_step(tmp_path):
    ledger = make_ledger("cpu-smoke", "finished", usd_per_hour=0.0, gpu="", trained=2048,
                         phases={"setup": 3.0, "data": 1.0, "train": 20.0, "eval": 0.0, "save": 1.0},
                         hardware__device="cpu", hardware__gpu_count=0, energy_basis="unavailable")
    folder = write_run(tmp_path / "cpu-smoke", ledger, metrics_rows(5, 0.0, 20, 100.0))
    out = build_report([folder], tmp_path / "r.html")
    page = parse(out)
    assert page.cells[("cpu-smoke", "gpu")]["text"] == "CPU"
    assert page.cells[("cpu-smoke", "kzt")]["text"] == "0.00"
    assert "free" in out.read_text()


@pytest.mark.slow
def test_report_from_a_real_cpu_run(tmp_path):
    """The trainer's own run folder (smoke recipe, shortened, priced as a T4) reports cleanly."""
    from arzan.train import train_from_recipe
    from tests.conftest import REPO

    result = train_from_recipe(REPO / "recipes" / "smoke.yaml",
                               ["train.max_steps=12", "train.logging_steps=3", "train.save_steps=6",
                                "train.eval_steps=6"], out=tmp_path / "smoke", cost_overrides={"gpu": "T4"})
    out = build_report([result.run_dir], tmp_path / "report.html")
    ledger = json.loads((tmp_path / "smoke" / "cost.json").read_text())
    page = parse(out)
    cells = {col: page.cells[("smoke", col)] for col in ("kzt", "usd", "tokens", "gpu")}
    assert float(cells["kzt"]["value"]) == ledger["money"]["kzt"] > 0
    assert float(cells["usd"]["value"]) == ledger["money"]["usd"]
    assert shown(cells["tokens"]["text"]) == ledger["tokens"]["trained"] > 0
    assert cells["gpu"]["text"] == "CPU (priced as T4 × 1)"
    assert set(page.svgs) == {"loss_vs_kzt", "throughput", "cost_by_phase"}
    assert page.empty_figures == ["score_vs_kzt"]  # not evaluated
    html = out.read_text(encoding="utf-8")
    assert ledger["summary"]["data"][0]["fingerprint"] in html
    for tag, name, value in page.attrs:
        assert not (name in ("src", "href", "xlink:href") and re.match(r"\s*(https?:|//)", value)), (tag, value)


def test_shipped_reference_scores_load():
    """The curated file (another module's) must stay in a shape the report understands."""
    from arzan.reporting.refs import default_path, load_references

    path = default_path()
    if path is None:
        pytest.skip("no resources/reference_scores.yaml in this checkout")
    notes: list[str] = []
    refs = load_references(path, notes)
    assert refs and not notes
    assert all(0 <= r.score <= 100 and r.task and r.model for r in refs)


def test_scores_in_arzan_eval_json_shape_and_ledger_summary(tmp_path):
    from arzan.reporting.scores import parse_scores

    arzan_eval = {"schema_version": 1, "limit": 50, "rows": [{"task": "x", "value": 0.1}],
                  "tasks": {"kkcopa": {"metric": "acc", "acc": 0.62, "acc_stderr": None, "n": 50, "version": "1.0"}}}
    assert parse_scores(arzan_eval)["kkcopa"].value == 0.62
    assert parse_scores({"results": {"belebele": {"alias": "b", "acc,none": 0.4, "acc_stderr,none": 0.01}}}) \
        ["belebele"].value == 0.4
    ledger = make_ledger("evald", "finished", usd_per_hour=1.0, gpu="L4", trained=10,
                         phases=dict.fromkeys(PHASES, 10.0),
                         summary__eval={"tasks": {"kkcopa": {"metric": "acc", "acc": 0.5}}})
    folder = write_run(tmp_path / "evald", ledger, [])
    page = parse(build_report([folder], tmp_path / "r.html"))
    assert page.cells[("evald", "score:kkcopa")]["text"] == "50.0"
    (folder / "eval.json").write_text(json.dumps(arzan_eval))
    html = build_report([folder], tmp_path / "r.html").read_text()
    assert parse(tmp_path / "r.html").cells[("evald", "score:kkcopa")]["text"] == "62.0 (n=50)"
    assert "limit 50 examples per task" in html


def test_references_table_cites_source_method_and_label(runs, tmp_path):
    out = build_report(runs, tmp_path / "r.html", references=write_refs(tmp_path / "refs.yaml"))
    html = out.read_text(encoding="utf-8")
    section = html[html.index('id="references"'):]
    section = section[: section.index("</table>")]
    assert section.count("<tr data-ref=") == 1  # Other-7B's task was not measured: not drawn, not listed
    row = re.search(r'<tr data-ref="KazLLM-8B">(.*?)</tr>', section).group(1)
    for text in (f"<code>{REF_URL}</code>", "model card, Kazakh table", "generative, zero-shot, letter parsed",
                 "kkCOPA 71.0", "published, not measured here"):
        assert text in row, text
    md = (tmp_path / "r.md").read_text(encoding="utf-8")
    assert "## Published scores" in md
    line = next(x for x in md.splitlines() if x.startswith("| KazLLM-8B |"))
    assert f"`{REF_URL}`" in line and "generative, zero-shot, letter parsed" in line
    assert "model card, Kazakh table" in line and "published, not measured here" in line
    assert "not-drawn" not in html and "not-drawn" not in md


def test_shipped_references_are_cited_when_drawn(tmp_path):
    ledger = make_ledger("kk-const", "finished", usd_per_hour=1.0, gpu="L4", trained=10,
                         phases=dict.fromkeys(PHASES, 10.0))
    folder = write_run(tmp_path / "kk-const", ledger, [],
                       scores={"tasks": {"arzan_constitution_kk": {"metric": "acc", "acc": 0.3}}})
    html = build_report([folder], tmp_path / "r.html").read_text(encoding="utf-8")
    md = (tmp_path / "r.md").read_text(encoding="utf-8")
    shipped = yaml.safe_load((Path(__file__).parents[1] / "src/arzan/resources/reference_scores.yaml")
                             .read_text(encoding="utf-8"))["references"]
    drawn = {r["source"] for r in shipped if "arzan_constitution_kk" in (r.get("scores") or {})}
    assert drawn
    urls = set(re.findall(r"https?://[^\s<\"'`|]+", html))
    assert urls == drawn | {"https://colab.research.google.com/signup", "https://nationalbank.kz/en/exchangerates"}
    assert all(f"`{u}`" in md for u in drawn)
    assert "issai/LLama-3.1-KazLLM-1.0-8B" not in html  # an entry without scores draws nothing


def test_every_ledger_energy_method_is_described(tmp_path):
    from typing import get_args

    from arzan.cost.ledger import Energy
    from arzan.reporting.prov import ENERGY_METHODS

    allowed = set(get_args(Energy.model_fields["method"].annotation))
    assert allowed and allowed <= set(ENERGY_METHODS)
    ledger = make_ledger("cpu-rapl", "finished", usd_per_hour=0.0, gpu="", trained=100,
                         phases=dict.fromkeys(PHASES, 5.0), hardware__device="cpu", hardware__gpu_count=0,
                         energy__method="rapl")
    html = build_report([write_run(tmp_path / "cpu-rapl", ledger, [])], tmp_path / "r.html").read_text()
    energy = re.search(r"<th>Energy</th><td>(.*?)</td>", html).group(1)
    assert "RAPL" in energy and not energy.startswith("rapl")


def _gen_check(stops: list[bool]) -> dict:
    prompts = [{"prompt": f"Сұрақ {i}: қырық екі цифрмен?", "text": ("42" if ok else "ала " * 80).strip(),
                "stopped_at_eos": ok, "n_tokens": 3 if ok else 64, "before": "шу " * 30,
                "before_stopped_at_eos": False} for i, ok in enumerate(stops)]
    n = sum(stops)
    summary = f"{n}/{len(stops)} answers stopped at EOS"
    if n < len(stops):
        summary += f"; {len(stops) - n} ran to the 64-token limit: the model may never stop"
    return {"prompts": prompts, "stopped": n, "total": len(stops), "ok": n == len(stops), "summary": summary}


def test_generation_check_in_html_and_markdown(tmp_path):
    good = make_ledger("stops", "finished", usd_per_hour=1.0, gpu="L4", trained=10,
                       phases=dict.fromkeys(PHASES, 10.0), summary__generation_check=_gen_check([True, True]))
    bad = make_ledger("rambles", "finished", usd_per_hour=1.0, gpu="L4", trained=10,
                      phases=dict.fromkeys(PHASES, 10.0), summary__generation_check=_gen_check([True, False]))
    folders = [write_run(tmp_path / "stops", good, []), write_run(tmp_path / "rambles", bad, [])]
    out = build_report(folders, tmp_path / "r.html")
    html, page = out.read_text(encoding="utf-8"), parse(out)
    assert "<h2>Generation check</h2>" in html
    flagged = [c for c in page.callouts if "never stops" in c]
    assert len(flagged) == 1 and "rambles" in flagged[0] and "1 of 2 answers" in flagged[0]
    card = re.search(r'<div class="gencheck" data-run="rambles">(.*?)</table>', html, re.S).group(1)
    assert "1/2 answers stopped at EOS; 1 ran to the 64-token limit" in card
    assert "Сұрақ 1: қырық екі цифрмен?" in card and "no — never stops (64 tokens)" in card
    assert "<tr class=never>" in card and "шу" not in card  # the after answer only
    long_answer = re.findall(r"<td>(ала[^<]*)</td>", card)[0]
    assert len(long_answer) <= 120 and long_answer.endswith("…")
    ok_card = re.search(r'<div class="gencheck" data-run="stops">(.*?)</table>', html, re.S).group(1)
    assert "never stops" not in ok_card and ok_card.count(">yes</td>") == 2
    md = (tmp_path / "r.md").read_text(encoding="utf-8")
    assert "## Generation check" in md and "> **rambles**: ⚠ **never stops** — 1 of 2 answers" in md
    assert "| Сұрақ 0: қырық екі цифрмен? | 42 | yes |" in md
    assert "no — never stops (64 tokens) |" in md


def test_no_generation_section_without_a_check(runs, tmp_path):
    html = build_report(runs, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "Generation check" not in html and "never stops" not in html


def test_names_with_dollars_and_html_are_shown_as_text_and_never_break_the_report(runs, tmp_path):
    import shutil

    odd = tmp_path / 'lr_2e-4 $5 cap, $10 cap <img src="evil.example:x.png">'  # the folder names the run
    shutil.copytree(runs[0], odd)
    out = build_report([odd], tmp_path / "odd.html")  # matplotlib would read "$5 cap, $" as a formula
    md = (tmp_path / "odd.md").read_text(encoding="utf-8")
    assert "<img" not in md and "&lt;img src=" in md  # shown, never fetched
    assert not any(name == "src" and "evil" in value for _, name, value in parse(out).attrs)


def test_cost_by_phase_adds_up_to_the_ledger_when_each_session_paid_its_overhead(runs):
    from arzan.reporting.plots import phase_split
    from arzan.reporting.runs import load_run

    run = load_run(runs[0])
    run.ledger["billed_seconds"] = sum(run.ledger["phases"].values()) + 2 * run.ledger["price"]["overhead_s"]
    run.ledger["sessions"] = []  # a ledger whose sessions do not add up: the total spread over the phases
    split = phase_split(run, in_money=True)  # two sessions, each charged the 180 s start-up once
    assert sum(split.values()) == pytest.approx(run.ledger["money"]["kzt"])
    assert split["overhead"] == pytest.approx(run.ledger["money"]["kzt"] * 360 / run.ledger["billed_seconds"])


def test_cost_by_phase_prices_each_session_at_its_own_rate(runs):
    """Trained 1 h at 500 ₸/h, resumed on a dearer GPU (1500 ₸/h) for 1 h more and 1 h of lm-eval,
    each session with 3 min of start-up: train 2000 + its share, eval 1500, not the total spread."""
    from arzan.reporting.plots import phase_split
    from arzan.reporting.runs import load_run

    run = load_run(runs[0])
    run.ledger["sessions"] = [
        {"phases": {"train": 3600.0}, "billed_seconds": 3780.0, "money": {"kzt": 500 * 3780 / 3600}},
        {"phases": {"train": 3600.0, "eval": 3600.0}, "billed_seconds": 7380.0, "money": {"kzt": 1500 * 7380 / 3600}}]
    run.ledger["money"]["kzt"] = 500 * 3780 / 3600 + 1500 * 7380 / 3600
    split = phase_split(run, in_money=True)
    assert split["train"] == pytest.approx(2000.0) and split["eval"] == pytest.approx(1500.0)
    assert split["overhead"] == pytest.approx(500 * 180 / 3600 + 1500 * 180 / 3600)
    assert sum(split.values()) == pytest.approx(run.ledger["money"]["kzt"])


def test_a_diverged_run_is_named_instead_of_drawn_as_empty_axes(runs, tmp_path):
    import shutil

    nan = tmp_path / "nan"
    shutil.copytree(runs[1], nan)
    rows = [json.loads(x) for x in (nan / "metrics.jsonl").read_text().splitlines() if x.strip()]
    for r in rows[3:]:
        r["loss"] = float("nan")
    (nan / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    from arzan.reporting.plots import loss_vs_cost
    from arzan.reporting.runs import load_run

    plot = loss_vs_cost([load_run(nan)])
    assert f"diverged): {load_run(nan).label} from step {rows[3]['step']}" in plot.caption
    for r in rows:
        r["loss"] = float("nan")
    (nan / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    empty = loss_vs_cost([load_run(nan)])
    assert empty.figure is None and "No finite loss to draw" in empty.empty


def test_money_axis_turns_logarithmic_only_when_costs_differ_by_more_than_20x(runs, tmp_path):
    caption = "money axis is logarithmic"
    assert caption not in build_report(runs, tmp_path / "linear.html").read_text(encoding="utf-8")
    metrics = runs[1] / "metrics.jsonl"  # the spot L4 run, ~99 ₸: make it cost 50× less
    rows = [json.loads(x) for x in metrics.read_text().splitlines()]
    metrics.write_text("".join(json.dumps({**r, "spent_kzt": r["spent_kzt"] / 50}) + "\n" for r in rows))
    html = build_report(runs, tmp_path / "log.html").read_text(encoding="utf-8")
    assert caption in html and "loss_vs_kzt" in html


def test_out_never_overwrites_a_runs_own_files_or_itself(runs, tmp_path):
    before = (runs[0] / "cost.json").read_bytes()
    for out, message in ((runs[0] / "cost.json", "give an .html file"),
                         (runs[0] / "eval.html", None),  # an HTML file in a run folder is fine
                         (tmp_path / "rep.md", "give an .html file"),
                         (tmp_path / "adir", "give an .html file")):
        if message is None:
            assert build_report(runs, out).is_file()
            continue
        with pytest.raises(ArzanError, match=message):
            build_report(runs, out)
    (tmp_path / "dir.html").mkdir()
    with pytest.raises(ArzanError, match="is a folder"):
        build_report(runs, tmp_path / "dir.html")
    with pytest.raises(ArzanError, match="would overwrite the run's own eval.json"):
        build_report(runs, tmp_path / "r.html", out_md=runs[0] / "eval.json")
    with pytest.raises(ArzanError, match="the HTML and the Markdown would be the same file"):
        build_report(runs, tmp_path / "r.html", out_md=tmp_path / "r.html")
    assert (runs[0] / "cost.json").read_bytes() == before



def test_the_same_run_named_twice_is_reported_once(runs, tmp_path, monkeypatch):
    """`arzan report runA runA` (or runA and ./runA/): one row and one line, not a run beside itself
    under two path labels."""
    monkeypatch.chdir(runs[0].parent)
    out = build_report([runs[0], Path(runs[0].name), Path(f"./{runs[0].name}/"), runs[1]], tmp_path / "r.html")
    page = parse(out)
    assert sorted(run for run, col in page.cells if col == "kzt") == ["qwen-kk-a100", "qwen-kk-l4-spot"]
    md = out.with_suffix(".md").read_text(encoding="utf-8")
    assert len([line for line in md.splitlines() if line.startswith("| qwen-kk-a100 ")]) == 2  # summary + scores


def test_small_money_keeps_significant_digits_in_the_provenance(runs, tmp_path):
    """A CPU eval billed 0.0031 ₸: the budget line says so instead of `spent ₸0.00`."""
    ledger_file = runs[1] / "cost.json"
    ledger = json.loads(ledger_file.read_text())
    ledger["budget"].update(spent_kzt=0.0031, max_kzt=0.5, projected_kzt=0.0475)
    ledger["money"].update(kzt=0.0031, usd=0.0031 / 520)
    ledger_file.write_text(json.dumps(ledger))
    out = build_report([runs[1]], tmp_path / "r.html")
    for text in (out.read_text(encoding="utf-8"), out.with_suffix(".md").read_text(encoding="utf-8")):
        assert "cap 0.50 ₸; spent 0.0031 ₸; projected at end 0.048 ₸" in text
    assert parse(out).cells[("qwen-kk-l4-spot", "kzt")]["text"] == "0.0031"


def test_throughput_plot_shows_a_stall_the_running_average_hides(tmp_path):
    """10 s of steady 1,000 tok/s, a 20 s stall, then steady again: the average so far only droops
    (to ~400), the per-interval rate drops to 0 where the stall was."""
    from arzan.reporting.plots import interval_rates, throughput
    from arzan.reporting.runs import Run

    rows, seen, t = [], 0, 0.0
    for dt, tokens in [(5, 5000), (5, 5000), (20, 0), (5, 5000), (5, 5000)]:
        t, seen = t + dt, seen + tokens
        rows.append({"step": len(rows) + 1, "elapsed_s": t, "tokens_seen": seen, "tokens_per_s": seen / t,
                     "loss": 1.0})
    # an eval row and the closing row repeat tokens_seen at a later elapsed_s: not a 0 tok/s interval
    rows.insert(2, {"step": 2, "elapsed_s": 10.5, "tokens_seen": 10000, "eval_loss": 2.0})
    rows.append({"step": 5, "elapsed_s": 40.2, "tokens_seen": 20000, "loss": None})
    run = Run(path=tmp_path, ledger={"status": "finished"}, metrics=rows, label="r")
    xs, ys = interval_rates(run)
    assert xs == [10, 30, 35, 40] and ys == [1000, 0, 1000, 1000]
    assert min(r["tokens_per_s"] for r in rows if "tokens_per_s" in r) > 300  # the average never shows the stall
    plot = throughput([run])
    assert plot.figure is not None and "between logged steps" in plot.caption
    # a resume after step 4: the interval from the last row of session 0 to the first of session 1
    # holds the new session's setup (10 s, no tokens): left out, not drawn as a dip
    resumed = [{**r, "session": 0} for r in rows if r.get("step", 0) <= 4 and r.get("loss")]
    resumed.append({"step": 5, "elapsed_s": 45.0, "tokens_seen": 25000, "loss": 1.0, "session": 1})
    resumed.append({"step": 6, "elapsed_s": 50.0, "tokens_seen": 30000, "loss": 1.0, "session": 1})
    xs, ys = interval_rates(Run(path=tmp_path, ledger={"status": "finished"}, metrics=resumed, label="r"))
    assert xs == [10, 30, 35, 50] and ys == [1000, 0, 1000, 1000]


def test_steps_a_hard_kill_lost_are_drawn_once_as_retrained(tmp_path):
    """Killed at step 8 with checkpoint 5: the resume logs 6..10 again. The curve keeps the retrained
    rows, each step once, in order; the lost rows' loss is not drawn beside them."""
    from arzan.reporting.runs import _read_metrics

    def row(step, loss):
        return json.dumps({"step": step, "loss": loss, "elapsed_s": step * 1.0})

    lines = [row(s, 9.0) for s in range(1, 9)] + [row(s, 1.0) for s in range(6, 11)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    rows = _read_metrics(tmp_path / "metrics.jsonl", [])
    assert [r["step"] for r in rows] == list(range(1, 11))
    assert [r["loss"] for r in rows] == [9.0] * 5 + [1.0] * 5

    # rows that name their session: one lost logged step (30) is retrained and logged again as 30,
    # and an eval row shares its step with a train row within one session
    def srow(session, step, **kw):
        return json.dumps({"session": session, "step": step, "elapsed_s": step * 1.0, **kw})

    lines = [srow(0, 10, loss=3.0), srow(0, 20, loss=2.5), srow(0, 20, eval_loss=2.6), srow(0, 30, loss=9.9),
             srow(1, 30, loss=2.0), srow(1, 40, loss=1.8), srow(1, 40, eval_loss=1.9)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    rows = _read_metrics(tmp_path / "metrics.jsonl", [])
    assert [(r["step"], r.get("loss"), r.get("eval_loss")) for r in rows] == [
        (10, 3.0, None), (20, 2.5, None), (20, None, 2.6), (30, 2.0, None), (40, 1.8, None), (40, None, 1.9)]


def write_model_eval(folder: Path, base: str, tasks: dict) -> Path:
    """What `arzan eval MODEL` writes for a plain model: evals/<model>/eval.json and no bill."""
    folder.mkdir(parents=True)
    doc = {"model": {"kind": "model", "base": base, "adapter": None, "load_in_4bit": False}, "tasks": tasks}
    (folder / "eval.json").write_text(json.dumps(doc), encoding="utf-8")
    return folder


def test_a_chat_scored_run_beside_a_plainly_scored_base_is_said_with_the_command_that_pairs_them(runs, tmp_path):
    """The report says which scores went through a chat template and, as `arzan compare` does, the
    `arzan eval` that scores the base the fine-tune's way, not just "not compared" in a cell."""
    base = write_model_eval(tmp_path / "evals" / "qwen-base", "Qwen/Qwen2.5-1.5B-Instruct",
                            {"kkCOPA": {"metric": "acc", "acc": 0.5, "acc_stderr": 0.02, "n": 500}})
    doc = {"model": {"kind": "adapter", "base": "Qwen/Qwen2.5-1.5B-Instruct", "load_in_4bit": False},
           "tasks": {"kkCOPA": {"metric": "acc", "acc": 0.6125, "acc_stderr": 0.02, "n": 500, "chat_template": True,
                                "requested": ["kkCOPA"]}}}
    (runs[0] / "eval.json").write_text(json.dumps(doc), encoding="utf-8")
    out = build_report([runs[0], base], tmp_path / "r.html")
    cell = parse(out).cells[("qwen-kk-a100", "score:kkCOPA")]["text"]
    assert cell == "61.3 (n=500) · base scored without the chat template, this with the chat template, not compared"
    import html

    for text in (html.unescape(" ".join(out.read_text(encoding="utf-8").split())),
                 out.with_suffix(".md").read_text("utf-8")):
        assert "Scored with the model's chat template (arzan eval --chat-template): qwen-kk-a100;" in text
        assert "arzan eval Qwen/Qwen2.5-1.5B-Instruct --tasks kkCOPA --chat-template" in text


def test_base_and_kazllm_scored_here_stand_beside_the_runs(runs, tmp_path):
    """`arzan report runs/A evals/BASE evals/KAZLLM`: the scored models join the score table and plot
    (no bill, so not the cost tables), and the fine-tune's cell shows its gain over its base."""
    base = write_model_eval(tmp_path / "evals" / "qwen-base", "Qwen/Qwen2.5-1.5B-Instruct",
                            {"kkCOPA": {"metric": "acc", "acc": 0.5, "acc_stderr": 0.02, "n": 500}})
    kazllm = write_model_eval(tmp_path / "evals" / "kazllm", "issai/LLama-3.1-KazLLM-1.0-8B",
                              {"kkCOPA": {"metric": "acc", "acc": 0.7, "acc_stderr": 0.02, "n": 500}})
    out = build_report([runs[0], base, kazllm], tmp_path / "r.html")
    page = parse(out)
    led = json.loads((runs[0] / "cost.json").read_text())
    a100 = led["money"]["kzt"] * (1 - 260.0 / led["billed_seconds"])  # the scoring inside the session is not bought
    gain_cell = page.cells[("qwen-kk-a100", "score:kkCOPA")]["text"]
    gain = 0.6125 * 100 - 50.0  # 11.25 and a hair: shown as +11.3
    assert gain_cell.startswith("61.3 (n=500) · +11.3 ±2.8 vs base · ")
    assert f"{a100 / gain:,.2f} ₸/pt gained" in gain_cell
    assert page.cells[("Qwen/Qwen2.5-1.5B-Instruct", "score:kkCOPA")]["text"] == "50.0 (n=500)"
    assert page.cells[("issai/LLama-3.1-KazLLM-1.0-8B", "score:kkCOPA")]["text"] == "70.0 (n=500)"
    assert page.cells[("issai/LLama-3.1-KazLLM-1.0-8B", "kzt")]["text"] == "—"  # not trained here
    assert ("issai/LLama-3.1-KazLLM-1.0-8B", "gpu_hours") not in page.cells  # no row in the cost table
    html = out.read_text(encoding="utf-8")
    assert "Scored here but not trained here (no bill)" in html and "1 evaluated model" not in html
    assert "and 2 evaluated models" in html
    markdown = out.with_suffix(".md").read_text(encoding="utf-8")
    assert "vs base" in markdown and "issai/LLama-3.1-KazLLM-1.0-8B" in markdown
    assert "score_vs_kzt" in page.svgs

    with pytest.raises(ArzanError, match="give at least one run folder"):
        build_report([base, kazllm], tmp_path / "only-models.html")
    with pytest.raises(ArzanError, match=r"nor an `arzan eval` folder"):
        build_report([runs[0], tmp_path / "evals"], tmp_path / "typo.html")


def test_scores_of_an_earlier_adapter_are_marked_in_the_report(runs, tmp_path):
    import hashlib

    run = runs[0]
    (run / "adapter").mkdir()
    (run / "adapter" / "adapter_model.safetensors").write_bytes(b"weights after the resume")
    doc = json.loads((run / "eval.json").read_text(encoding="utf-8"))
    doc["model"] = {"kind": "run", "base": "Qwen/Qwen2.5-1.5B-Instruct",
                    "adapter_sha256": hashlib.sha256(b"weights at step 130").hexdigest()}
    (run / "eval.json").write_text(json.dumps(doc), encoding="utf-8")
    out = build_report(runs, tmp_path / "r.html")
    page = parse(out)
    assert page.cells[("qwen-kk-a100", "score:kkCOPA")]["text"] == \
        "61.3 (n=500) · an earlier adapter's score: run arzan eval again"
    assert "scores of an earlier adapter" in out.read_text(encoding="utf-8")


def test_a_file_given_for_a_run_folder_is_named_as_a_file(runs, tmp_path):
    with pytest.raises(ArzanError, match=r"cost\.json: is a file; give the run folder it is in"):
        build_report([runs[0] / "cost.json"], tmp_path / "r.html")


def test_a_runs_eval_json_names_its_run(runs, tmp_path):
    page = parse(build_report([runs[0] / "eval.json"], tmp_path / "r.html"))
    assert page.cells[("qwen-kk-a100", "score:kkCOPA")]["text"] == "61.3 (n=500)"


def test_provenance_gives_each_tasks_own_limit_and_the_span_of_eval_dates(runs, tmp_path):
    doc = json.loads((runs[0] / "eval.json").read_text(encoding="utf-8"))
    doc["tasks"]["kkCOPA"].update(limit=20, evaluated_at="2026-12-03T06:58:00+00:00")
    doc["tasks"]["Belebele"].update(limit=40, evaluated_at="2026-12-03T07:13:00+00:00")
    (runs[0] / "eval.json").write_text(json.dumps(doc), encoding="utf-8")
    html = build_report([runs[0]], tmp_path / "r.html").read_text(encoding="utf-8")
    assert "limit 20 to 40 examples per task on 2 of 3 tasks" in html
    assert "run 2026-12-03 06:58 UTC to 2026-12-03 07:13 UTC" in html


def test_the_price_shows_in_tenge_too_so_a_rate_given_in_tenge_reads_as_given(runs, tmp_path):
    """`cost.kzt_per_gpu_hour: 600` is billed in dollars at the recorded rate; the report showed only
    $1.1532 per hour, and the 600 ₸ the user wrote was nowhere."""
    import html
    import shutil

    run = tmp_path / "tenge"
    shutil.copytree(runs[0], run)
    led = json.loads((run / "cost.json").read_text())
    led["price"]["usd_per_gpu_hour"], led["exchange"]["usd_kzt"] = 600 / 520.27, 520.27
    (run / "cost.json").write_text(json.dumps(led))
    text = html.unescape(" ".join(build_report([run], tmp_path / "t.html").read_text(encoding="utf-8").split()))
    assert "600.00 ₸ = $1.1532 per GPU-hour" in text


def test_a_metrics_file_that_ends_before_the_run_did_is_said(runs, tmp_path):
    """A finished run whose metrics.jsonl stops at step 150 of 300 drew a curve ending early under a
    'finished' marker, with no word; a missing file said 'No loss logged yet'."""
    import html
    import shutil

    def notes(folder: Path) -> str:
        return html.unescape(" ".join(build_report([folder], tmp_path / "n.html").read_text(encoding="utf-8").split()))

    assert "the curves stop early" not in notes(runs[0])
    cut = tmp_path / "cut"
    shutil.copytree(runs[0], cut)
    lines = (cut / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    (cut / "metrics.jsonl").write_text("\n".join(lines[:15]) + "\n" + lines[15][:20], encoding="utf-8")
    assert (f"{cut / 'metrics.jsonl'}: the loss is logged up to step 150, but the ledger says the run reached "
            "step 300: the curves stop early") in notes(cut)
    (cut / "metrics.jsonl").write_text('{"step": NaN, "loss": 0.9}\n', encoding="utf-8")  # json.loads takes NaN
    assert "no loss logged, though the ledger says the run reached step 300" in notes(cut)
    (cut / "metrics.jsonl").unlink()
    assert f"{cut / 'metrics.jsonl'}: no loss logged, though the ledger says the run reached step 300" in notes(cut)
