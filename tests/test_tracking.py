"""W&B logging never fails a run (the first W&B error turns logging off and the run goes on), and it logs every
step at W&B's step = the training step, so that the attempts of a requeued run continue one axis."""

from __future__ import annotations

from types import SimpleNamespace

from transformers.integrations import WandbCallback

from rlvr_sweeps.infra.tracking import TolerantWandbCallback


class FakeWandb:
    """The part of the wandb module the callback logs through."""

    def __init__(self, fail: bool = False):
        self.fail, self.logged = fail, []
        self.run = SimpleNamespace(summary={})

    def log(self, data, step=None):
        if self.fail:
            raise ConnectionError("the W&B service died with the job's other processes")
        self.logged.append((step, data))


def callback_with(wandb: FakeWandb) -> TolerantWandbCallback:
    callback = TolerantWandbCallback()
    callback._wandb, callback._initialized = wandb, True
    return callback


def state(step: int):
    return SimpleNamespace(global_step=step, is_world_process_zero=True)


def test_the_first_wandb_failure_turns_logging_off_and_the_run_goes_on(monkeypatch):
    ended = []
    monkeypatch.setattr(WandbCallback, "on_train_end", lambda self, *a, **k: ended.append("end"))
    wandb = FakeWandb(fail=True)
    callback = callback_with(wandb)
    for step in (1, 2, 3):
        callback.on_log(None, state(step), None, logs={"reward": 0.5})
    callback.on_train_end(None, state(3), None)
    assert callback.broken and ended == []  # one failure, then nothing more is sent


def test_every_step_is_logged_at_its_training_step():
    wandb = FakeWandb()
    callback = callback_with(wandb)
    for step in (7, 8):  # a resumed attempt continues where the run's axis is
        callback.on_log(None, state(step), None, logs={"reward": 0.5, "loss": 0.1})
    callback.on_log(None, state(8), None, logs={"train_runtime": 12.0})  # the trainer's totals: a summary
    assert [step for step, _ in wandb.logged] == [7, 8, 8] and not callback.broken
    assert wandb.logged[0][1] == {"train/reward": 0.5, "train/loss": 0.1, "train/global_step": 7}
    assert wandb.run.summary == {"train_runtime": 12.0}
