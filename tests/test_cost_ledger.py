"""Ledger arithmetic, the schema contract in docs/architecture.md, and atomic writes."""

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest

import arzan.fileio as fileio_mod
from arzan.cost.ledger import (
    Hardware,
    Ledger,
    Session,
    apply_totals,
    co2_kg,
    money_for,
    per_million,
    read_ledger,
    recover_killed_session,
    rewind_to_checkpoint,
    write_ledger,
)
from arzan.cost.prices import Exchange, Price
from arzan.errors import ArzanError

T0 = datetime(2026, 11, 23, 18, 0, tzinfo=timezone.utc)
FX = Exchange(usd_kzt=512.5, source="test", as_of="2026-11-01")


def make_ledger(**kw) -> Ledger:
    kw.setdefault("hardware", Hardware(device="cuda", gpu_count=2))
    return Ledger(run_id="t", started_at=T0, price=Price(usd_per_gpu_hour=1.8, gpu_count=2), exchange=FX, **kw)


def test_money_is_time_times_price_times_gpus_then_converted():
    price = Price(usd_per_gpu_hour=1.8, gpu_count=2)
    usd, kzt = money_for(1500.0, price, FX)
    assert usd == pytest.approx(1500 / 3600 * 1.8 * 2)
    assert kzt == pytest.approx(usd * FX.usd_kzt)
    assert money_for(0.0, price, FX) == (0.0, 0.0)


def test_a_cpu_run_with_no_gpu_priced_uses_no_gpu_hours():
    led = make_ledger(hardware=Hardware(device="cpu"))
    led.sessions = [Session(index=0, started_at=T0, billed_seconds=360.0)]
    apply_totals(led)
    assert led.billed_seconds == 360.0 and led.gpu_hours == 0.0
    led.price = Price(gpu="T4", usd_per_gpu_hour=0.18)  # priced as a GPU: its hours count
    apply_totals(led)
    assert led.gpu_hours == pytest.approx(0.1)


def test_per_million_and_co2():
    assert per_million(3.0, 1_500_000) == pytest.approx(2.0)
    assert per_million(3.0, 0) is None
    assert co2_kg(2.5, 0.64) == pytest.approx(2.5 * 0.64)
    assert co2_kg(None, 0.64) is None


def test_totals_are_sums_over_sessions():
    led = make_ledger()
    led.energy.grid_kg_co2_per_kwh = 0.7
    a = Session(index=0, started_at=T0, billed_seconds=100.0, kwh=0.2)
    a.phases.setup, a.phases.train = 10.0, 90.0
    a.tokens.seen, a.tokens.trained = 9000, 6000
    a.money.usd, a.money.kzt = money_for(a.billed_seconds, led.price, FX)
    b = Session(index=1, started_at=T0, billed_seconds=50.0, kwh=None)
    b.phases.train = 50.0
    b.tokens.seen, b.tokens.trained = 5000, 4000
    b.money.usd, b.money.kzt = money_for(b.billed_seconds, led.price, FX)
    led.sessions = [a, b]
    apply_totals(led)
    assert led.phases.train == 140.0 and led.phases.setup == 10.0
    assert led.billed_seconds == 150.0
    assert led.gpu_hours == pytest.approx(150.0 / 3600 * led.price.gpu_count)
    assert (led.tokens.seen, led.tokens.trained) == (14000, 10000)
    assert led.tokens.per_second == pytest.approx(14000 / 140.0)
    assert led.money.usd == pytest.approx(a.money.usd + b.money.usd)
    assert led.money.kzt == pytest.approx(led.money.usd * FX.usd_kzt)
    assert led.money.kzt_per_1m_tokens == pytest.approx(led.money.kzt / 10000 * 1e6)
    assert led.budget.spent_kzt == led.money.kzt
    assert led.energy.kwh == pytest.approx(0.2) and led.energy.co2_kg == pytest.approx(0.2 * 0.7)
    apply_totals(led)  # idempotent: recomputing never adds a session twice
    assert led.money.usd == pytest.approx(a.money.usd + b.money.usd)

    # a standalone `arzan eval` afterwards is on the bill, but it trained no token
    per_token = led.money.kzt_per_1m_tokens
    c = Session(index=2, started_at=T0, billed_seconds=30.0)
    c.phases.eval = 30.0
    c.money.usd, c.money.kzt = money_for(c.billed_seconds, led.price, FX)
    led.sessions.append(c)
    apply_totals(led)
    assert led.money.kzt == pytest.approx((a.money.usd + b.money.usd + c.money.usd) * FX.usd_kzt)
    assert led.money.kzt_per_1m_tokens == pytest.approx(per_token)


def test_a_second_rewind_keeps_the_lost_steps_an_earlier_rewind_recorded():
    """Session 0 crashed at step 10 after checkpoint-8; session 1 resumed, wrote a clock checkpoint
    at 9 and crashed at 10 too. Rewinding to 9 must not touch session 0, which checkpoint-9 holds whole."""
    def session(i: int, a: int, b: int, tokens: int) -> Session:
        s = Session(index=i, started_at=T0, steps=[a, b])
        s.tokens.seen = s.tokens.trained = tokens
        return s

    led = make_ledger(sessions=[session(0, 0, 10, 100)])
    led.progress.step = 10
    led = rewind_to_checkpoint(led, make_ledger(sessions=[session(0, 0, 8, 80)]), 8)
    assert (led.sessions[0].lost_steps, led.tokens.trained) == ([8, 10], 80)
    led.sessions.append(session(1, 8, 9, 10))
    led.progress.step = 9
    at_nine = apply_totals(led).model_copy(deep=True)  # the copy inside checkpoint-9
    led.sessions[1].steps, led.sessions[1].tokens.trained, led.progress.step = [8, 10], 20, 10
    led = rewind_to_checkpoint(led, at_nine, 9)
    assert [s.lost_steps for s in led.sessions] == [[8, 10], [9, 10]]
    assert [s.tokens.trained for s in led.sessions] == [80, 10] and led.tokens.trained == 90


def _keys(obj, prefix=""):
    out = set()
    for k, v in obj.items():
        out.add(prefix + k)
        if isinstance(v, dict) and k not in ("eval",):
            out |= _keys(v, prefix + k + ".")
        if isinstance(v, list) and v and isinstance(v[0], dict):
            out |= _keys(v[0], prefix + k + "[].")
    return out


def test_serialised_ledger_matches_the_documented_schema():
    doc = (Path(__file__).parents[1] / "docs" / "architecture.md").read_text(encoding="utf-8")
    block = re.search(r"## The ledger.*?```json\n(.*?)```", doc, re.S).group(1)
    documented = json.loads(block)
    led = make_ledger()
    led.sessions = [Session(index=0, started_at=T0)]
    ours = json.loads(led.model_dump_json())
    assert _keys(ours) == _keys(documented)
    assert ours["started_at"] == "2026-11-23T18:00:00Z"


def test_write_then_read_roundtrip(tmp_path):
    led = make_ledger()
    led.sessions = [Session(index=0, started_at=T0, billed_seconds=12.5)]
    apply_totals(led)
    path = tmp_path / "run" / "cost.json"
    write_ledger(path, led)
    assert read_ledger(path) == led
    assert [p.name for p in path.parent.iterdir()] == ["cost.json"]


class _HalfWriter:
    """A file that writes half of what it is given, then fails like a full disk."""

    def __init__(self, real):
        self.real = real

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.real.close()

    def write(self, text):
        self.real.write(text[: len(text) // 2])
        raise OSError(28, "No space left on device")

    def __getattr__(self, name):
        return getattr(self.real, name)


def _interrupted_writes(monkeypatch):
    real_open = open
    yield "half-written file", lambda: monkeypatch.setattr(
        fileio_mod, "open", lambda *a, **k: _HalfWriter(real_open(*a, **k)), raising=False)
    yield "fsync fails", lambda: monkeypatch.setattr(fileio_mod.os, "fsync", _raise)
    yield "rename fails", lambda: monkeypatch.setattr(fileio_mod.os, "replace", _raise)
    yield "serialisation fails", lambda: monkeypatch.setattr(Ledger, "model_dump_json", _raise)


def _raise(*a, **k):
    raise OSError("simulated crash")


@pytest.mark.parametrize("case", range(4))
def test_interrupted_write_keeps_the_previous_good_ledger(tmp_path, monkeypatch, case):
    path = tmp_path / "cost.json"
    good = make_ledger(status="running")
    write_ledger(path, good)
    before = path.read_bytes()
    name, break_it = list(_interrupted_writes(monkeypatch))[case]
    newer = make_ledger(status="finished")
    break_it()
    with pytest.raises(OSError):
        write_ledger(path, newer)
    monkeypatch.undo()
    assert path.read_bytes() == before, name
    assert read_ledger(path).status == "running"
    assert [p.name for p in tmp_path.iterdir()] == ["cost.json"], f"{name}: temp file left behind"


def test_read_ledger_errors_name_the_file(tmp_path):
    with pytest.raises(ArzanError, match="no cost ledger"):
        read_ledger(tmp_path / "missing.json")
    bad = tmp_path / "cost.json"
    write_ledger(bad, make_ledger())
    bad.write_text(bad.read_text()[:40])
    with pytest.raises(ArzanError) as e:
        read_ledger(bad)
    assert str(bad) in str(e.value) and "corrupt" in str(e.value)
    bad.write_text(json.dumps({"schema_version": 1, "run_id": "x", "exchange": {"usd_kzt": -1, "source": "s"}}))
    with pytest.raises(ArzanError, match="exchange.usd_kzt"):
        read_ledger(bad)


def test_gpu_hours_add_up_each_sessions_own_gpus():
    """A run trained on 2 GPUs, resumed on 1: GPU-hours are 2 + 1, not everything at the last count."""
    led = make_ledger()
    led.sessions = [Session(index=0, started_at=T0, billed_seconds=3600.0, device="cuda",
                            price=Price(gpu="A100-80GB", usd_per_gpu_hour=1.8, gpu_count=2)),
                    Session(index=1, started_at=T0, billed_seconds=3600.0, device="cuda",
                            price=Price(gpu="A100-80GB", usd_per_gpu_hour=1.8, gpu_count=1))]
    led.price = led.sessions[-1].price
    apply_totals(led)
    assert led.gpu_hours == pytest.approx(3.0)
    # a session on a CPU at the user's rate (no GPU priced) adds none, though the run's last device was a GPU
    led.sessions.append(Session(index=2, started_at=T0, billed_seconds=3600.0, device="cpu", price=Price()))
    assert apply_totals(led).gpu_hours == pytest.approx(3.0)


def test_an_eval_on_another_device_is_eval_time_but_not_billed_time(tmp_path):
    """`arzan eval` on a laptop after a GPU run: its hours are the session's unbilled_s, not in the
    phases (billed time), money, GPU-hours or max_hours; on the same kind of device it is billed."""
    from arzan.evaluation.session import put_in_ledger

    led = make_ledger()
    led.sessions = [Session(index=0, started_at=T0, billed_seconds=3600.0, device="cuda", price=led.price)]
    led.sessions[0].money.usd, led.sessions[0].money.kzt = money_for(3600.0, led.price, FX)
    write_ledger(tmp_path / "cost.json", apply_totals(led))
    after = put_in_ledger(tmp_path / "cost.json", {"tasks": {}}, 7200.0, "cpu")
    s = after["sessions"][-1]
    assert s["device"] == "cpu" and s["unbilled_s"] == 7200.0 and s["billed_seconds"] == 0.0
    assert s["phases"]["eval"] == 0.0 and after["phases"]["eval"] == 0.0
    assert after["billed_seconds"] == 3600.0 and after["gpu_hours"] == pytest.approx(2.0)
    assert after["money"]["usd"] == pytest.approx(1.8 * 2)
    again = put_in_ledger(tmp_path / "cost.json", {"tasks": {}}, 1800.0, "cuda:0")
    assert again["sessions"][-1]["billed_seconds"] == 1800.0 and again["gpu_hours"] == pytest.approx(3.0)
    assert again["money"]["usd"] == pytest.approx(1.8 * 2 * 1.5)


def test_an_adapter_save_cut_half_way_leaves_the_previous_adapter_whole(tmp_path):
    """The adapter a budget stop saved is replaced on resume only once the new one is written whole."""
    adapter = tmp_path / "adapter"
    fileio_mod.replace_dir(adapter, lambda d: (d.mkdir(), (d / "adapter_model.safetensors").write_text("step 10")))

    def killed(d: Path) -> None:
        d.mkdir()
        (d / "adapter_model.safetensors").write_text("step 2")  # half of step 20's save, then the kill
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fileio_mod.replace_dir(adapter, killed)
    assert (adapter / "adapter_model.safetensors").read_text() == "step 10"
    fileio_mod.replace_dir(adapter, lambda d: (d.mkdir(), (d / "adapter_model.safetensors").write_text("step 20")))
    assert (adapter / "adapter_model.safetensors").read_text() == "step 20"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # no partial or old copy left beside it


def test_a_killed_trainings_time_is_recovered_though_an_eval_came_after_it():
    """SIGKILL at 130 s billed (the ledger last written at 100 s), then `arzan eval` (allowed: the
    process is gone) appends its session; the resume still recovers the killed session's 30 s."""
    led = make_ledger()
    killed = Session(index=0, started_at=T0, billed_seconds=100.0, status="running", steps=[0, 10])
    killed.phases.train = 100.0
    scored = Session(index=1, started_at=T0, billed_seconds=40.0, status="finished", steps=[10, 10])
    scored.phases.eval = 40.0
    led.sessions = [killed, scored]
    apply_totals(led)
    recover_killed_session(led, {"elapsed_s": 130.0, "step": 13})
    assert led.sessions[0].recovered_s == pytest.approx(30.0) and led.sessions[0].phases.train == pytest.approx(130.0)
    assert led.sessions[1].recovered_s is None and led.billed_seconds == pytest.approx(170.0)
    assert led.progress.step == 13


def test_the_energy_total_is_labelled_by_its_weakest_session():
    """A TDP-estimated session resumed where NVML reads is not "measured" in total; a billed session
    with no reading (a later `arzan eval`) makes the sum partial; an older ledger keeps its label."""
    led = make_ledger()
    led.sessions = [Session(index=0, started_at=T0, billed_seconds=60, kwh=0.2, energy_method="tdp"),
                    Session(index=1, started_at=T0, billed_seconds=60, kwh=0.1, energy_method="nvml")]
    apply_totals(led)
    assert (led.energy.basis, led.energy.method, led.energy.kwh) == ("estimated", "mixed", pytest.approx(0.3))
    led.sessions[0].energy_method = "nvml"
    apply_totals(led)
    assert (led.energy.basis, led.energy.method) == ("measured", "nvml")
    led.sessions.append(Session(index=2, started_at=T0, billed_seconds=30, energy_method="none"))
    apply_totals(led)
    assert (led.energy.basis, led.energy.method, led.energy.kwh) == ("partial", "mixed", pytest.approx(0.3))
    old = make_ledger()
    old.energy.basis, old.energy.method = "measured", "nvml"
    old.sessions = [Session(index=0, started_at=T0, billed_seconds=60, kwh=0.2)]  # written before energy_method
    assert (apply_totals(old).energy.basis, old.energy.method) == ("measured", "nvml")


def test_a_hand_edited_ledger_that_would_change_the_money_is_refused(tmp_path):
    """A negative session or a run past step 0 with its sessions emptied: the totals are sums over
    sessions, so either would resume with money silently lost."""
    led = make_ledger()
    led.sessions = [Session(index=0, started_at=T0, billed_seconds=60)]
    led.progress.step = 20
    path = tmp_path / "cost.json"
    write_ledger(path, apply_totals(led))
    doc = json.loads(path.read_text("utf-8"))
    for edit, said in ((lambda d: d["sessions"][0]["money"].update(kzt=-100), r"sessions\.0\.money\.kzt"),
                       (lambda d: d.update(sessions=[]), "step 20 reached, but no session paid for it")):
        bad = json.loads(json.dumps(doc))
        edit(bad)
        path.write_text(json.dumps(bad), "utf-8")
        with pytest.raises(ArzanError, match=said):
            read_ledger(path)


def test_a_pid_no_kernel_gives_is_not_taken_for_a_gone_process():
    """A hand-edited or foreign ledger's pid: the probe answers 'not known gone', it does not raise."""
    import socket

    from arzan.cost.ledger import process_gone

    assert process_gone(socket.gethostname(), 2**40) is False and process_gone(socket.gethostname(), -5) is False
