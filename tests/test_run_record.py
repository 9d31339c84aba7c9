"""Run records: secrets never land in a saved config; metrics survive and can be cut back."""

from __future__ import annotations

from rlvr_sweeps.run.record import CHECKPOINT_PREFIX, RunRecord, scrub_secrets


def test_secret_keys_and_values_are_redacted_but_token_counts_are_not(monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)
    config = {
        "logger": {"api_key": "abc", "note": "key is " + "k" * 40},
        "trainer": {"hub_token": "hf_x", "max_completion_length": 8},
        "eval": {"sampling": {"max_new_tokens": 64}},
        "budget": {"max_generated_tokens": 1000},
        "list": [{"password": "p"}],
    }
    clean = scrub_secrets(config)
    assert clean["logger"] == {"api_key": "<redacted>", "note": "<redacted>"}
    assert clean["trainer"] == {"hub_token": "<redacted>", "max_completion_length": 8}
    assert clean["eval"]["sampling"]["max_new_tokens"] == 64 and clean["budget"]["max_generated_tokens"] == 1000
    assert clean["list"] == [{"password": "<redacted>"}]


def test_summary_updates_merge_and_metrics_can_be_cut_back(tmp_path):
    record = RunRecord(tmp_path / "run")
    record.update_summary(status="running", a=1)
    record.update_summary(status="completed")
    assert record.read_summary()["a"] == 1 and record.read_summary()["status"] == "completed"
    for step in (1, 2, 3, 4):
        record.append_metrics({"step": step, "reward": step / 10})
    assert record.drop_metrics_after(2) == 2
    assert [m["step"] for m in record.read_metrics()] == [1, 2]


def test_checkpoint_folders_are_named_as_transformers_names_them(tmp_path):
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    assert CHECKPOINT_PREFIX == PREFIX_CHECKPOINT_DIR  # run_record reads them without importing transformers
    assert RunRecord(tmp_path).checkpoint(7).name == f"{PREFIX_CHECKPOINT_DIR}-7"
