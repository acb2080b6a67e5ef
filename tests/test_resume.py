"""Never pass the budget, never lose a paid-for step: budget stop, SIGTERM, --resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from transformers import TrainerCallback

from arzan.cli import parse_budget
from arzan.errors import ArzanError, Failed
from arzan.recipe import BudgetSection, load_recipe
from arzan.train import train
from tests.conftest import REPO, base_recipe

STEP_SECONDS = 60.0


class StepClock(TrainerCallback):
    """A bill clock that advances exactly STEP_SECONDS per optimizer step and not at all elsewhere."""

    def __init__(self) -> None:
        self.state, self.base = None, 0

    def __call__(self) -> float:
        return STEP_SECONDS * (self.state.global_step - self.base) if self.state is not None else 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        if self.state is None:  # after a resume, global_step starts at the checkpoint's step
            self.state, self.base = state, state.global_step


def test_budget_stop_at_the_right_step_saves_adapter_and_ledger(tmp_path, write_recipe):
    usd_per_hour, usd_kzt, cap = 1.0, 500.0, 95.0
    recipe = load_recipe(write_recipe(base_recipe(
        train={"max_length": 64, "max_steps": 40, "per_device_train_batch_size": 2, "logging_steps": 1,
               "save_steps": 1000, "gradient_accumulation_steps": 1},
        cost={"usd_per_gpu_hour": usd_per_hour, "usd_kzt": usd_kzt}, budget={"max_kzt": cap})))
    clock = StepClock()
    result = train(recipe, out=tmp_path / "run", clock=clock, callbacks=[clock])
    step_kzt = STEP_SECONDS / 3600 * usd_per_hour * usd_kzt
    expected_step = next(k for k in range(1, 100) if (k + 1) * step_kzt > cap)  # the next step would pass it
    led = json.loads((tmp_path / "run" / "cost.json").read_text())
    assert result.status == led["status"] == "stopped_budget"
    assert led["progress"]["step"] == expected_step
    assert led["money"]["kzt"] == pytest.approx(expected_step * step_kzt)
    assert led["money"]["kzt"] <= cap
    assert "max_kzt" in led["budget"]["stop_reason"]
    head, raised = led["resume_command"].split(" --budget ")
    assert head == f"arzan train --resume {tmp_path / 'run'}"
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    assert (tmp_path / "run" / "checkpoints" / f"checkpoint-{expected_step}" / "arzan_ledger.json").is_file()
    assert not (tmp_path / "run" / "checkpoints" / "README.md").exists()  # TRL's card without the bill

    # resuming under the same cap would pay for a setup and not one step: refused, nothing written
    before = (tmp_path / "run" / "cost.json").read_text()
    refusal = "refusing to resume: max_kzt 95 ₸: .* spent so far.*would pass it.*--budget"
    with pytest.raises(ArzanError, match=refusal) as refused:
        train(recipe, out=tmp_path / "run", mode="resume")
    assert (tmp_path / "run" / "cost.json").read_text() == before
    assert str(refused.value).endswith(f"--budget {raised}")  # one raised cap, whichever says it

    # the raised cap the stop suggested lets the run finish; the bill is every step exactly once
    clock2 = StepClock()
    done = train(recipe, out=tmp_path / "run", mode="resume", budget=parse_budget(raised), clock=clock2,
                 callbacks=[clock2])
    assert done.status == "finished" and done.ledger["progress"]["step"] == 40
    assert done.ledger["money"]["kzt"] == pytest.approx(40 * step_kzt)
    assert done.ledger["budget"]["max_kzt"] == parse_budget(raised).max_kzt
    with pytest.raises(ArzanError, match="finished at step 40/40; there is nothing to resume"):
        train(recipe, out=tmp_path / "run", mode="resume")


def _run_cli(*args: str, held_steps: bool = False, **kw) -> subprocess.Popen:
    """`arzan train ARGS` in a subprocess; `held_steps`: each step lasts >= 0.5 s (tests/slow_cli.py),
    so a signal sent after step N lands before the run ends, however fast this machine is."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "ARZAN_TEST_STEP_S": "0.5"}
    module = "tests.slow_cli" if held_steps else "arzan"
    return subprocess.Popen([sys.executable, "-m", module, "train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env, cwd=REPO, **kw)


def _wait_for_steps(metrics: Path, steps: int, proc: subprocess.Popen, timeout: float = 180) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= steps:
            return
        if proc.poll() is not None:
            raise AssertionError(f"training ended early:\n{proc.stdout.read()}")
        time.sleep(0.2)
    raise AssertionError("training did not reach the step in time")


@pytest.mark.slow
def test_sigterm_checkpoints_then_resume_finishes_without_double_counting(tmp_path, write_recipe):
    train_section = {"max_length": 64, "max_steps": 24, "per_device_train_batch_size": 4, "logging_steps": 2,
                     "save_steps": 1000, "gradient_accumulation_steps": 1}
    recipe = write_recipe(base_recipe(train=train_section, cost={"usd_per_gpu_hour": 2.0}))
    run = tmp_path / "run"
    proc = _run_cli(str(recipe), "--out", str(run), held_steps=True)
    _wait_for_steps(run / "metrics.jsonl", 3, proc)
    t_signal = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert time.monotonic() - t_signal < 30, "checkpoint + ledger must be saved within 30 s"
    assert proc.returncode not in (0, 2), out
    assert f"arzan train --resume {run}" in out
    led = json.loads((run / "cost.json").read_text())
    assert led["status"] == "interrupted" and "SIGTERM" in led["status_reason"]
    stopped_at = led["progress"]["step"]
    assert 0 < stopped_at < 24
    assert (run / "checkpoints" / f"checkpoint-{stopped_at}" / "trainer_state.json").is_file()
    first_tokens = led["tokens"]["trained"]

    resumed = _run_cli("--resume", str(run))
    out2, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out2
    led2 = json.loads((run / "cost.json").read_text())
    assert led2["status"] == "finished" and led2["progress"]["step"] == 24
    assert len(led2["sessions"]) == 2
    assert led2["sessions"][0]["tokens"]["trained"] == first_tokens
    assert led2["tokens"]["trained"] == sum(s["tokens"]["trained"] for s in led2["sessions"])
    assert led2["money"]["usd"] == pytest.approx(sum(s["money"]["usd"] for s in led2["sessions"]))

    # one uninterrupted run of the same recipe trains exactly the same tokens
    straight = tmp_path / "straight"
    ref = _run_cli(str(recipe), "--out", str(straight))
    assert ref.wait(timeout=300) == 0
    led_ref = json.loads((straight / "cost.json").read_text())
    assert led2["tokens"]["trained"] == led_ref["tokens"]["trained"]
    assert led2["tokens"]["seen"] == led_ref["tokens"]["seen"]


@pytest.mark.slow
def test_a_hard_kill_loses_no_billed_time_the_metrics_recorded(tmp_path, write_recipe):
    """SIGKILL (an OOM kill, a reclaimed VM) gives no chance to write the ledger: the time since its
    last write is taken back from the last metrics row on resume, into the killed session."""
    train_section = {"max_length": 64, "max_steps": 16, "per_device_train_batch_size": 4, "logging_steps": 1,
                     "save_steps": 4, "gradient_accumulation_steps": 1}
    recipe = write_recipe(base_recipe(train=train_section, cost={"usd_per_gpu_hour": 2.0},
                                      eval={"generation_check": False}))
    run = tmp_path / "run"
    proc = _run_cli(str(recipe), "--out", str(run), held_steps=True)
    end = time.monotonic() + 180
    while time.monotonic() < end:  # kill once the metrics are ahead of the ledger's last write
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()] \
            if (run / "metrics.jsonl").is_file() else []
        try:
            written = json.loads((run / "cost.json").read_text())["progress"]["step"]
        except (OSError, ValueError, KeyError):
            written = 0
        if rows and rows[-1]["step"] >= 5 and rows[-1]["step"] > written:
            break
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.1)
    proc.kill()
    proc.communicate(timeout=60)
    last = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()][-1]
    kept = json.loads((run / "cost.json").read_text())
    behind = last["elapsed_s"] - sum(kept["phases"].values())
    assert kept["sessions"][0]["status"] == "running" and behind > 0  # the killed session never closed

    resumed = _run_cli("--resume", str(run))
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    led = json.loads((run / "cost.json").read_text())
    first = led["sessions"][0]
    assert first["status"] == "interrupted" and first["recovered_s"] == pytest.approx(behind)
    assert sum(first["phases"].values()) == pytest.approx(last["elapsed_s"])
    assert first["money"]["usd"] == pytest.approx(first["billed_seconds"] / 3600 * 2.0)
    assert first["steps"][1] == last["step"] and first["lost_steps"][1] == last["step"]
    assert led["status"] == "finished" and led["progress"]["step"] == 16


class SignalAt(TrainerCallback):
    """Sends this process SIGTERM after a given step, as a spot preemption would."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_interrupted_plus_resumed_money_equals_one_straight_run(tmp_path, write_recipe):
    """With a clock that only moves during steps, the bill is exact: nothing counted twice or lost."""
    section = {"max_length": 64, "max_steps": 12, "per_device_train_batch_size": 4, "logging_steps": 3,
               "save_steps": 1000, "gradient_accumulation_steps": 1}
    path = write_recipe(base_recipe(train=section, cost={"usd_per_gpu_hour": 1.5, "usd_kzt": 500},
                                    eval={"generation_check": False}))
    clock = StepClock()
    first = train(load_recipe(path), out=tmp_path / "run", clock=clock, callbacks=[clock, SignalAt(5)])
    assert first.status == "interrupted"
    stopped = first.ledger["progress"]["step"]
    assert 5 <= stopped < 12
    for copy in [tmp_path / "run" / "cost.json", *(tmp_path / "run" / "checkpoints").glob("*/arzan_ledger.json")]:
        doc = json.loads(copy.read_text())  # as if the first session had rented a GPU machine
        doc["hardware"].update(device="cuda", gpu_name="NVIDIA A100-SXM4-80GB", gpu_count=1)
        copy.write_text(json.dumps(doc))
    clock2 = StepClock()
    second = train(load_recipe(path), out=tmp_path / "run", mode="resume", clock=clock2, callbacks=[clock2])
    clock3 = StepClock()
    straight = train(load_recipe(path), out=tmp_path / "straight", clock=clock3, callbacks=[clock3])
    assert second.status == straight.status == "finished"
    assert [s["steps"] for s in second.ledger["sessions"]] == [[0, stopped], [stopped, 12]]
    # the resume ran on this CPU: the ledger says so, not what the first session's machine was
    assert second.ledger["hardware"]["device"] == second.ledger["sessions"][-1]["device"] == "cpu"
    assert second.ledger["hardware"]["gpu_name"] is None
    assert second.ledger["money"]["kzt"] == pytest.approx(straight.ledger["money"]["kzt"])
    assert second.ledger["money"]["kzt"] == pytest.approx(12 * STEP_SECONDS / 3600 * 1.5 * 500)
    assert second.ledger["tokens"] == straight.ledger["tokens"]


class SignalMidStep(TrainerCallback):
    """SIGTERM as optimizer step `step` begins: it arrives during the step's first micro-batch."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_begin(self, args, state, control, **kwargs):
        if state.global_step == self.step - 1:
            os.kill(os.getpid(), signal.SIGTERM)


def test_command_line_price_and_cap_hold_after_resume_and_a_mid_step_signal_counts_nothing_twice(tmp_path,
                                                                                                  write_recipe):
    """`--price` and `--budget` are the run's terms: a `--resume` without them keeps them. A signal in
    the middle of a gradient-accumulation step stops after that micro-batch, not the whole step."""
    section = {"max_length": 64, "max_steps": 8, "per_device_train_batch_size": 2, "logging_steps": 2,
               "save_steps": 1000, "gradient_accumulation_steps": 2}
    path = write_recipe(base_recipe(train=section, cost={"usd_kzt": 500}, eval={"generation_check": False}))
    usd_per_hour, cap = 2.0, 1000.0
    clock = StepClock()
    first = train(load_recipe(path), out=tmp_path / "run", clock=clock, callbacks=[clock, SignalMidStep(4)],
                  budget=BudgetSection(max_kzt=cap), cost_overrides={"usd_per_gpu_hour": usd_per_hour})
    assert first.status == "interrupted" and first.signal == signal.SIGTERM
    assert first.ledger["progress"]["step"] == 3  # the half-done step 4 is redone after the resume
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-3" / "trainer_state.json").is_file()
    saved = load_recipe(tmp_path / "run" / "recipe.yaml")
    assert saved.cost.usd_per_gpu_hour == usd_per_hour and saved.budget.max_kzt == cap

    clock2 = StepClock()
    second = train(load_recipe(path), out=tmp_path / "run", mode="resume", clock=clock2, callbacks=[clock2])
    step_kzt = STEP_SECONDS / 3600 * usd_per_hour * 500
    assert second.status == "finished"
    assert [s["money"]["kzt"] for s in second.ledger["sessions"]] == pytest.approx([3 * step_kzt, 5 * step_kzt])
    assert second.ledger["budget"]["max_kzt"] == cap and second.ledger["price"]["usd_per_gpu_hour"] == usd_per_hour

    clock3 = StepClock()
    straight = train(load_recipe(path), out=tmp_path / "straight", clock=clock3, callbacks=[clock3],
                     cost_overrides={"usd_per_gpu_hour": usd_per_hour})
    assert second.ledger["tokens"] == straight.ledger["tokens"]
    assert second.ledger["money"]["kzt"] == pytest.approx(straight.ledger["money"]["kzt"])


def test_a_price_given_on_resume_holds_for_the_next_resume_and_each_session_records_its_own(tmp_path,
                                                                                             write_recipe):
    """A run moved to a priced machine with `--resume --price 2`, stopped again, then resumed with no
    flags, is billed at 2 for both later sessions (the flags hold like a raised cap); every session
    row names the price it was billed at, so the totals can be checked session by session."""
    section = {"max_length": 64, "max_steps": 9, "per_device_train_batch_size": 2, "logging_steps": 1,
               "save_steps": 1000, "gradient_accumulation_steps": 1}
    path = write_recipe(base_recipe(train=section, cost={"usd_kzt": 500}, eval={"generation_check": False}))
    run = tmp_path / "run"

    def session(mode, stop_at=None, **kw):
        clock = StepClock()
        extra = [SignalAt(stop_at)] if stop_at else []
        return train(load_recipe(path), out=run, mode=mode, clock=clock, callbacks=[clock, *extra], **kw)

    assert session("new", 3).status == "interrupted"
    assert session("resume", 6, cost_overrides={"usd_per_gpu_hour": 2.0}).status == "interrupted"
    from arzan.evaluation.session import put_in_ledger

    put_in_ledger(run / "cost.json", None, 3.0, "cpu")  # an `arzan eval` in between: a session with no flags
    last = session("resume")
    assert last.status == "finished"
    rows = [r for r in last.ledger["sessions"] if r["phases"]["train"] > 0]
    assert len(last.ledger["sessions"]) == 4 and len(rows) == 3
    assert [r["price"]["usd_per_gpu_hour"] for r in rows] == [0.0, 2.0, 2.0]
    assert [r["terms"] for r in rows] == [None, {"usd_per_gpu_hour": 2.0}, {"usd_per_gpu_hour": 2.0}]
    for r in rows:
        steps = r["steps"][1] - r["steps"][0]
        assert r["money"]["kzt"] == pytest.approx(steps * STEP_SECONDS / 3600 * r["price"]["usd_per_gpu_hour"] * 500)
    assert last.ledger["money"]["kzt"] == pytest.approx(sum(r["money"]["kzt"] for r in last.ledger["sessions"]))
    assert last.ledger["money"]["kzt"] > 0
    # a price given again replaces the kept one
    again = train(load_recipe(path), out=tmp_path / "b", clock=StepClock(), callbacks=[SignalAt(2)],
                  cost_overrides={"usd_per_gpu_hour": 1.0})
    assert again.status == "interrupted"
    done = train(load_recipe(path), out=tmp_path / "b", mode="resume", cost_overrides={"gpu": "T4", "provider": "colab"})
    assert done.ledger["sessions"][-1]["terms"] == {"gpu": "T4", "provider": "colab"}
    assert done.ledger["sessions"][-1]["price"]["gpu"] == "T4" and done.ledger["price"]["gpu"] == "T4"
    from arzan.cost.prices import lookup

    # the catalog's T4 price on Colab, not the 1.0 $/h given to the first session with --price
    assert done.ledger["price"]["usd_per_gpu_hour"] != 1.0 and done.ledger["price"]["source"] != "user"
    assert done.ledger["price"]["source"] == lookup("T4", "colab").source


def test_signal_during_setup_closes_the_ledger_at_once(tmp_path, write_recipe, monkeypatch):
    """Nothing to checkpoint before the first step: the run stops at once and says so."""
    import arzan.model

    real = arzan.model.load_model

    def load_then_preempted(recipe):
        real(recipe)  # the load is paid for, then the signal comes
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler interrupts this sleep
        raise AssertionError("the signal should have stopped the setup")

    monkeypatch.setattr(arzan.model, "load_model", load_then_preempted)
    path = write_recipe(base_recipe(train={"max_steps": 4, "max_length": 64}))
    t0 = time.monotonic()
    result = train(load_recipe(path), out=tmp_path / "run")
    assert time.monotonic() - t0 < 30
    led = json.loads((tmp_path / "run" / "cost.json").read_text())
    assert result.status == led["status"] == "interrupted"
    assert "SIGTERM during setup" in led["status_reason"] and "from the start" in led["status_reason"]
    assert led["resume_command"] == f"arzan train --resume {tmp_path / 'run'}"
    assert led["sessions"][0]["phases"]["setup"] > 0 and led["progress"]["step"] == 0


class CrashAt(TrainerCallback):
    """The process dies after step `step` without a signal (a crash, or cost.json left by a hard kill)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise RuntimeError("simulated crash")


def test_steps_after_the_last_checkpoint_are_paid_once_and_their_tokens_counted_once(tmp_path, write_recipe):
    """Crash at step 5 with the last checkpoint at 4: step 5 was paid for (money keeps it) and is
    trained again after the resume (tokens count it once)."""
    section = {"max_length": 64, "max_steps": 12, "per_device_train_batch_size": 4, "logging_steps": 1,
               "save_steps": 2, "gradient_accumulation_steps": 1}
    path = write_recipe(base_recipe(train=section, cost={"usd_per_gpu_hour": 1.5, "usd_kzt": 500},
                                    eval={"generation_check": False}))
    clock = StepClock()
    with pytest.raises(Failed) as failed:
        train(load_recipe(path), out=tmp_path / "run", clock=clock, callbacks=[clock, CrashAt(5)])
    crashed = json.loads((tmp_path / "run" / "cost.json").read_text())
    assert crashed["status"] == "failed" and crashed["progress"]["step"] == 5
    message, log = str(failed.value), tmp_path / "run" / "error.log"
    assert "\n" not in message and message.startswith("the run failed at step 5 (RuntimeError: simulated crash);")
    assert message.endswith(f"the traceback is in {log}; arzan train --resume {tmp_path / 'run'} continues from "
                            "checkpoint-4")
    assert "Traceback (most recent call last)" in log.read_text() and "simulated crash" in log.read_text()
    assert isinstance(failed.value.__cause__, RuntimeError)  # the Python API keeps the library's error
    clock2 = StepClock()
    resumed = train(load_recipe(path), out=tmp_path / "run", mode="resume", clock=clock2, callbacks=[clock2])
    clock3 = StepClock()
    straight = train(load_recipe(path), out=tmp_path / "straight", clock=clock3, callbacks=[clock3])
    first, second = resumed.ledger["sessions"]
    assert first["lost_steps"] == [4, 5] and second["steps"] == [4, 12] and second["lost_steps"] is None
    for kind in ("seen", "trained"):  # tokens/s differs, rightly: the lost step took train time
        assert resumed.ledger["tokens"][kind] == straight.ledger["tokens"][kind]
    step_kzt = STEP_SECONDS / 3600 * 1.5 * 500
    assert first["money"]["kzt"] == pytest.approx(5 * step_kzt)  # the lost step was paid for
    assert resumed.ledger["money"]["kzt"] == pytest.approx(13 * step_kzt)


EVAL_BATCHES = 8  # 16 held-out rows in batches of 2


def _eval_recipe(write_recipe, **cost) -> Path:
    section = {"max_length": 64, "max_steps": 8, "per_device_train_batch_size": 4, "per_device_eval_batch_size": 2,
               "eval_steps": 3, "logging_steps": 1, "save_steps": 1000, "gradient_accumulation_steps": 1}
    data = {"sources": [{"path": "arzan://sample/kk_arith.jsonl", "format": "alpaca", "sample": 64}],
            "eval_fraction": 0.25}
    return write_recipe(base_recipe(train=section, data=data, cost=cost or {"usd_per_gpu_hour": 1.0},
                                    eval={"generation_check": False}))


class SignalDuringEval(TrainerCallback):
    """SIGTERM as the first evaluation batch is done: a preemption in the middle of an eval pass."""

    def __init__(self) -> None:
        self.batches = 0

    def on_prediction_step(self, args, state, control, **kwargs):
        self.batches += 1
        if self.batches == 1:
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_signal_during_an_evaluation_cuts_it_and_checkpoints_the_step(tmp_path, write_recipe):
    """An eval pass can outlast the ~30 s a preempted machine has: it is cut, the step it followed is kept."""
    path = _eval_recipe(write_recipe)
    spy = SignalDuringEval()
    first = train(load_recipe(path), out=tmp_path / "run", callbacks=[spy])
    assert first.status == "interrupted" and "SIGTERM" in first.ledger["status_reason"]
    assert first.ledger["progress"]["step"] == 3  # the first evaluation comes after step 3
    assert spy.batches < EVAL_BATCHES  # cut after the batch in flight, not run to its end
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-3" / "arzan_ledger.json").is_file()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert not any("eval_loss" in r for r in rows)  # a cut evaluation is not reported as a score

    second = train(load_recipe(path), out=tmp_path / "run", mode="resume")
    assert second.status == "finished"
    assert [s["steps"] for s in second.ledger["sessions"]] == [[0, 3], [3, 8]]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evaluated = [r["step"] for r in rows if "eval_loss" in r]
    assert 6 in evaluated and 3 not in evaluated  # later evaluations run as planned; the cut one is not redone


class EvalClock(StepClock):
    """StepClock plus EVAL_SECONDS for every evaluation batch: an evaluation dearer than a step."""

    eval_seconds = 120.0

    def __init__(self) -> None:
        super().__init__()
        self.eval_batches = 0

    def __call__(self) -> float:
        return super().__call__() + self.eval_seconds * self.eval_batches

    def on_prediction_step(self, args, state, control, **kwargs):
        self.eval_batches += 1


def test_the_budget_cuts_an_evaluation_before_it_passes_the_cap(tmp_path, write_recipe):
    usd_per_hour, usd_kzt, cap = 1.0, 500.0, 70.0
    step_kzt = STEP_SECONDS / 3600 * usd_per_hour * usd_kzt  # 8.33 ₸; an eval batch costs twice that
    clock = EvalClock()
    recipe = load_recipe(_eval_recipe(write_recipe, usd_per_gpu_hour=usd_per_hour, usd_kzt=usd_kzt))
    result = train(recipe, out=tmp_path / "run", budget=BudgetSection(max_kzt=cap), clock=clock, callbacks=[clock])
    led = result.ledger
    assert result.status == led["status"] == "stopped_budget"
    assert led["progress"]["step"] == 3  # three steps (25 ₸) fit, the whole evaluation after them would not
    assert 0 < clock.eval_batches < EVAL_BATCHES
    assert led["money"]["kzt"] == pytest.approx(3 * step_kzt + clock.eval_batches * 2 * step_kzt)
    assert led["money"]["kzt"] <= cap
    assert "evaluation" in led["budget"]["stop_reason"] and "max_kzt 70" in led["budget"]["stop_reason"]
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-3" / "arzan_ledger.json").is_file()
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()
    assert "--budget" in led["resume_command"]


def test_a_budget_stop_on_an_evaluation_step_skips_the_evaluation(tmp_path, write_recipe):
    """The step that cannot afford another is checkpointed at once: no evaluation is bought after it."""
    usd_per_hour, usd_kzt = 1.0, 500.0
    step_kzt = STEP_SECONDS / 3600 * usd_per_hour * usd_kzt
    clock = EvalClock()
    recipe = load_recipe(_eval_recipe(write_recipe, usd_per_gpu_hour=usd_per_hour, usd_kzt=usd_kzt))
    result = train(recipe, out=tmp_path / "run", budget=BudgetSection(max_kzt=3.5 * step_kzt), clock=clock,
                   callbacks=[clock])
    assert result.status == "stopped_budget" and result.ledger["progress"]["step"] == 3
    assert clock.eval_batches <= 1  # at most the batch the cut waits for
    assert result.ledger["money"]["kzt"] <= 3.5 * step_kzt
    assert (tmp_path / "run" / "checkpoints" / "checkpoint-3" / "arzan_ledger.json").is_file()


def _short_recipe(write_recipe, steps: int = 4, **sections) -> Path:
    section = {"max_length": 64, "max_steps": steps, "per_device_train_batch_size": 4, "logging_steps": 1,
               "save_steps": 1000, "gradient_accumulation_steps": 1}
    sections.setdefault("cost", {"usd_per_gpu_hour": 1.0, "usd_kzt": 500})
    sections.setdefault("eval", {"generation_check": False})
    return write_recipe(base_recipe(train=section, **sections))


def test_resuming_a_run_whose_training_is_complete_trains_no_extra_step(tmp_path, write_recipe, monkeypatch):
    """Training done, the work after it crashed: the resume does that work and not a step more
    (transformers checks max_steps only after a step, so a plain Trainer resume would train a 5th)."""
    from safetensors.torch import load_file

    from arzan import runtime

    path = _short_recipe(write_recipe, eval={"generation_check": True})
    real = runtime.free_accelerator_memory

    def crash(*a, **k):
        raise RuntimeError("CUDA out of memory while freeing the trainer")

    monkeypatch.setattr(runtime, "free_accelerator_memory", crash)
    clock = StepClock()
    with pytest.raises(Failed) as failed:
        train(load_recipe(path), out=tmp_path / "run", clock=clock, callbacks=[clock])
    # every step is trained: no advice to shrink the batch or to pay for the training again
    assert str(failed.value).endswith(f"the training is complete; arzan train --resume {tmp_path / 'run'} does "
                                      "only the work after it")
    assert "per_device_train_batch_size" not in str(failed.value) and "--overwrite" not in str(failed.value)
    first = json.loads((tmp_path / "run" / "cost.json").read_text())
    assert first["status"] == "failed" and first["progress"]["step"] == 4
    monkeypatch.setattr(runtime, "free_accelerator_memory", real)
    clock2 = StepClock()
    done = train(load_recipe(path), out=tmp_path / "run", mode="resume", clock=clock2, callbacks=[clock2])
    assert done.status == "finished" and done.ledger["progress"]["step"] == 4
    assert [s["steps"] for s in done.ledger["sessions"]] == [[0, 4], [4, 4]]
    assert done.ledger["tokens"]["trained"] == first["tokens"]["trained"]
    assert done.ledger["money"]["kzt"] == pytest.approx(first["money"]["kzt"])  # the clock moves only in steps
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").glob("checkpoint-*")) == ["checkpoint-4"]
    assert done.ledger["summary"]["generation_check"]["prompts"]  # the work that crashed is done now
    saved = load_file(tmp_path / "run" / "adapter" / "adapter_model.safetensors")
    trained = load_file(tmp_path / "run" / "checkpoints" / "checkpoint-4" / "adapter_model.safetensors")
    assert saved.keys() == trained.keys() and all((saved[k] == trained[k]).all() for k in saved)


def test_a_cap_that_pays_for_every_step_lets_the_run_finish(tmp_path, write_recipe):
    step_kzt = STEP_SECONDS / 3600 * 1.0 * 500
    clock = StepClock()
    result = train(load_recipe(_short_recipe(write_recipe, budget={"max_kzt": 4.5 * step_kzt})),
                   out=tmp_path / "run", clock=clock, callbacks=[clock])
    assert result.status == "finished" and result.ledger["progress"]["step"] == 4  # no next step to afford
    assert result.ledger["budget"]["stop_reason"] is None and result.ledger["resume_command"] is None


class SaveSpy(TrainerCallback):
    """SIGTERM while the first checkpoint is written, or after a given step."""

    def __init__(self, in_save: bool = False, at_step: int | None = None) -> None:
        self.in_save, self.at_step, self.saves = in_save, at_step, 0

    def on_save(self, args, state, control, **kwargs):
        self.saves += 1
        if self.in_save and self.saves == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at_step:
            os.kill(os.getpid(), signal.SIGTERM)


EVAL_DATA = {"sources": [{"path": "arzan://sample/kk_arith.jsonl", "format": "alpaca", "sample": 64}],
             "eval_fraction": 0.25}


@pytest.mark.parametrize("case", ["signal-in-save", "signal-then-epoch-eval", "budget-then-epoch-eval"])
def test_a_stop_never_writes_the_same_checkpoint_twice(tmp_path, write_recipe, monkeypatch, case):
    """Rewriting a checkpoint in place during the grace period could leave the only good one broken."""
    from transformers import Trainer

    writes = []
    real = Trainer._save_checkpoint
    monkeypatch.setattr(Trainer, "_save_checkpoint",
                        lambda self, model, trial: (writes.append(self.state.global_step), real(self, model, trial)))
    section = {"max_length": 64, "max_steps": 12, "per_device_train_batch_size": 2, "logging_steps": 1,
               "save_steps": 1000, "gradient_accumulation_steps": 1}
    sections, spy, budget = {"eval": {"generation_check": False}}, SaveSpy(at_step=3), None
    if case == "signal-in-save":  # a stop asked for in the middle of an accumulated step, after a save
        section.update(save_steps=2, gradient_accumulation_steps=2, max_steps=8)
        spy = SaveSpy(in_save=True)
    else:  # eval data without eval_steps: an epoch-end evaluation follows the stop
        sections["data"] = EVAL_DATA
        if case == "budget-then-epoch-eval":
            spy, budget = SaveSpy(), BudgetSection(max_kzt=3.5 * STEP_SECONDS / 3600 * 500)
    sections["cost"] = {"usd_per_gpu_hour": 1.0, "usd_kzt": 500}
    clock = StepClock()
    result = train(load_recipe(write_recipe(base_recipe(train=section, **sections))), out=tmp_path / "run",
                   budget=budget, clock=clock, callbacks=[clock, spy])
    assert result.status == ("stopped_budget" if case.startswith("budget") else "interrupted")
    assert writes and len(writes) == len(set(writes)), writes
    step = result.ledger["progress"]["step"]
    assert (tmp_path / "run" / "checkpoints" / f"checkpoint-{step}" / "trainer_state.json").is_file()


class SlowSetup:
    """Loading the model costs `seconds` on the bill clock: a big model's download and load."""

    def __init__(self, monkeypatch, clock: "SetupClock", seconds: float) -> None:
        import arzan.model

        self.clock, self.seconds = clock, seconds
        real = arzan.model.load_model

        def load(recipe):
            out = real(recipe)
            self.clock.extra += self.seconds
            return out

        monkeypatch.setattr(arzan.model, "load_model", load)


class SetupClock(StepClock):
    def __init__(self) -> None:
        super().__init__()
        self.extra = 0.0

    def __call__(self) -> float:
        return super().__call__() + self.extra


def test_the_cap_a_budget_stop_names_grows_with_an_eval_billed_after_it(tmp_path, write_recipe, monkeypatch):
    """`--budget X` named at the stop is spent + what is left; an `arzan eval` or merge since spends
    more, and the old X would stop the resume again after one more paid setup."""
    from datetime import datetime, timezone

    from arzan.evaluation.session import bill

    slow = SlowSetup(monkeypatch, SetupClock(), 600.0)
    path = _short_recipe(write_recipe, steps=12, budget={"max_kzt": 130})
    first = train(load_recipe(path), out=tmp_path / "run", clock=slow.clock, callbacks=[slow.clock])
    assert first.status == "stopped_budget"
    named = parse_budget(first.ledger["resume_command"].split(" --budget ")[1]).max_kzt
    led, _ = bill(tmp_path / "run", None, 360.0, "cpu", datetime.now(timezone.utc))  # a 50 ₸ eval
    assert led["status"] == "stopped_budget" and led["money"]["kzt"] == pytest.approx(first.ledger["money"]["kzt"] + 50)
    now = parse_budget(led["resume_command"].split(" --budget ")[1]).max_kzt
    assert named + 49 <= now <= named + 51  # the same headroom over what is spent now
    assert led["resume_command"].startswith(f"arzan train --resume {tmp_path / 'run'} --budget ")


def test_the_raised_cap_pays_for_the_next_sessions_setup_and_a_setup_never_buys_an_unaffordable_step(
        tmp_path, write_recipe, monkeypatch):
    step_kzt = STEP_SECONDS / 3600 * 500  # 8.33 ₸ a step; loading the model costs 600 s = 83.33 ₸
    slow = SlowSetup(monkeypatch, SetupClock(), 600.0)
    path = _short_recipe(write_recipe, steps=12, budget={"max_kzt": 130})
    first = train(load_recipe(path), out=tmp_path / "run", clock=slow.clock, callbacks=[slow.clock])
    assert first.status == "stopped_budget" and first.ledger["progress"]["step"] == 5  # 83.33 + 5 steps = 125 ₸
    raised = parse_budget(first.ledger["resume_command"].split(" --budget ")[1])
    assert raised.max_kzt >= 125 + 7 * step_kzt + 600 / 3600 * 500  # the steps left and another setup

    # a cap the next setup alone would eat is refused before anything is paid
    before = (tmp_path / "run" / "cost.json").read_text()
    with pytest.raises(ArzanError, match="refusing to resume: max_kzt 200 ₸: .*setup and first step .* would pass it"):
        train(load_recipe(path), out=tmp_path / "run", mode="resume", budget=BudgetSection(max_kzt=200))
    assert (tmp_path / "run" / "cost.json").read_text() == before

    # a setup slower than last time, past the cap: not one step is bought, the saved adapter stays
    adapter = (tmp_path / "run" / "adapter" / "adapter_model.safetensors").read_bytes()
    slow.clock, slow.seconds = SetupClock(), 1200.0
    second = train(load_recipe(path), out=tmp_path / "run", mode="resume", budget=BudgetSection(max_kzt=220),
                   clock=slow.clock, callbacks=[slow.clock])
    assert second.status == "stopped_budget" and "the first step of this session" in second.ledger["status_reason"]
    assert [s["steps"] for s in second.ledger["sessions"]] == [[0, 5], [5, 5]]
    assert second.ledger["tokens"]["trained"] == first.ledger["tokens"]["trained"]
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").read_bytes() == adapter

    # the cap it suggests now (from the slower setup) finishes the run
    raised = parse_budget(second.ledger["resume_command"].split(" --budget ")[1])
    slow.clock = SetupClock()
    done = train(load_recipe(path), out=tmp_path / "run", mode="resume", budget=raised, clock=slow.clock,
                 callbacks=[slow.clock])
    assert done.status == "finished" and done.ledger["progress"]["step"] == 12
    assert done.ledger["money"]["kzt"] <= raised.max_kzt


def test_a_new_run_whose_setup_eats_the_budget_trains_nothing(tmp_path, write_recipe, monkeypatch):
    slow = SlowSetup(monkeypatch, SetupClock(), 600.0)  # 83.33 ₸ before the first step
    result = train(load_recipe(_short_recipe(write_recipe, budget={"max_kzt": 50})), out=tmp_path / "run",
                   allow_over_budget=True, clock=slow.clock, callbacks=[slow.clock])
    assert result.status == "stopped_budget" and result.ledger["progress"]["step"] == 0
    assert result.ledger["tokens"]["trained"] == 0
    assert not (tmp_path / "run" / "adapter").exists()  # no step trained: no adapter to pass off as one
    # the setup passed the cap: said so, not blamed on a first step that never began
    assert result.ledger["status_reason"].startswith("max_kzt 50 ₸: spent 83.33 ₸, already past it, so the first "
                                                     "step of this session did not start")
    # a resume under the same cap names the cap the stop named: no step was measured to price another by
    suggested = result.ledger["resume_command"].split(" --budget ")[1]
    with pytest.raises(ArzanError) as refused:
        train(load_recipe(tmp_path / "run" / "recipe.yaml"), out=tmp_path / "run", mode="resume")
    assert str(refused.value).endswith(f"--budget {suggested}")


def test_a_signal_while_the_final_adapter_is_saved_finishes_the_run_and_a_second_one_waits_for_the_file(
        tmp_path, write_recipe, monkeypatch):
    import peft

    real = peft.PeftModel.save_pretrained
    signals = [1]

    def save(self, path, *a, **k):
        if Path(path).name == ".adapter.partial":  # written beside adapter/, then swapped in
            for _ in range(signals[0]):
                os.kill(os.getpid(), signal.SIGTERM)
        return real(self, path, *a, **k)

    monkeypatch.setattr(peft.PeftModel, "save_pretrained", save)
    path = _short_recipe(write_recipe, steps=2, eval={"generation_check": True})
    one = train(load_recipe(path), out=tmp_path / "one")
    assert one.status == "finished"  # every step trained and saved: nothing to resume
    assert "received SIGTERM before the generation check" in one.ledger["status_reason"]
    assert one.ledger["summary"]["generation_check"] is None  # skipped, and the reason says so
    assert (tmp_path / "one" / "adapter" / "adapter_model.safetensors").is_file()

    signals[0] = 2
    with pytest.raises(KeyboardInterrupt):
        train(load_recipe(path), out=tmp_path / "two")
    from safetensors.torch import load_file

    assert load_file(tmp_path / "two" / "adapter" / "adapter_model.safetensors")  # written whole, then the exit
    led = json.loads((tmp_path / "two" / "cost.json").read_text())
    assert led["status"] == "interrupted" and "--resume continues from checkpoint-2" in led["status_reason"]


def test_a_signal_is_not_swallowed_by_a_librarys_except_exception(tmp_path, write_recipe, monkeypatch):
    """Fallback code (`except Exception: try the other way`) must not eat the stop and train on."""
    import arzan.model

    real = arzan.model.load_model

    def load(recipe):
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.5)
        except Exception:
            pass
        return real(recipe)

    monkeypatch.setattr(arzan.model, "load_model", load)
    result = train(load_recipe(_short_recipe(write_recipe)), out=tmp_path / "run")
    assert result.status == "interrupted" and result.ledger["progress"]["step"] == 0
    assert "during setup" in result.ledger["status_reason"]


def test_a_resume_whose_checkpoint_is_gone_or_damaged_is_refused_before_it_bills(tmp_path, write_recipe):
    """A Colab user who did not copy checkpoints/ back from Drive must not silently pay for every
    step again; a checkpoint cut short is named before the model loads."""
    import shutil

    section = {"max_length": 64, "max_steps": 12, "per_device_train_batch_size": 4, "logging_steps": 3,
               "save_steps": 2, "gradient_accumulation_steps": 1}
    path = write_recipe(base_recipe(train=section, eval={"generation_check": False}))
    run = tmp_path / "run"
    first = train(load_recipe(path), out=run, callbacks=[SignalAt(5)])
    assert first.status == "interrupted"
    last = run / "checkpoints" / f"checkpoint-{first.ledger['progress']['step']}"
    ledger_before = (run / "cost.json").read_text()

    def refused(match: str) -> None:
        with pytest.raises(ArzanError, match=match) as err:
            train(load_recipe(path), out=run, mode="resume")
        assert "\n" not in str(err.value)
        assert (run / "cost.json").read_text() == ledger_before  # nothing billed, nothing rewritten

    weights = last / "adapter_model.safetensors"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    refused(rf"{last.name}/adapter_model.safetensors: damaged .*move {last.name} aside")
    weights.write_bytes(good)
    state = last / "trainer_state.json"
    good_state = state.read_text()
    state.write_text("{")
    refused(rf"{last.name}/trainer_state.json: damaged .*move {last.name} aside")
    state.write_text(good_state)
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):  # loaded by the Trainer after the model
        part = last / name
        whole = part.read_bytes()
        for broken in (whole[: len(whole) // 2], b""):  # a copy cut short, an emptied file
            part.write_bytes(broken)
            refused(rf"{last.name}/{name}: damaged .*move {last.name} aside")
        part.write_bytes(whole)
    shutil.move(run / "checkpoints", tmp_path / "on-drive")
    refused(r"no checkpoint, but the run stopped \(interrupted\) at step \d+ with one saved.*--overwrite")
    shutil.move(tmp_path / "on-drive", run / "checkpoints")
    half = run / "checkpoints" / f"checkpoint-{first.ledger['progress']['step'] + 1}"  # a save a full disk cut short
    half.mkdir()
    (half / "optimizer.pt").write_bytes(b"cut short")
    done = train(load_recipe(path), out=run, mode="resume")  # put back: it finishes from the checkpoint
    assert done.status == "finished" and done.ledger["sessions"][1]["steps"][0] == first.ledger["progress"]["step"]
    [aside] = (run / "checkpoints").glob(f"incomplete-{half.name}.at-*")  # not written into: kept aside as it was
    assert (aside / "optimizer.pt").read_bytes() == b"cut short"


def test_a_running_ledger_is_refused_while_its_process_lives_and_resumed_once_it_is_gone(tmp_path, write_recipe):
    """A hard-killed run's ledger still says "running" for up to 90 s. On the same host the session's
    pid tells a live trainer (refused: two processes must never train into one folder) from a dead one
    (resumed at once, no 90 s wait); on another host only the ledger's age can tell."""
    import socket
    from datetime import datetime, timezone

    from arzan import resume
    from arzan.runfolder import RunFolder

    section = {"max_length": 64, "max_steps": 6, "per_device_train_batch_size": 2, "save_steps": 1000}
    path = write_recipe(base_recipe(train=section, eval={"generation_check": False}))
    run = tmp_path / "run"
    assert train(load_recipe(path), out=run, callbacks=[SignalAt(2)]).status == "interrupted"
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        for pid, host, refused in ((live.pid, socket.gethostname(), True), (dead.pid, socket.gethostname(), False),
                                   (dead.pid, "another-host", True)):
            led = json.loads((run / "cost.json").read_text())
            led["status"], led["updated_at"] = "running", datetime.now(timezone.utc).isoformat()
            led["sessions"][-1].update(pid=pid, host=host)
            (run / "cost.json").write_text(json.dumps(led))
            if refused:
                with pytest.raises(ArzanError, match="another arzan process is training into this folder"):
                    resume.resume_terms(RunFolder(run), None, None)
            else:
                recipe, ledger, terms = resume.resume_terms(RunFolder(run), None, None)
                assert ledger.progress.step == 2 and terms == {}
    finally:
        live.kill()


class BootClock(EvalClock):
    """EvalClock read the way time.monotonic reads: days of seconds since the machine booted."""

    def __call__(self) -> float:
        return 200_000.0 + super().__call__()


def _eval_on_start_recipe(write_recipe, **cost) -> Path:
    path = _eval_recipe(write_recipe, **cost)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["train"]["eval_on_start"] = True
    return write_recipe(data)


def test_an_evaluation_before_the_first_step_is_priced_as_itself_not_as_the_uptime(tmp_path, write_recipe):
    """train.eval_on_start under a cap: its first batch used to be priced from clock zero, so the
    machine's uptime looked like the next batch's cost and the run stopped before step 1."""
    usd_per_hour, usd_kzt = 1.0, 500.0
    step_kzt = STEP_SECONDS / 3600 * usd_per_hour * usd_kzt
    clock = BootClock()
    recipe = load_recipe(_eval_on_start_recipe(write_recipe, usd_per_gpu_hour=usd_per_hour, usd_kzt=usd_kzt))
    result = train(recipe, out=tmp_path / "run", budget=BudgetSection(max_kzt=1000.0), clock=clock, callbacks=[clock])
    led = result.ledger
    assert result.status == "finished", led["status_reason"]
    assert led["progress"]["step"] == 8
    assert clock.eval_batches == 4 * EVAL_BATCHES  # before step 1, after steps 3 and 6, after the last
    assert led["money"]["kzt"] == pytest.approx(8 * step_kzt + clock.eval_batches * 2 * step_kzt)


def test_the_budget_cuts_an_evaluation_before_the_first_step_cleanly(tmp_path, write_recipe):
    """A cap an eval_on_start pass cannot fit in: cut at the batch that would pass it, no step
    bought, no adapter written, a stopped_budget ledger that says how to go on (no traceback)."""
    usd_per_hour, usd_kzt, cap = 1.0, 500.0, 20.0
    step_kzt = STEP_SECONDS / 3600 * usd_per_hour * usd_kzt
    clock = BootClock()
    recipe = load_recipe(_eval_on_start_recipe(write_recipe, usd_per_gpu_hour=usd_per_hour, usd_kzt=usd_kzt))
    result = train(recipe, out=tmp_path / "run", budget=BudgetSection(max_kzt=cap), clock=clock, callbacks=[clock])
    led = result.ledger
    assert result.status == led["status"] == "stopped_budget"
    assert led["progress"]["step"] == 0
    assert clock.eval_batches == 1  # the first batch (2 × 8.33 ₸) fit; a second would pass 20 ₸
    assert led["money"]["kzt"] == pytest.approx(2 * step_kzt) and led["money"]["kzt"] <= cap
    assert "evaluation" in led["budget"]["stop_reason"] and "max_kzt 20" in led["budget"]["stop_reason"]
    assert "--budget" in led["resume_command"]
    assert not (tmp_path / "run" / "adapter").exists()


QUIZ = [("Қазақстанның астанасы қай қала?", ["Алматы", "Астана", "Шымкент"], 1),
        ("Абай Құнанбаев кім болған?", ["ақын", "ғарышкер", "футболшы"], 0),
        ("Бір аптада неше күн бар?", ["бес", "жеті", "он"], 1)]

QUIZ_TASK = """task: arzan_test_quiz
custom_dataset: !function arzan.evaluation.taskdata.load
dataset_kwargs:
  schema: mc
  local_file: quiz.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "Сұрақ: {{question}}\\nЖауап:"
doc_to_choice: "{{choices}}"
doc_to_target: label
metric_list:
  - metric: acc
metadata:
  version: 1.0
"""


class BilledClock(StepClock):
    """StepClock plus `extra` seconds that the test adds while paid work after training runs."""

    extra = 0.0

    def __call__(self) -> float:
        return super().__call__() + self.extra


def _quiz_recipe(write_recipe, tmp_path, usd_per_hour, usd_kzt, generation_check=False) -> Path:
    items = [{"question": f"{i + 1}. {q}", "choices": c, "answer": a}  # 12 questions, 36 choices: lm-eval
             for i, (q, c, a) in enumerate(QUIZ * 4)]                      # dedups repeats, so each is its own
    (tmp_path / "quiz.jsonl").write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in items))
    (tmp_path / "quiz.yaml").write_text(QUIZ_TASK)
    return write_recipe(base_recipe(
        cost={"usd_per_gpu_hour": usd_per_hour, "usd_kzt": usd_kzt}, output={"save_merged": True},
        eval={"generation_check": generation_check, "tasks": ["quiz.yaml"]}))


def test_the_budget_cuts_the_evaluation_after_training_and_skips_the_merge(tmp_path, write_recipe, monkeypatch):
    """lm-eval after training and the merge are paid for too: the cap stops them (the training is
    complete, so the run is finished), and the status says how to do them later."""
    from lm_eval.models.huggingface import HFLM

    usd_per_hour, usd_kzt, cap, lm_seconds = 1.0, 500.0, 150.0, 600.0
    step_kzt = STEP_SECONDS / 3600 * usd_per_hour * usd_kzt  # 4 steps: 33 ₸; one lm-eval batch: 83 ₸
    clock, real_call, batches = BilledClock(), HFLM._model_call, []

    def billed_call(self, *args, **kwargs):  # each lm-eval batch moves the bill clock on by lm_seconds
        batches.append(1)
        clock.extra += lm_seconds
        return real_call(self, *args, **kwargs)

    monkeypatch.setattr(HFLM, "_model_call", billed_call)
    recipe = load_recipe(_quiz_recipe(write_recipe, tmp_path, usd_per_hour, usd_kzt))
    run = tmp_path / "run"
    result = train(recipe, out=run, budget=BudgetSection(max_kzt=cap), clock=clock, callbacks=[clock])
    led = result.ledger
    assert result.status == "finished" and led["progress"]["step"] == 4, led["status_reason"]
    assert len(batches) == 1, (batches, led["status_reason"])  # the first batch fit (33 + 83 ₸); the next would pass 150 ₸
    assert led["money"]["kzt"] == pytest.approx(4 * step_kzt + lm_seconds / STEP_SECONDS * step_kzt)
    assert led["money"]["kzt"] <= cap
    reason = led["status_reason"]
    assert "max_kzt 150" in reason and "the evaluation after training and the merge not done" in reason
    assert f"arzan eval {run} --tasks {tmp_path / 'quiz.yaml'}" in reason and f"arzan merge {run}" in reason
    assert (run / "adapter" / "adapter_model.safetensors").is_file()
    assert not (run / "eval.json").exists() and not (run / "merged").exists()
    assert led["summary"]["eval"] is None
    # a resume has no training left to do: it names the commands that do what is left, not --overwrite
    with pytest.raises(ArzanError) as refused:
        train(load_recipe(run / "recipe.yaml"), out=run, mode="resume", budget=BudgetSection(max_kzt=1000))
    assert "so there is no training to resume; what was left after it: " in str(refused.value)
    assert f"arzan merge {run}" in str(refused.value) and "--overwrite" not in str(refused.value)


def test_a_cap_the_generation_check_reached_loads_no_model_for_lm_eval(tmp_path, write_recipe, monkeypatch):
    """lm-eval's model load is paid for (minutes for an 8B model): with the cap already reached it
    does not start, and the status says the cap was reached, not that a 0 ₸ batch would pass it."""
    import arzan.evaluation
    from lm_eval.models.huggingface import HFLM

    clock, loads = BilledClock(), []
    real_check, real_init = arzan.evaluation.generation_check, HFLM.__init__

    def slow_check(*args, **kwargs):  # the generation check takes 600 s of billed time: 83 ₸
        clock.extra += 600.0
        return real_check(*args, **kwargs)

    def counted_init(self, *args, **kwargs):
        loads.append(1)
        return real_init(self, *args, **kwargs)

    monkeypatch.setattr(arzan.evaluation, "generation_check", slow_check)
    monkeypatch.setattr(HFLM, "__init__", counted_init)
    recipe = load_recipe(_quiz_recipe(write_recipe, tmp_path, 1.0, 500.0, generation_check=True))
    run = tmp_path / "run"
    result = train(recipe, out=run, budget=BudgetSection(max_kzt=100.0), clock=clock, callbacks=[clock])
    reason = result.ledger["status_reason"]
    assert result.status == "finished" and result.ledger["summary"]["generation_check"] is not None
    assert loads == []  # the cap was passed before lm-eval: no model load
    # 33 ₸ of steps + two generation passes (adapter off, then on) of 83 ₸ each
    assert "max_kzt 100 ₸: spent 200.00 ₸, already past it, so the evaluation after training did not start" in reason
    assert "the evaluation after training and the merge not done" in reason


def test_a_resume_waits_for_an_eval_that_is_billing_into_the_run(tmp_path, write_recipe):
    """`arzan eval` appends its session to cost.json at its end; a resume started meanwhile would write
    its own ledger over it. While the eval's mark is there (and its process alive) the resume refuses."""
    import socket

    from arzan.runfolder import EVAL_LOCK, evaluating

    path = _short_recipe(write_recipe, steps=4)
    run = tmp_path / "run"
    first = train(load_recipe(path), out=run, callbacks=[SignalAt(2)])
    assert first.status == "interrupted"
    scorer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (run / EVAL_LOCK).write_text(json.dumps({"host": socket.gethostname(), "pid": scorer.pid}))
        with pytest.raises(ArzanError, match=rf"an arzan eval \(pid {scorer.pid} on .*\) is scoring this run"):
            train(load_recipe(path), out=run, mode="resume")
        assert json.loads((run / "cost.json").read_text())["status"] == "interrupted"  # untouched
    finally:
        scorer.kill()
        scorer.wait()
    done = train(load_recipe(path), out=run, mode="resume")  # the eval's process is gone: a stale mark
    assert done.status == "finished"
    with evaluating(run):
        assert (run / EVAL_LOCK).is_file()
    assert not (run / EVAL_LOCK).exists()


def test_a_checkpoint_has_its_ledger_copy_before_it_counts_as_complete(tmp_path, write_recipe, monkeypatch):
    """trainer_state.json makes a checkpoint complete (runfolder.last_checkpoint), and the Trainer
    deletes older checkpoints right after it, before any callback runs: a kill there must still
    leave the copy a resume rewinds the bill by. So the copy is already there when it is written."""
    from transformers.trainer_callback import TrainerState

    seen = []
    real = TrainerState.save_to_json

    def save_to_json(self, json_path):
        folder = Path(json_path).parent
        if folder.name.startswith("checkpoint-"):
            seen.append((folder.name, (folder / "arzan_ledger.json").is_file()))
        return real(self, json_path)

    monkeypatch.setattr(TrainerState, "save_to_json", save_to_json)
    path = write_recipe(base_recipe(train={"max_steps": 4, "max_length": 64, "save_steps": 2, "logging_steps": 1}))
    train(load_recipe(path), out=tmp_path / "run")
    assert seen == [("checkpoint-2", True), ("checkpoint-4", True)]
    copy = json.loads((tmp_path / "run" / "checkpoints" / "checkpoint-4" / "arzan_ledger.json").read_text("utf-8"))
    assert copy["progress"]["step"] == 4  # rewritten once the save is done (on_save), not the early copy


def test_a_resume_refuses_data_changed_since_the_run_started(tmp_path, write_recipe):
    """Rows cut from the local file between sessions would train the rest on other data, and the
    ledger would name only the new file; refused before anything is billed."""
    from arzan.data import resolve_data_path

    data = tmp_path / "kk.jsonl"
    data.write_bytes(resolve_data_path("arzan://sample/kk_arith.jsonl", tmp_path).read_bytes())
    recipe = base_recipe(train={"max_length": 64, "max_steps": 8, "per_device_train_batch_size": 4,
                                "logging_steps": 2, "save_steps": 2}, eval={"generation_check": False})
    recipe["data"] = {"sources": [{"path": "kk.jsonl", "format": "alpaca"}]}  # relative, as README teaches
    path = write_recipe(recipe)
    run = tmp_path / "run"
    first = train(load_recipe(path), out=run, callbacks=[SignalAt(3)])
    assert first.status == "interrupted"
    whole = data.read_bytes()
    data.write_bytes(b"\n".join(whole.splitlines()[:20]) + b"\n")
    ledger_before = (run / "cost.json").read_text()
    with pytest.raises(ArzanError, match=rf"{data.name}: changed since this run started \(sha256:"):
        train(load_recipe(path), out=run, mode="resume")
    assert (run / "cost.json").read_text() == ledger_before
    data.write_bytes(whole)
    assert train(load_recipe(path), out=run, mode="resume").status == "finished"


def test_a_merge_made_between_sessions_is_kept_aside_once_the_resume_replaces_its_adapter(tmp_path, write_recipe):
    """merged/ must be the run's adapter merged: a resume that trains on moves the earlier one aside
    (paid for, never deleted), and save_merged makes the new one."""
    from safetensors.torch import load_file

    from arzan.export import merge_adapter

    step_kzt = STEP_SECONDS / 3600 * 1.0 * 500
    path = _short_recipe(write_recipe, budget={"max_kzt": 2.5 * step_kzt}, output={"save_merged": True})
    clock = StepClock()
    run = tmp_path / "run"
    assert train(load_recipe(path), out=run, clock=clock, callbacks=[clock]).status == "stopped_budget"
    assert not (run / "merged").exists()  # a budget stop merges nothing
    merge_adapter(run)  # the user's own merge of the step-2 adapter
    early = load_file(run / "merged" / "model.safetensors")
    clock2 = StepClock()
    done = train(load_recipe(path), out=run, mode="resume", budget=BudgetSection(max_kzt=10 * step_kzt),
                 clock=clock2, callbacks=[clock2])
    assert done.status == "finished" and done.ledger["progress"]["step"] == 4
    [aside] = run.glob("merged.replaced-*")
    kept = load_file(aside / "model.safetensors")
    assert kept.keys() == early.keys() and all((kept[k] == early[k]).all() for k in kept)
    fresh = load_file(run / "merged" / "model.safetensors")
    assert any(not (fresh[k] == early[k]).all() for k in fresh)  # merged from the step-4 adapter


def test_a_merge_of_the_final_adapter_stays_when_the_resume_only_redoes_the_work_after_training(
        tmp_path, write_recipe, monkeypatch):
    from arzan import runtime
    from arzan.export import merge_adapter

    path = _short_recipe(write_recipe)
    real = runtime.free_accelerator_memory
    monkeypatch.setattr(runtime, "free_accelerator_memory", lambda: (_ for _ in ()).throw(RuntimeError("CUDA error")))
    run = tmp_path / "run"
    with pytest.raises(Failed, match="CUDA error"):
        train(load_recipe(path), out=run)
    merge_adapter(run)
    before = (run / "merged" / "model.safetensors").read_bytes()
    monkeypatch.setattr(runtime, "free_accelerator_memory", real)
    assert train(load_recipe(path), out=run, mode="resume").status == "finished"
    assert (run / "merged" / "model.safetensors").read_bytes() == before
    assert not list(run.glob("merged.replaced-*"))


def test_a_generation_check_out_of_memory_after_the_last_step_leaves_a_finished_run(tmp_path, write_recipe,
                                                                                     monkeypatch):
    """The adapter is saved when the sample answers run out of memory: the run is finished, its
    reason says what failed, and the lm-eval and merge after it still run."""
    import torch

    from arzan import runtime

    def oom(*a, **k):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 512.00 MiB")

    monkeypatch.setattr(runtime, "check_generation", oom)
    path = _short_recipe(write_recipe, eval={"generation_check": True}, output={"save_merged": True})
    done = train(load_recipe(path), out=tmp_path / "run")
    assert done.status == "finished" and done.ledger["progress"]["step"] == 4
    assert done.ledger["status_reason"] == ("training finished; the generation check after it failed "
                                            "(OutOfMemoryError: CUDA out of memory. Tried to allocate 512.00 MiB)")
    assert (tmp_path / "run" / "merged" / "config.json").is_file()  # the merge after it still ran



class CtrlCTwiceAt(TrainerCallback):
    """The second Ctrl-C, as it lands: a KeyboardInterrupt before the first one's checkpoint exists."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt


def test_a_run_cut_by_a_second_ctrl_c_before_any_checkpoint_resumes_from_the_start(tmp_path, write_recipe):
    """The stop message said `--resume continues from the start`; the resume must then do that (the
    steps paid for stay in the money, as lost steps) instead of asking for a checkpoint never saved."""
    path = _short_recipe(write_recipe, steps=6)
    clock = StepClock()
    with pytest.raises(KeyboardInterrupt):
        train(load_recipe(path), out=tmp_path / "run", clock=clock, callbacks=[clock, CtrlCTwiceAt(3)])
    cut = json.loads((tmp_path / "run" / "cost.json").read_text())
    assert cut["status"] == "interrupted" and cut["progress"]["step"] == 3
    assert cut["status_reason"] == "interrupted by a second signal; --resume continues from the start"
    assert not list((tmp_path / "run" / "checkpoints").glob("checkpoint-*"))
    clock2 = StepClock()
    done = train(load_recipe(path), out=tmp_path / "run", mode="resume", clock=clock2, callbacks=[clock2])
    assert done.status == "finished" and done.ledger["progress"]["step"] == 6
    first = done.ledger["sessions"][0]
    assert first["lost_steps"] == [0, 3] and first["tokens"]["trained"] == 0  # paid for, trained again, counted once
    step_kzt = STEP_SECONDS / 3600 * 1.0 * 500
    assert done.ledger["money"]["kzt"] == pytest.approx(9 * step_kzt)


def test_a_run_stopped_before_any_step_is_told_the_cap_its_stop_named(tmp_path, write_recipe):
    """No step measured: the stop priced the 1000 steps left by the estimate (the ledger cannot say a
    step's time), so the refused resume repeats that cap instead of one that pays for a setup alone."""
    from arzan.cost.ledger import new_ledger
    from arzan.cost.prices import Price, resolve_exchange
    from arzan.resume import preflight_resume

    recipe = load_recipe(_short_recipe(write_recipe, budget={"max_kzt": 3}))
    ledger = new_ledger("t", Price(usd_per_gpu_hour=1.0), resolve_exchange(500))
    ledger.money.kzt, ledger.progress.max_steps = 5.84, 1000
    ledger.status, ledger.resume_command = "stopped_budget", f"arzan train --resume {tmp_path} --budget 38KZT"
    with pytest.raises(ArzanError, match=r"--budget 38KZT$"):
        preflight_resume(recipe, ledger, tmp_path)
