"""CostMeter with an injected clock: money = time x price, budget stops, resume, and a real Trainer."""

import json
import math
import sys
import types
from datetime import datetime, timedelta, timezone

import pytest
import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    Trainer,
    TrainerCallback,
    TrainerControl,
    TrainerState,
    TrainingArguments,
)

from arzan.cost.ledger import Hardware, Ledger, money_for, read_ledger
from arzan.cost.meter import CostMeter
from arzan.cost.prices import Exchange, Price, load_catalog

FX = Exchange(usd_kzt=500.0, source="test", as_of="2026-11-01")


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


class Now:
    def __init__(self):
        self.t = datetime(2026, 11, 23, 18, 0, tzinfo=timezone.utc)

    def __call__(self):
        self.t += timedelta(seconds=1)
        return self.t


class Counter:
    seen = 0
    trained = 0


def make_meter(tmp_path, price, ledger=None, clock=None, **kw):
    clock = clock or Clock()
    ledger = ledger or Ledger(run_id="t", price=price, exchange=FX, hardware=Hardware(device="cuda"))
    meter = CostMeter(tmp_path / "cost.json", ledger, price, FX, clock=clock, now=Now(), **kw)
    return meter, clock


def test_money_is_phase_time_times_price(tmp_path):
    price = Price(gpu=None, usd_per_gpu_hour=7.2, gpu_count=2, overhead_s=30.0, source="user")
    meter, clock = make_meter(tmp_path, price)
    with meter.phase("setup"):
        clock.t += 10
    clock.t += 1000  # outside any phase: not billed
    with meter.phase("train"):
        clock.t += 50
    led = meter.finish("finished")
    billed = 10 + 50 + price.overhead_s
    usd = billed / 3600 * price.usd_per_gpu_hour * price.gpu_count
    assert (led.phases.setup, led.phases.train, led.billed_seconds) == (10, 50, billed)
    assert led.money.usd == pytest.approx(usd)
    assert led.money.kzt == pytest.approx(usd * FX.usd_kzt)
    assert led.gpu_hours == pytest.approx(billed / 3600 * price.gpu_count)
    on_disk = read_ledger(tmp_path / "cost.json")
    assert on_disk.status == "finished" and on_disk.money.kzt == pytest.approx(led.money.kzt)
    assert on_disk.energy.basis == "unavailable" and on_disk.energy.kwh is None  # no GPU named


def test_phases_never_nest_and_have_known_names(tmp_path):
    meter, _ = make_meter(tmp_path, Price())
    with pytest.raises(ValueError):
        with meter.phase("lunch"):
            pass
    with meter.phase("data"):
        with pytest.raises(RuntimeError, match="twice"):
            with meter.phase("train"):
                pass


def test_on_log_adds_cost_keys_writes_metrics_and_flushes_on_interval(tmp_path):
    price = Price(usd_per_gpu_hour=3.6)  # 0.001 USD per second
    counter = Counter()
    meter, clock = make_meter(tmp_path, price, token_counter=counter, metrics_path=tmp_path / "metrics.jsonl",
                              flush_every_s=30)
    state, control, args = TrainerState(), TrainerControl(), None
    meter.on_train_begin(args, state, control)
    clock.t += 10
    state.global_step, state.epoch = 5, 0.5
    counter.seen, counter.trained = 4000, 2500
    state.log_history.append({"loss": 2.0, "learning_rate": 1e-4, "grad_norm": 0.3, "epoch": 0.5, "step": 5})
    logs = {"loss": 2.0, "learning_rate": 1e-4, "grad_norm": 0.3, "epoch": 0.5}
    meter.on_log(args, state, control, logs=logs)
    kzt = money_for(10, price, FX)[1]
    assert logs["cost/spent_kzt"] == pytest.approx(kzt)
    assert logs["cost/spent_usd"] == pytest.approx(kzt / FX.usd_kzt)
    assert logs["cost/tokens_trained"] == 2500
    assert logs["cost/tokens_per_s"] == pytest.approx(4000 / 10)
    assert logs["cost/kzt_per_1m_tokens"] == pytest.approx(kzt / 2500 * 1e6)
    assert logs["cost/gpu_hours"] == pytest.approx(10 / 3600)
    assert state.log_history[-1]["cost/spent_kzt"] == logs["cost/spent_kzt"]
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["step"] == 5 and row["tokens_seen"] == 4000 and row["elapsed_s"] == pytest.approx(10)
    assert row["spent_kzt"] == pytest.approx(kzt) and row["loss"] == 2.0 and "eval_loss" not in row
    assert read_ledger(tmp_path / "cost.json").billed_seconds == 0  # 10 s < flush_every_s: not yet written

    clock.t += 25
    meter.on_log(args, state, control, logs={"eval_loss": 1.5})
    assert read_ledger(tmp_path / "cost.json").billed_seconds == pytest.approx(35)
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[-1])["eval_loss"] == 1.5


def run_steps(meter, clock, max_steps, seconds_per_step=1.0):
    state, control = TrainerState(), TrainerControl()
    state.max_steps = max_steps
    meter.on_train_begin(None, state, control)
    for step in range(1, max_steps + 1):
        clock.t += seconds_per_step
        state.global_step = step
        meter.on_step_end(None, state, control)
        if control.should_training_stop:
            break
    return state, control


@pytest.mark.parametrize("cap", ["max_kzt", "max_usd", "max_hours"])
def test_budget_stops_before_the_step_that_would_pass_the_cap(tmp_path, cap):
    price = Price(usd_per_gpu_hour=3600.0)  # 1 USD per second, so one 1-second step costs:
    step_usd = 1.0
    step_kzt = step_usd * FX.usd_kzt
    caps = {"max_kzt": 5.6 * step_kzt, "max_usd": 5.6 * step_usd, "max_hours": 5.6 / 3600}
    meter, clock = make_meter(tmp_path, price, **{cap: caps[cap]})
    state, control = run_steps(meter, clock, max_steps=100)
    expected = math.floor(5.6)  # the last step whose successor would not fit
    assert state.global_step == expected
    assert control.should_training_stop and control.should_save
    led = meter.ledger
    assert led.status == "stopped_budget" and cap in led.budget.stop_reason
    assert led.money.kzt <= caps["max_kzt"] and led.money.usd == pytest.approx(expected * step_usd)
    assert read_ledger(tmp_path / "cost.json").status == "stopped_budget"
    done = meter.finish("finished")  # train.py says finished; the bill keeps why it stopped
    assert done.status == "stopped_budget"
    # the resume command raises the cap to what the whole run would cost, the steps left with 10% to spare
    head, raised = done.resume_command.split(" --budget ")
    assert head == f"arzan train --resume {tmp_path}"
    from arzan.cli import parse_budget

    unit = {"max_kzt": step_kzt, "max_usd": step_usd, "max_hours": 1 / 3600}[cap]
    full = (expected + (100 - expected) * 1.1) * unit
    rounding = {"max_kzt": 1, "max_usd": 0.01, "max_hours": 0.01}[cap]
    assert full * (1 - 1e-9) <= getattr(parse_budget(raised), cap) <= full + rounding


def test_a_slow_step_prices_the_next_one_so_a_stall_does_not_pass_the_cap(tmp_path):
    """Steps of 1 s, then one of 4 s (a stall, a warm-up) with 7 of a 10 s cap spent: the mean step
    (1.75 s) would start a 5th step that may take 4 s again; priced at the slower last step, it is
    not started. Steady 1 s steps are priced at 1 s and run to the cap's edge."""
    price = Price(usd_per_gpu_hour=3600.0)  # 1 USD per second

    def stops_after(durations):
        meter, clock = make_meter(tmp_path, price, max_usd=10.0)
        state, control = TrainerState(), TrainerControl()
        state.max_steps = 100
        meter.on_train_begin(None, state, control)
        for step, seconds in enumerate(durations, start=1):
            meter.on_step_begin(None, state, control)
            clock.t += seconds
            state.global_step = step
            meter.on_step_end(None, state, control)
            if control.should_training_stop:
                return step, meter.ledger.money.usd
        return None, meter.ledger.money.usd

    assert stops_after([1, 1, 1, 4, 4]) == (4, pytest.approx(7.0))
    assert stops_after([1] * 12) == (10, pytest.approx(10.0))  # the 10th step reaches the cap, passes nothing


def test_an_evaluation_between_steps_is_not_priced_as_the_next_step(tmp_path):
    """1 s steps with a 3 s evaluation after step 3: the step after it took 1 s, so with 7 of a 10 s cap
    spent the run goes on (pricing the eval as a step would stop it and sell the user a resume)."""
    meter, clock = make_meter(tmp_path, Price(usd_per_gpu_hour=3600.0), max_usd=10.0)
    state, control = TrainerState(), TrainerControl()
    state.max_steps = 100
    meter.on_train_begin(None, state, control)
    for step in range(1, 5):
        meter.on_step_begin(None, state, control)
        clock.t += 1
        state.global_step = step
        meter.on_step_end(None, state, control)
        if step == 3:
            clock.t += 3  # the evaluation, between step 3's end and step 4's begin
    assert meter.ledger.money.usd == pytest.approx(7.0) and not control.should_training_stop


def test_no_cap_runs_to_the_end_and_projects_the_final_cost(tmp_path):
    price = Price(usd_per_gpu_hour=1.8)
    meter, clock = make_meter(tmp_path, price)
    with meter.phase("setup"):
        clock.t += 20
    state, control = run_steps(meter, clock, max_steps=4, seconds_per_step=2.0)
    assert state.global_step == 4 and not control.should_training_stop
    # mid-run projection: spent so far + remaining steps x mean step cost
    meter2, clock2 = make_meter(tmp_path / "b", price)
    with meter2.phase("setup"):
        clock2.t += 20
    st, ctl = TrainerState(), TrainerControl()
    st.max_steps = 300
    meter2.on_train_begin(None, st, ctl)
    for s in range(1, 41):
        clock2.t += 2.0
        st.global_step = s
        meter2.on_step_end(None, st, ctl)
    spent = money_for(20 + 40 * 2.0, price, FX)[1]
    projected = spent + (300 - 40) * money_for(2.0, price, FX)[1]
    assert meter2.ledger.budget.projected_kzt == pytest.approx(projected)
    assert meter2.progress_line() == f"step 40/300 · {spent:.1f} ₸ spent · ~{projected:.0f} ₸ at end"
    # after the last step the save is still to pay: the line never says less than is spent, and the
    # finished ledger keeps what it cost, not the projection made at the last step
    meter.on_train_end(None, state, control)
    with meter.phase("save"):
        clock.t += 30
    assert "~" + meter.progress_line().split("~")[1] == f"~{meter.ledger.money.kzt:.0f} ₸ at end"
    led = meter.finish("finished")
    assert (led.budget.projected_kzt, led.budget.projected_basis) == (led.money.kzt, "measured")


def test_resume_appends_a_session_and_counts_nothing_twice(tmp_path):
    price = Price(usd_per_gpu_hour=3.6)
    c1 = Counter()
    meter, clock = make_meter(tmp_path, price, token_counter=c1, flush_every_s=0)
    state, control = run_steps(meter, clock, max_steps=3, seconds_per_step=5.0)
    c1.seen, c1.trained = 300, 200
    meter.on_step_end(None, state, control)
    first = read_ledger(tmp_path / "cost.json")  # the process is killed here: session 0 still "running"
    assert first.sessions[0].status == "running"

    c2 = Counter()
    meter2, clock2 = make_meter(tmp_path, price, ledger=first, token_counter=c2)
    assert [s.status for s in meter2.ledger.sessions] == ["interrupted", "running"]
    st, ctl = TrainerState(), TrainerControl()
    st.max_steps, st.global_step = 6, 3
    meter2.on_train_begin(None, st, ctl)
    for s in (4, 5, 6):
        clock2.t += 5.0
        st.global_step = s
        meter2.on_step_end(None, st, ctl)
    c2.seen, c2.trained = 330, 220
    led = meter2.finish("finished")
    s0, s1 = led.sessions
    assert (s0.billed_seconds, s1.billed_seconds) == (15.0, 15.0)
    assert s0.money.kzt == pytest.approx(first.money.kzt)  # the old session is not recounted
    assert led.billed_seconds == 30.0
    assert led.money.kzt == pytest.approx(money_for(30.0, price, FX)[1])
    assert (led.tokens.seen, led.tokens.trained) == (630, 420)
    assert s1.steps == [3, 6] and led.status == "finished" and led.resume_command is None


def test_energy_estimated_from_tdp_of_the_priced_gpu(tmp_path):
    price = Price(gpu="T4", usd_per_gpu_hour=0.18, gpu_count=2)
    meter, clock = make_meter(tmp_path, price, grid_kg_co2_per_kwh=0.6)
    with meter.phase("train"):
        clock.t += 3600
    led = meter.finish("finished")
    kwh = load_catalog().gpus["T4"]["tdp_watts"] * 2 * 3600 / 3.6e6
    assert (led.energy.basis, led.energy.method) == ("estimated", "tdp")
    assert led.energy.kwh == pytest.approx(kwh) and led.energy.co2_kg == pytest.approx(kwh * 0.6)


def test_a_cpu_run_priced_as_a_gpu_is_not_given_that_gpus_power(tmp_path, monkeypatch):
    """`--gpu A100-40GB` on a CPU prices the run as an A100 but it drew a CPU's power: no TDP figure."""
    import arzan.cost.energy as energy

    monkeypatch.setattr(energy, "_rapl_reader", lambda: None)  # no CPU counters either, as in a container
    price = Price(gpu="A100-40GB", usd_per_gpu_hour=1.2)
    meter, clock = make_meter(tmp_path, price, ledger=Ledger(run_id="t", price=price, exchange=FX,
                                                             hardware=Hardware(device="cpu")))
    with meter.phase("train"):
        clock.t += 3600
    led = meter.finish("finished")
    assert led.energy.method == "none" and led.energy.kwh is None
    assert led.money.usd == pytest.approx(1.2)  # still billed as asked


def test_energy_measured_with_nvml_when_present(tmp_path, monkeypatch):
    """A shared 4-GPU host with CUDA_VISIBLE_DEVICES=3: torch's GPU 0 is NVML's GPU 3, found by UUID,
    and GPU 0 (someone else's job) is not billed as this run's energy."""
    host_uuids = [f"GPU-0000000{i}-aaaa-bbbb-cccc-dddddddddddd" for i in range(4)]
    counter = {u: 1_000_000.0 for u in host_uuids}  # millijoules per physical GPU
    fake = types.SimpleNamespace(
        nvmlInit=lambda: None,
        nvmlDeviceGetHandleByUUID=lambda u: host_uuids.index(u),
        nvmlDeviceGetTotalEnergyConsumption=lambda h: counter[host_uuids[h]],
    )
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    visible = types.SimpleNamespace(uuid=host_uuids[3].removeprefix("GPU-"))  # torch prints it without "GPU-"
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: visible)
    meter, clock = make_meter(tmp_path, Price(gpu="H100", usd_per_gpu_hour=2.0))
    with meter.phase("train"):
        clock.t += 60
        counter[host_uuids[3]] += 7.2e9  # 7.2 MJ = 2 kWh
        counter[host_uuids[0]] += 1.8e10
    led = meter.finish("finished")
    assert (led.energy.basis, led.energy.method) == ("measured", "nvml")
    assert led.energy.kwh == pytest.approx(2.0)


def test_on_save_puts_the_ledger_in_the_checkpoint(tmp_path):
    meter, clock = make_meter(tmp_path, Price(usd_per_gpu_hour=1.0))
    ckpt = tmp_path / "checkpoints" / "checkpoint-7"
    ckpt.mkdir(parents=True)
    state = TrainerState()
    state.global_step = 7
    meter.on_train_begin(None, state, TrainerControl())
    clock.t += 12
    flushed = read_ledger(tmp_path / "cost.json").updated_at
    meter.on_save(types.SimpleNamespace(output_dir=str(tmp_path / "checkpoints")), state, TrainerControl())
    snap = read_ledger(ckpt / "arzan_ledger.json")
    assert snap.billed_seconds == pytest.approx(12) and snap.money.usd == pytest.approx(12 / 3600)
    assert snap.updated_at > flushed  # the copy says when it was taken, not when cost.json was last written


# --- a real transformers.Trainer on a 2-layer random Llama ---

class CountingCollator:
    """What the training code's collator does: stack, and count tokens seen / trained on."""

    def __init__(self):
        self.seen = self.trained = 0

    def __call__(self, features):
        ids = torch.stack([f["input_ids"] for f in features])
        labels = ids.clone()
        labels[:, :3] = -100  # the prompt: seen, not trained on
        self.seen += ids.numel()
        self.trained += int((labels != -100).sum())
        return {"input_ids": ids, "labels": labels}


class Rows(torch.utils.data.Dataset):
    def __init__(self, n=32, length=12):
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, 64, (n, length), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i]}


class Recorder(TrainerCallback):
    """Stands in for TensorBoard/W&B: it sees the logs dict after the meter did."""

    def __init__(self):
        self.logs = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs))


def tiny_trainer(tmp_path, collator, callbacks, max_steps):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32)
    args = TrainingArguments(output_dir=str(tmp_path / "checkpoints"), max_steps=max_steps,
                             per_device_train_batch_size=2, logging_steps=2, save_steps=3, report_to="none",
                             use_cpu=True, disable_tqdm=True, learning_rate=1e-3, save_only_model=True)
    return Trainer(model=LlamaForCausalLM(cfg), args=args, train_dataset=Rows(), data_collator=collator,
                   callbacks=callbacks)


def test_real_trainer_cost_keys_reach_log_history_and_trackers(tmp_path):
    collator, recorder = CountingCollator(), Recorder()
    meter = CostMeter(tmp_path / "cost.json", Ledger(run_id="tiny", exchange=FX), Price(usd_per_gpu_hour=3.6),
                      FX, token_counter=collator, metrics_path=tmp_path / "metrics.jsonl")
    trainer = tiny_trainer(tmp_path, collator, [recorder], max_steps=6)
    meter.attach(trainer)
    assert trainer.callback_handler.callbacks[0] is meter
    trainer.train()
    led = meter.finish("finished")

    step_logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(step_logs) == 3
    for h in step_logs:
        assert h["cost/spent_kzt"] > 0 and h["cost/tokens_trained"] > 0 and "cost/kzt_per_1m_tokens" in h
    assert all("cost/spent_kzt" in logs for logs in recorder.logs)
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["loss"] is not None] == [2, 4, 6]
    assert rows[-1]["tokens_seen"] == collator.seen
    assert (led.tokens.seen, led.tokens.trained) == (collator.seen, collator.trained)
    assert led.money.kzt == pytest.approx(money_for(led.billed_seconds, led.price, FX)[1])
    assert led.summary.final_loss == step_logs[-1]["loss"]
    for step in (3, 6):
        snap = read_ledger(tmp_path / "checkpoints" / f"checkpoint-{step}" / "arzan_ledger.json")
        assert snap.progress.step == step
    assert read_ledger(tmp_path / "cost.json").status == "finished"


def test_real_trainer_stops_on_budget_and_saves_a_checkpoint(tmp_path):
    clock = Clock()

    class Tick(TrainerCallback):  # every optimizer step takes exactly 2 seconds of fake time
        def on_step_begin(self, args, state, control, **kwargs):
            clock.t += 2.0

    price = Price(usd_per_gpu_hour=36.0)  # 0.01 USD/s
    step_kzt = money_for(2.0, price, FX)[1]
    cap = 4.5 * step_kzt
    meter = CostMeter(tmp_path / "cost.json", Ledger(run_id="tiny", exchange=FX), price, FX,
                      max_kzt=cap, clock=clock, now=Now())
    trainer = tiny_trainer(tmp_path, CountingCollator(), [Tick()], max_steps=50)
    meter.attach(trainer)
    trainer.train()
    led = meter.finish("finished")
    assert trainer.state.global_step == math.floor(cap / step_kzt)
    assert led.status == "stopped_budget" and led.money.kzt <= cap
    snap = read_ledger(tmp_path / "checkpoints" / f"checkpoint-{trainer.state.global_step}" / "arzan_ledger.json")
    assert snap.status == "stopped_budget"


def test_cpu_energy_measured_from_rapl_counters_with_wraparound(tmp_path, monkeypatch):
    import arzan.cost.energy as energy_mod

    zone = tmp_path / "intel-rapl:0"
    zone.mkdir()
    (zone / "max_energy_range_uj").write_text("1000000000\n")
    (zone / "energy_uj").write_text("999000000\n")
    monkeypatch.setattr(energy_mod, "RAPL_ROOT", tmp_path)
    meter, clock = make_meter(tmp_path, Price(usd_per_gpu_hour=0.0))
    (zone / "energy_uj").write_text("2600000\n")  # wrapped: 1,000,000 + 2,600,000 uJ used
    with meter.phase("train"):
        clock.t += 10
    led = meter.finish("finished")
    assert (led.energy.basis, led.energy.method) == ("measured", "rapl")
    assert led.energy.kwh == pytest.approx(3_600_000 / 3.6e12)
    assert led.energy.co2_kg == pytest.approx(led.energy.kwh * led.energy.grid_kg_co2_per_kwh)


def test_ledger_is_written_during_a_long_phase_without_trainer_events(tmp_path):
    """A model download or one long optimizer step sends no Trainer event; the flusher still writes."""
    import time

    price = Price(usd_per_gpu_hour=3600.0)
    meter, clock = make_meter(tmp_path, price, flush_every_s=0.05)
    meter.start_flusher()
    with meter.phase("setup"):
        clock.t += 42  # the download has taken 42 s of the bill so far
        deadline = time.monotonic() + 10
        while read_ledger(tmp_path / "cost.json").phases.setup == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        written = read_ledger(tmp_path / "cost.json")
    assert written.phases.setup == pytest.approx(42) and written.money.usd == pytest.approx(42)
    assert written.status == "running"
    done = meter.finish("finished")
    assert meter._flusher is None and done.phases.setup == pytest.approx(42)


def test_seconds_spent_before_the_meter_existed_are_billed_once(tmp_path):
    price = Price(usd_per_gpu_hour=3600.0)
    meter, clock = make_meter(tmp_path, price)
    meter.add_seconds("data", 7.5)
    with meter.phase("data"):
        clock.t += 2.5
    led = meter.finish("finished")
    assert led.phases.data == pytest.approx(10) and led.money.usd == pytest.approx(10)
    with pytest.raises(ValueError, match="unknown phase"):
        meter.add_seconds("download", 1)


@pytest.mark.parametrize("text, field, value", [
    ("5000KZT", "max_kzt", 5000.0), ("5000₸", "max_kzt", 5000.0), ("5000 тг", "max_kzt", 5000.0),
    ("5 000 теңге", "max_kzt", 5000.0), ("5,000KZT", "max_kzt", 5000.0), ("10USD", "max_usd", 10.0),
    ("$10", "max_usd", 10.0), ("3h", "max_hours", 3.0), ("90m", "max_hours", 1.5), ("30min", "max_hours", 0.5),
    ("1,5h", "max_hours", 1.5), ("2,5USD", "max_usd", 2.5), ("12,000.50KZT", "max_kzt", 12000.5),
    ("0,005h", "max_hours", 0.005),
])
def test_budget_is_read_the_way_people_write_it(text, field, value):
    from arzan.cli import parse_budget

    assert getattr(parse_budget(text), field) == pytest.approx(value)


@pytest.mark.parametrize("text", ["5000", "0KZT", "-3h", "lotsKZT", "5m$", "infUSD"])
def test_a_budget_that_is_not_an_amount_is_one_line(text):
    from arzan.cli import parse_budget
    from arzan.errors import ArzanError

    with pytest.raises(ArzanError, match=r"--budget: .* is not an amount like 5000KZT"):
        parse_budget(text)
