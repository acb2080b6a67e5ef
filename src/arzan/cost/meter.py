"""CostMeter: a TrainerCallback that keeps the bill while the model trains.

Wiring (train.py)::

    meter = CostMeter(run / "cost.json", ledger, price, exchange, max_kzt=..., token_counter=counter,
                      metrics_path=run / "metrics.jsonl")   # counter: fed by the trainer's compute_loss
    with meter.phase("setup"): model, tok, info = load_model(recipe)
    with meter.phase("data"):  data = tokenize_data(...)
    trainer = MeteredSFTTrainer(..., callbacks=[meter, ...]); meter.attach(trainer)
    with meter.phase("train"): trainer.train(resume_from_checkpoint=...)
    with meter.phase("save"):  replace_dir(run / "adapter", save)
    meter.finish("finished")

Time is counted only inside phases, and phases cannot nest, so no second is billed twice. If the
caller does not open a "train" phase, one spans on_train_begin..on_train_end instead; evaluation
run from inside ``trainer.train()`` is then billed as train time.

Why ``attach`` and not ``callbacks=[meter]``: in transformers 5.17 the Trainer puts the report_to
callbacks (TensorBoard, W&B, MLflow) *before* user callbacks, and ``Trainer.log`` copies the logs
into ``state.log_history`` *before* calling ``on_log``. ``attach`` moves the meter to the front so
the ``cost/*`` keys it adds to the logs dict in place reach every tracker, and the meter also adds
them to the ``log_history`` row that was just written.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from arzan.cost.ledger import (
    PHASES,
    Ledger,
    Progress,
    Session,
    apply_totals,
    money_for,
    utcnow,
    write_ledger,
)
from arzan.cost.budget import mean_step_seconds, suggest_cap
from arzan.cost.energy import energy_reader
from arzan.cost.prices import Exchange, Price, grid_factor
from arzan.numbers import amount, fixed, hms


class BudgetCut(Exception):
    """The cap would pass during the work after training (the generation check, lm-eval, the merge).

    The training is complete and its adapter saved by then, so the run is finished, not stopped: the
    work that did not run is named with the command that redoes it, and nothing is billed past the cap.
    """


def _last_step(state: Any) -> bool:
    """The Trainer is at its planned last step: there is no next step to afford."""
    return bool(state.max_steps) and state.global_step >= state.max_steps


def _locked(method: Callable) -> Callable:
    """The ledger is also written by the 30 s flusher thread: one writer at a time."""

    def wrapper(self: CostMeter, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    wrapper.__name__, wrapper.__doc__ = method.__name__, method.__doc__
    return wrapper


class CostMeter(TrainerCallback):
    def __init__(
        self,
        ledger_path: str | Path,
        ledger: Ledger,
        price: Price,
        exchange: Exchange,
        *,
        max_kzt: float | None = None,
        max_usd: float | None = None,
        max_hours: float | None = None,
        token_counter: Any = None,
        metrics_path: str | Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = utcnow,
        flush_every_s: float = 10.0,
        grid_kg_co2_per_kwh: float | None = None,
        terms: dict[str, Any] | None = None,
    ):
        """``ledger`` is a new one or the one a resumed run left; this run becomes a new session."""
        self.path, self.clock, self.now, self.flush_every_s = Path(ledger_path), clock, now, flush_every_s
        self._lock = threading.RLock()
        self._stop_flusher = threading.Event()
        self._flusher: threading.Thread | None = None
        self.counter = token_counter  # .seen / .trained: this session's cumulative token counts
        self.metrics_path = Path(metrics_path) if metrics_path else None
        led = ledger.model_copy(deep=True)
        for s in led.sessions:  # a session still "running" in a saved ledger was killed mid-way
            if s.status == "running":
                s.status = "interrupted"
        led.price, led.exchange = price, exchange
        led.budget.max_kzt, led.budget.max_usd, led.budget.max_hours = max_kzt, max_usd, max_hours
        led.budget.stop_reason = led.status_reason = led.resume_command = led.finished_at = None
        led.status = "running"
        led.energy.grid_kg_co2_per_kwh = grid_factor(grid_kg_co2_per_kwh)
        self.session = Session(index=len(led.sessions), started_at=now(), steps=[led.progress.step] * 2,
                               price=price, terms=dict(terms) if terms else None, host=socket.gethostname(),
                               pid=os.getpid(), device=led.hardware.device, gpu_name=led.hardware.gpu_name)
        led.sessions.append(self.session)
        self.ledger = led
        self._phase: tuple[str, float, bool] | None = None  # name, time counted up to, opened by callback
        self._train_t0: float | None = None
        self._first_step = led.progress.step
        self._step_s = 0.0  # billed seconds of one optimizer step so far, eval included: the next step's price
        self._step_begin: float | None = None  # clock at the current step's begin (or the training's start)
        self._last_event = 0.0  # clock at the last step end or evaluation batch
        self._energy = energy_reader(self.ledger, lambda: self.session.phases.total())
        self.flush()

    # --- time ---
    @_locked
    def _tick(self) -> None:
        """Bring the current session and all totals up to now."""
        t = self.clock()
        if self._phase is not None:
            name, mark, auto = self._phase
            setattr(self.session.phases, name, getattr(self.session.phases, name) + t - mark)
            self._phase = (name, t, auto)
        s, led = self.session, self.ledger
        if self.counter is not None:
            s.tokens.seen, s.tokens.trained = int(self.counter.seen), int(self.counter.trained)
        s.billed_seconds = s.phases.total() + led.price.overhead_s  # overhead: once per session (pod start)
        s.money.usd, s.money.kzt = money_for(s.billed_seconds, led.price, led.exchange)
        led.energy.basis, led.energy.method, kwh = self._energy
        s.kwh, s.energy_method = kwh(), led.energy.method
        apply_totals(led)

    @_locked
    def _open(self, name: str, auto: bool) -> None:
        if name not in PHASES:
            raise ValueError(f"unknown phase '{name}'; phases: {', '.join(PHASES)}")
        if self._phase is not None:
            raise RuntimeError(f"phase '{name}' inside '{self._phase[0]}' would count the same seconds twice")
        self._phase = (name, self.clock(), auto)

    @_locked
    def _close(self) -> None:
        if self._phase is not None:
            self._tick()
            self._phase = None

    @_locked
    def add_seconds(self, name: str, seconds: float) -> None:
        """Time spent before the meter existed (the data check that runs before a folder is made)."""
        if name not in PHASES:
            raise ValueError(f"unknown phase '{name}'; phases: {', '.join(PHASES)}")
        setattr(self.session.phases, name, getattr(self.session.phases, name) + max(seconds, 0.0))
        self._tick()

    def start_flusher(self) -> CostMeter:
        """Write the ledger at least every `flush_every_s`, also through a long download, data
        phase or optimizer step, when no Trainer event comes to do it."""
        def loop() -> None:
            while not self._stop_flusher.wait(self.flush_every_s):
                try:
                    with self._lock:
                        self._tick()
                        self.flush()
                except Exception:  # a full disk must not kill the training; the next write retries
                    pass

        if self._flusher is None:
            self._flusher = threading.Thread(target=loop, name="arzan-ledger-flusher", daemon=True)
            self._flusher.start()
        return self

    def stop_flusher(self) -> None:
        self._stop_flusher.set()
        if self._flusher is not None and self._flusher is not threading.current_thread():
            self._flusher.join(timeout=5)
        self._flusher = None

    @contextmanager
    def phase(self, name: str):
        self._open(name, auto=False)
        try:
            yield self
        finally:
            self._close()

    # --- files ---
    @_locked
    def flush(self) -> None:
        self.ledger.updated_at = self.now()
        write_ledger(self.path, self.ledger)
        self._last_flush = self.clock()

    def _maybe_flush(self) -> None:
        if self.clock() - self._last_flush >= self.flush_every_s:
            self.flush()

    def attach(self, trainer: Any) -> Any:
        """Put the meter first in the trainer's callbacks (see the module docstring for why), and
        give the trainer the ledger copy it writes into a checkpoint before the checkpoint is complete."""
        callbacks = trainer.callback_handler.callbacks
        if self in callbacks:
            callbacks.remove(self)
        callbacks.insert(0, self)
        trainer.ledger_copy = self.copy_into
        return trainer

    # --- Trainer events ---
    @_locked
    def on_train_begin(self, args, state, control, **kwargs):
        if self._phase is None:
            self._open("train", auto=True)
        self._train_t0, self._first_step = self.clock(), state.global_step
        self._step_begin = self._last_event = self._train_t0  # eval_on_start's first batch is timed from here
        self.session.steps = [state.global_step, state.global_step]

    @_locked
    def on_step_begin(self, args, state, control, **kwargs):
        self._step_begin = self.clock()

    @_locked
    def on_train_end(self, args, state, control, **kwargs):
        if self._phase is not None and self._phase[2]:
            self._close()
        self.flush()

    @_locked
    def on_step_end(self, args, state, control, **kwargs):
        if hasattr(self.counter, "commit"):  # the step's micro-batches count now that the step is done
            self.counter.commit()
        self._tick()
        led, step = self.ledger, state.global_step
        led.progress = Progress(step=step, max_steps=state.max_steps or 0, epoch=state.epoch or 0.0)
        self.session.steps[1] = step
        done = step - self._first_step
        now = self.clock()
        step_s = (now - self._train_t0) / done if done > 0 and self._train_t0 is not None else 0.0
        # the cap check prices the next step at the slower of the mean step and the last one: a mean
        # alone lets one slow step (a warm-up after a resume, a stall) pass the cap. The last step is
        # timed from its own begin, so an evaluation or a checkpoint before it is not priced as a step
        last_s = now - self._step_begin if self._step_begin is not None else step_s
        self._step_begin = None  # set again by on_step_begin; without it the mean stands alone
        self._step_s, self._last_event = step_s, now
        next_usd, next_kzt = money_for(step_s, led.price, led.exchange)
        if done > 0 and state.max_steps:  # setup time is paid once, so project only the steps left
            led.budget.projected_kzt = led.money.kzt + max(state.max_steps - step, 0) * next_kzt
        reason = None if _last_step(state) else self._over_budget(max(step_s, last_s), "the next step")
        if reason and led.budget.stop_reason is None:
            control.should_training_stop = control.should_save = True
            self._stop_for_budget(reason, step_s)
        else:
            self._maybe_flush()

    @_locked
    def expect_steps(self, step_s: float, steps: int) -> None:
        """The estimate's seconds per step and planned steps: what the budget checks and the raised-cap
        hint use until a step is measured (a setup that ate the cap would otherwise suggest a cap
        that pays for no steps)."""
        self._step_s = step_s
        if steps and not self.ledger.progress.max_steps:
            self.ledger.progress.max_steps = steps

    @_locked
    def over_budget_before_training(self) -> bool:
        """Asked once the model is loaded: a setup that ate the budget must not buy a first step."""
        self._tick()
        step_s = mean_step_seconds(self.ledger) or self._step_s
        reason = self._over_budget(step_s, "the first step of this session")
        if reason and self.ledger.budget.stop_reason is None:
            self._stop_for_budget(reason, step_s)
        return reason is not None

    @_locked
    def on_prediction_step(self, args, state, control, **kwargs):
        """An evaluation inside training is paid for too: cut it before it passes the cap."""
        from arzan.callbacks import EvaluationCut

        if self.ledger.budget.stop_reason is not None:  # stopped at this step: checkpoint, do not evaluate
            raise EvaluationCut(self.ledger.budget.stop_reason)
        self._tick()
        now = self.clock()
        batch_s, self._last_event = now - self._last_event, now  # the batch just evaluated: the next costs as much
        last = _last_step(state)
        # after the last step the evaluation is all that is left; before it, one more step must be affordable
        reason = self._over_budget(batch_s + (0.0 if last else self._step_s),
                                   "the next evaluation batch" + ("" if last else " and the next step"))
        if reason:
            self._stop_for_budget(reason, self._step_s)
            raise EvaluationCut(reason)
        self._maybe_flush()

    @_locked
    def check_cap(self, ahead_s: float, ahead: str) -> None:
        """Raise BudgetCut when `ahead_s` more billed seconds would pass a cap."""
        self._tick()
        reason = self._over_budget(ahead_s, ahead)
        if reason:
            raise BudgetCut(reason)

    def capped(self, fn: Callable[..., Any], ahead: str) -> Callable[..., Any]:
        """`fn`, refusing to start a call the caps cannot pay for: each call is priced at the one
        before it (lm-eval's batches), so the first is refused only when a cap is already reached."""
        last_s = 0.0

        def call(*args: Any, **kwargs: Any) -> Any:
            nonlocal last_s
            self.check_cap(last_s, ahead)
            t0 = self.clock()
            try:
                return fn(*args, **kwargs)
            finally:
                last_s = self.clock() - t0

        return call

    def _over_budget(self, ahead_s: float, ahead: str) -> str | None:
        """Which cap `ahead_s` more billed seconds would pass, in words; None when all still hold.
        With nothing priced ahead (a piece of work checked before it starts) only a cap already
        reached stops it."""
        led, b = self.ledger, self.ledger.budget
        next_usd, next_kzt = money_for(ahead_s, led.price, led.exchange) if ahead_s > 0 else (0.0, 0.0)
        hours = led.billed_seconds / 3600
        caps = []  # (cap, spent, what ahead_s adds, the cap and its spend in words, the addition in words)
        if b.max_kzt is not None:
            caps.append((b.max_kzt, led.money.kzt, next_kzt, f"max_kzt {amount(b.max_kzt)} ₸: spent {fixed(led.money.kzt, 2)} ₸",
                         f" (~{fixed(next_kzt, 2)} ₸)"))
        if b.max_usd is not None:
            caps.append((b.max_usd, led.money.usd, next_usd, f"max_usd {amount(b.max_usd)} $: spent {led.money.usd:.4f} $",
                         f" (~{next_usd:.4f} $)"))
        if b.max_hours is not None:
            caps.append((b.max_hours, hours, ahead_s / 3600,
                         f"max_hours {amount(b.max_hours)} h ({hms(b.max_hours * 3600)}): {hms(led.billed_seconds)} billed",
                         ""))
        for cap, spent, more, words, more_words in caps:
            if spent > cap:  # the setup (a model load) passed it before any step could be priced
                return f"{words}, already past it, so {ahead} did not start"
            if ahead_s <= 0 and spent >= cap:
                return f"{words}, so {ahead} did not start"
            if ahead_s > 0 and spent + more > cap:
                return f"{words}, {ahead}{more_words} would pass it"
        return None

    def _stop_for_budget(self, reason: str, step_s: float) -> None:
        led = self.ledger
        led.budget.stop_reason = led.status_reason = reason
        led.status = "stopped_budget"
        kind = reason.split(" ", 1)[0]
        led.resume_command = (f"arzan train --resume {self.path.parent} "
                              f"--budget {suggest_cap(kind, led, step_s, led.price, led.exchange)}")
        self.flush()

    @_locked
    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None:
            return
        self._tick()
        led = self.ledger
        if "loss" in logs:
            led.summary.final_loss = float(logs["loss"])
        cost = {
            "cost/spent_kzt": led.money.kzt,
            "cost/spent_usd": led.money.usd,
            "cost/gpu_hours": led.gpu_hours,
            "cost/tokens_trained": led.tokens.trained,
            "cost/tokens_per_s": led.tokens.per_second,
        }
        if led.money.kzt_per_1m_tokens is not None:  # trackers reject None; absent means "no tokens yet"
            cost["cost/kzt_per_1m_tokens"] = led.money.kzt_per_1m_tokens
        history = state.log_history
        if history and history[-1].get("step") == state.global_step and set(logs) <= set(history[-1]):
            history[-1].update(cost)
        logs.update(cost)
        if self.metrics_path is not None:
            row = {
                "session": self.session.index,
                "step": state.global_step, "epoch": state.epoch, "loss": logs.get("loss"),
                "learning_rate": logs.get("learning_rate"), "grad_norm": logs.get("grad_norm"),
                "tokens_seen": led.tokens.seen, "tokens_trained": led.tokens.trained,
                "tokens_per_s": led.tokens.per_second, "elapsed_s": led.phases.total(),
                "spent_kzt": led.money.kzt, "spent_usd": led.money.usd,
            }
            if "eval_loss" in logs:
                row["eval_loss"] = logs["eval_loss"]
            self.metrics_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.metrics_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        self._maybe_flush()

    @_locked
    def copy_into(self, ckpt: Path) -> None:
        """The ledger as of this checkpoint, inside it, so resuming from it continues the bill from
        that point. Written first (the trainer's _save_checkpoint) and again once the save is done
        (on_save): the Trainer writes trainer_state.json, which makes a checkpoint complete, and
        deletes older checkpoints before on_save runs; a kill in between must not leave a complete
        checkpoint whose steps the resume cannot rewind."""
        self._tick()
        self.ledger.updated_at = self.now()  # the copy says when it was taken, as cost.json does
        if ckpt.is_dir():
            write_ledger(ckpt / "arzan_ledger.json", self.ledger)

    @_locked
    def on_save(self, args, state, control, **kwargs):
        self.copy_into(Path(args.output_dir) / f"checkpoint-{state.global_step}")
        self.flush()

    # --- end of a session ---
    def finish(self, status: str, reason: str | None = None, resumable: bool = False) -> Ledger:
        """Close the session; a budget stop stays "stopped_budget" even if the caller says finished.
        `resumable`: a failed run a resume can continue, from a checkpoint it saved (runtime.finish)."""
        self.stop_flusher()  # outside the lock: the flusher may be waiting for it
        return self._finish(status, reason, resumable)

    @_locked
    def _finish(self, status: str, reason: str | None, resumable: bool = False) -> Ledger:
        if self._phase is not None:
            self._close()
        else:
            self._tick()
        led, s = self.ledger, self.session
        if status == "finished" and led.budget.stop_reason:
            status, reason = "stopped_budget", reason or led.budget.stop_reason
        s.status = led.status = status
        s.finished_at = led.finished_at = self.now()
        if status == "finished":  # the end is here: what it cost, not the projection made at the last step
            led.budget.projected_kzt, led.budget.projected_basis = led.money.kzt, "measured"
        led.status_reason = reason
        if status == "interrupted" or (status == "failed" and resumable):
            led.resume_command = f"arzan train --resume {self.path.parent}"
        elif status != "stopped_budget" or led.resume_command is None:  # a budget stop keeps its raised cap
            led.resume_command = f"arzan train --resume {self.path.parent}" if status == "stopped_budget" else None
        self.flush()
        return led

    def progress_line(self) -> str:
        """`step 40/300 · 12.4 ₸ spent · ~95 ₸ at end` for the training progress display."""
        led = self.ledger
        p = led.progress
        parts = [f"step {p.step}/{p.max_steps}" if p.max_steps else f"step {p.step}",
                 f"{fixed(led.money.kzt, 1)} ₸ spent"]
        if led.budget.projected_kzt is not None:  # the steps left; the save after them can only add
            parts.append(f"~{fixed(max(led.budget.projected_kzt, led.money.kzt), 0)} ₸ at end")
        return " · ".join(parts)
