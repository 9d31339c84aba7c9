"""W&B logging never fails a run: the first W&B error turns logging off and the run goes on."""

from __future__ import annotations

from types import SimpleNamespace

from transformers.integrations import WandbCallback

from rlvr_sweeps.tracking import TolerantWandbCallback


def test_the_first_wandb_failure_turns_logging_off_and_the_run_goes_on(monkeypatch):
    calls = []

    def failing_on_log(self, args, state, control, **kwargs):
        calls.append(state.global_step)
        raise ConnectionError("the W&B service died with the job's other processes")

    monkeypatch.setattr(WandbCallback, "on_log", failing_on_log)
    monkeypatch.setattr(WandbCallback, "on_train_end", lambda self, *a, **k: calls.append("end"))
    callback = TolerantWandbCallback()
    for step in (1, 2, 3):
        callback.on_log(None, SimpleNamespace(global_step=step), None, logs={"reward": 0.5})
    callback.on_train_end(None, SimpleNamespace(global_step=3), None)
    assert callback.broken and calls == [1]  # one failure, then nothing more is sent


def test_a_healthy_wandb_callback_passes_every_event_on(monkeypatch):
    seen = []
    monkeypatch.setattr(WandbCallback, "on_log", lambda self, args, state, ctl, **k: seen.append(state.global_step))
    callback = TolerantWandbCallback()
    for step in (1, 2):
        callback.on_log(None, SimpleNamespace(global_step=step), None, logs={"reward": 0.5})
    assert seen == [1, 2] and not callback.broken
