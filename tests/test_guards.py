"""The guards a run keeps on itself (rlvr_sweeps.run.guards, rlvr_sweeps.training.memory): each trips on its fault and
stays quiet on a healthy run. The weight-sync guard on a real colocated vLLM engine is in test_vllm; the
prompt-id guard on real tokenizers in test_prompts."""

from __future__ import annotations

import json
import logging
import shutil
from types import SimpleNamespace

import pytest
import torch

from conftest import train_in_process
from rlvr_sweeps.errors import UserError
from rlvr_sweeps.run.guards import IS_MASKED_SHARE, LOGP_GAP, RolloutGuard, RunCheckFailed, masked_share
from rlvr_sweeps.training.memory import ALLOC_CONF, use_expandable_segments


def feed(guard: RolloutGuard, rows: list[tuple[int, dict]]) -> None:
    for step, logs in rows:
        guard.on_log(None, SimpleNamespace(global_step=step), None, logs=logs)


def gaps(*values: float) -> list[tuple[int, dict]]:
    return [(step, {LOGP_GAP: gap}) for step, gap in enumerate(values, start=1)]


def test_a_healthy_logp_gap_passes_and_the_first_step_is_never_judged():
    # step 1: the adapter is zero, engine and trainer hold the same model whatever the sync did
    feed(RolloutGuard(0.1, after_steps=1), gaps(0.9, 0.02, 0.03, 0.05, 0.04, 0.08))


def test_an_engine_with_stale_weights_stops_the_run_naming_the_weight_sync():
    guard = RolloutGuard(0.1, after_steps=1)
    feed(guard, gaps(0.01, 0.4))  # one step above: not yet
    with pytest.raises(RunCheckFailed, match="weight sync") as raised:
        feed(guard, [(3, {LOGP_GAP: 0.6})])
    assert "step 3" in str(raised.value) and "guards.weight_sync=false" in str(raised.value)
    assert "\n" not in str(raised.value)


def test_an_engine_whose_numbers_differ_from_the_start_is_judged_against_its_own_floor():
    guard = RolloutGuard(0.1, after_steps=1)
    feed(guard, gaps(0.08, 0.15, 0.2, 0.22))  # 0.08 before the adapter moved: the threshold is 0.24
    assert guard.threshold() == pytest.approx(0.24)
    with pytest.raises(RunCheckFailed, match="weight sync"):
        feed(guard, [(5, {LOGP_GAP: 0.5}), (6, {LOGP_GAP: 0.9})])


def test_one_noisy_step_at_a_time_is_not_a_broken_sync():
    feed(RolloutGuard(0.1, after_steps=1), gaps(0.01, 0.5, 0.02, 0.5, 0.03, 0.5))


def test_the_weight_sync_guard_can_be_switched_off():
    feed(RolloutGuard(None), gaps(0.01, 5.0, 5.0, 5.0))


def test_a_high_importance_sampling_mask_share_warns_once_with_the_setting(caplog):
    guard = RolloutGuard(0.1, is_mask_warn_share=0.05)
    with caplog.at_level(logging.WARNING, logger="rlvr_sweeps.run.guards"):
        feed(guard, [(1, {IS_MASKED_SHARE: 0.01}), (2, {IS_MASKED_SHARE: 0.25}), (3, {IS_MASKED_SHARE: 0.5})])
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "25.0%" in warnings[0] and "vllm_importance_sampling_clip_max" in warnings[0]


def test_the_masked_share_counts_sequences_whose_ratio_the_mask_set_to_zero():
    ratios = torch.tensor([[1.02], [0.0], [0.97], [0.0]])  # sequence_mask: one ratio per sequence
    assert masked_share(ratios, "sequence_mask") == 0.5
    assert masked_share(ratios, "token_truncate") is None and masked_share(None, "sequence_mask") is None


def test_jobs_get_expandable_segments_unless_the_user_chose_an_allocator_setting_or_vllm_sleeps():
    assert use_expandable_segments({}) == ALLOC_CONF
    assert use_expandable_segments({"PYTORCH_CUDA_ALLOC_CONF": "max_split_size_mb:512"}) == "max_split_size_mb:512"
    environ = {}
    assert use_expandable_segments(environ, sleep_mode=True) is None and environ == {}  # vLLM 0.19.1 asserts


def test_sleep_mode_with_expandable_segments_is_refused_where_vllm_would_assert():
    from rlvr_sweeps.checks import refuse_sleep_mode_with_expandable_segments as refuse

    with pytest.raises(UserError, match="vLLM 0.19.1's sleep-mode allocator refuses expandable segments"):
        refuse("expandable_segments:True", "0.19.1")
    refuse("expandable_segments:True", "0.31.0")  # switched off inside its pool
    refuse("max_split_size_mb:512", "0.19.1")
    refuse("expandable_segments:True", None)  # no vLLM: nothing starts one


def test_a_run_whose_template_writes_a_second_bos_stops_before_training(launch, tiny_folder, tmp_path, model_cache):
    """The prompt-id guard in a real launch: one line naming the cause, recorded as the run's error; the same
    model with guards.prompt_ids=false is not stopped by it."""
    model = tmp_path / "two-bos"
    shutil.copytree(tiny_folder, model)
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["bos_token"] = "<|im_start|>"  # a template that writes BOS, then starts its first turn with another
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    template = model / "chat_template.jinja"
    template.write_text("{{ bos_token }}" + template.read_text())
    args = ("model=tiny", f"model.path={model}", "budget.max_steps=1", "eval=[]", "logger=none")
    stopped = launch(*args)
    assert stopped.returncode != 0 and "Traceback" not in stopped.stderr
    assert "starts with 2 BOS token(s)" in stopped.stderr and "guards.prompt_ids=false" in stopped.stderr
    summary = stopped.summary(stopped.run_dirs()[0])
    assert summary["status"] == "failed" and "2 BOS" in summary["error"] and summary.get("global_step", 0) == 0
    # the same model unguarded, in this process: the launch's own exit code and message are checked above
    unguarded = train_in_process(tmp_path / "unguarded", model_cache, *args, "guards.prompt_ids=false")
    assert unguarded["status"] == "completed" and unguarded["global_step"] == 1
