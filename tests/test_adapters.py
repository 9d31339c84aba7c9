"""lora.variant and lora.lr_rule: each variant is PEFT's own option, the learning-rate rules give the
rates they document (into the optimizer, config.yaml, summary.json), and a PiSSA run starts from a
cached residual base and saves a plain LoRA of the original model."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
import yaml

from conftest import compose_config as composed
from conftest import grpo_args, train_in_process
from rlvr_sweeps.errors import UserError
from rlvr_sweeps.evaluate import adapter_folder, refuse_what_vllm_cannot_load
from rlvr_sweeps.infra.hardware import Hardware
from rlvr_sweeps.policy.adapters import PISSA_INITIAL, effective_learning_rate, lora_config

CPU = Hardware("cpu", "cpu", 2)


@pytest.mark.parametrize(
    ("variant", "rslora", "dora", "init"), [("lora", False, False, True), ("rslora", True, False, True),
                                            ("dora", False, True, True), ("pissa", False, False, True)]
)  # fmt: skip
def test_each_variant_is_a_peft_option(variant, rslora, dora, init):
    config = lora_config(composed(f"lora.variant={variant}", "lora.rank=16").lora)
    assert (config.use_rslora, config.use_dora, config.init_lora_weights) == (rslora, dora, init)
    assert (config.r, config.lora_alpha) == (16, 32)


def test_an_unknown_variant_or_rule_is_refused_with_the_choices():
    with pytest.raises(UserError, match="lora, rslora, dora, pissa"):
        lora_config(composed("lora.variant=vera").lora)
    with pytest.raises(UserError, match="fixed, sqrt_rank, inverse_rank, lwr"):
        effective_learning_rate(composed("lora.lr_rule=linear").lora, 1e-5)


@pytest.mark.parametrize(
    ("rule", "rank", "expected"),
    [
        ("fixed", 256, 1e-5),
        ("sqrt_rank", 256, 1e-5 * math.sqrt(64 / 256)),
        ("sqrt_rank", 1, 1e-5 * 8),
        ("inverse_rank", 256, 1e-5 / 4),
        ("inverse_rank", 8, 1e-5 * 8),
        ("lwr", 1, 10 * 2e-6),
        ("lwr", 256, 10 * 2e-6),
    ],
)
def test_learning_rate_rules_reach_the_optimizer(rule, rank, expected, tmp_path):
    cfg = composed(
        f"lora.lr_rule={rule}", f"lora.rank={rank}", "trainer.learning_rate=1e-5", "lora.full_ft_learning_rate=2e-6"
    )
    args = grpo_args(cfg, tmp_path, CPU)  # as train(): resolve_learning_rate, then grpo_config
    assert args.learning_rate == pytest.approx(expected, rel=1e-12)
    assert cfg.lora.effective_learning_rate == args.learning_rate  # recorded once, in the run's config
    assert cfg.trainer.learning_rate == 1e-5  # the value the rule starts from stays as given


def test_learning_rate_rules_refuse_what_they_cannot_compute():
    with pytest.raises(UserError, match="lora.full_ft_learning_rate"):
        effective_learning_rate(composed("lora.lr_rule=lwr").lora, 1e-5)
    with pytest.raises(UserError, match="lora=none"):
        effective_learning_rate(composed("lora=none", "lora.lr_rule=sqrt_rank").lora, 1e-5)


def _run(runs: Path, cache: Path, *overrides: str) -> tuple[dict, dict]:
    summary = train_in_process(
        runs,
        cache,
        "model=tiny_math",
        "data=sums",
        "eval=[]",
        "logger=none",
        "budget.max_steps=3",
        "trainer.save_steps=3",
        "trainer.learning_rate=0.003",
        "trainer.max_completion_length=16",
        *overrides,
    )
    config = yaml.safe_load((Path(summary["run_dir"]) / "config.yaml").read_text())
    return summary, config


@pytest.mark.e2e
def test_a_rank_rule_run_records_its_effective_learning_rate(tmp_path, model_cache):
    summary, config = _run(tmp_path / "runs", model_cache, "lora.rank=16", "lora.lr_rule=inverse_rank")
    assert config["lora"]["effective_learning_rate"] == pytest.approx(0.003 * 64 / 16)
    assert summary["lora"]["learning_rate"] == pytest.approx(0.012) and summary["lora"]["lr_rule"] == "inverse_rank"
    assert config["trainer"]["learning_rate"] == 0.003


@pytest.mark.e2e
def test_a_dora_run_trains_its_magnitudes_and_saves_them(tmp_path, model_cache):
    from safetensors.torch import load_file

    summary, _ = _run(tmp_path / "runs", model_cache, "lora.rank=8", "lora.variant=dora")
    final = Path(summary["run_dir"]) / "final"
    assert json.loads((final / "adapter_config.json").read_text())["use_dora"] is True
    magnitudes = [t for name, t in load_file(str(final / "adapter_model.safetensors")).items() if "magnitude" in name]
    assert magnitudes and summary["lora"]["variant"] == "dora"
    with pytest.raises(UserError, match="eval.backend=hf"):  # vLLM cannot load it standalone: refused up front
        refuse_what_vllm_cannot_load(adapter_folder(summary["run_dir"]))


@pytest.mark.e2e
def test_pissa_starts_from_a_cached_residual_and_saves_a_plain_lora_of_the_original(tmp_path, model_cache):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    summary, _ = _run(tmp_path / "runs", model_cache, "lora.rank=8", "lora.variant=pissa")
    run_dir = Path(summary["run_dir"])
    (start,) = (p for p in (model_cache / "models").glob("tiny_math-pissa-r8-*") if p.is_dir())
    assert summary["model"]["folder"] == str(start)  # trained on the residual base
    initial = load_file(str(run_dir / PISSA_INITIAL / "adapter_model.safetensors"))
    cached = load_file(str(start / PISSA_INITIAL / "adapter_model.safetensors"))
    assert initial.keys() == cached.keys() and all(torch.equal(initial[k], cached[k]) for k in cached)
    assert all(t.abs().sum() > 0 for name, t in initial.items() if "lora_B" in name)  # the SVD start, not zeros

    # the same shape again reuses the very same start (a resume or another seed gets identical tensors)
    before = (start / "model.safetensors").stat().st_mtime_ns
    _run(tmp_path / "again", model_cache, "lora.rank=8", "lora.variant=pissa", "trainer.seed=1")
    assert (start / "model.safetensors").stat().st_mtime_ns == before

    final = run_dir / "final"
    assert json.loads((final / "adapter_config.json").read_text())["r"] == 16  # PEFT's conversion: rank 2r
    original = Path(json.loads((start / "rlvr_model_spec.json").read_text())["base_folder"])
    converted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(original), str(final)).eval()
    (checkpoint,) = run_dir.glob("**/checkpoint-3")  # the run's own form: rank r over the residual base
    assert adapter_folder(str(run_dir)) == final
    refuse_what_vllm_cannot_load(final)  # a plain LoRA, which vLLM serves
    # a checkpoint sits on the residual, not on the model itself: refused, naming the run folder
    with pytest.raises(UserError, match=re.escape(f"adapter={run_dir}")):
        adapter_folder(str(checkpoint))
    trained = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(start), str(checkpoint)).eval()
    moved = load_file(str(checkpoint / "adapter_model.safetensors"))
    assert any(not torch.equal(moved[k], initial[k]) for k in initial)  # training moved the adapter off its start
    ids = torch.randint(0, 300, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = converted(ids).logits, trained(ids).logits
        with trained.disable_adapter():
            residual_only = trained(ids).logits
        untrained = AutoModelForCausalLM.from_pretrained(original)(ids).logits
    assert (a - b).abs().max() < 1e-3 < (b - residual_only).abs().max()  # the principal part is in the adapter
    assert (a - untrained).abs().max() > 1e-3  # and what training changed is in final/


def test_vllm_serves_an_adapter_at_the_next_rank_it_accepts_and_refuses_one_above_512(tmp_path):
    from rlvr_sweeps.checks import check_config
    from rlvr_sweeps.policy.adapters import vllm_max_lora_rank

    assert [vllm_max_lora_rank(r) for r in (1, 8, 24, 64, 200, 257, 320, 512)] == [1, 8, 32, 64, 256, 320, 320, 512]
    with pytest.raises(UserError, match="serves ranks up to 512"):
        vllm_max_lora_rank(600)
    big = tmp_path / "r600"
    big.mkdir()
    (big / "adapter_config.json").write_text(json.dumps({"r": 600, "use_dora": False}))
    with pytest.raises(UserError, match="rank-600 LoRA adapter cannot be evaluated with vLLM"):  # before an engine
        refuse_what_vllm_cannot_load(big)
    # a run whose adapter vLLM would evaluate: refused before training (PiSSA's final/ is saved at twice its rank)
    for overrides in (["lora.rank=600"], ["lora.rank=300", "lora.variant=pissa"]):
        with pytest.raises(UserError, match="rank-600 LoRA adapter"):
            check_config(composed("eval.backend=vllm", *overrides), CPU, plan_only=True)
    check_config(composed("lora.rank=600"), CPU, plan_only=True)  # evaluated with transformers: no limit
