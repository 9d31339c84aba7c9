"""The study's GRPO objective has no dropout noise: the forward that gives TRL the old log-probs and the
loss forward agree exactly, so the policy ratio is exactly 1 on policy (on every generation path)."""

from __future__ import annotations

import torch

from conftest import compose_config, grpo_args
from rlvr_sweeps.policy.adapters import lora_config
from rlvr_sweeps.training.trainer import RLVRTrainer

# The study as composed (trainer=grpo, lora=default), on the tiny model with transformers rollouts and
# short completions; generation every 2 optimizer steps makes TRL compute the old log-probs, as it
# always does on the vLLM path (importance-sampling correction).
STUDY = (
    "experiment=study",
    "model=tiny",
    "generation=hf",
    "eval=[]",
    "budget.max_steps=1",
    "trainer.max_completion_length=8",
    "+trainer.steps_per_generation=8",
)


class RatioRecorder(RLVRTrainer):
    """Records TRL's own policy ratio exp(logp - old_logp) in its loss forward at the first step."""

    ratios: list[torch.Tensor]

    def _compute_loss(self, model, inputs):
        self._old_logps = inputs.get("old_per_token_logps")
        return super()._compute_loss(model, inputs)

    def _get_per_token_logps_and_entropies(self, *args, **kwargs):
        out = super()._get_per_token_logps_and_entropies(*args, **kwargs)
        if kwargs.get("compute_entropy") and self._old_logps is not None and self.state.global_step == 0:
            self.ratios.append(torch.exp(out[0].detach() - self._old_logps))
        return out


def study_trainer(tiny_folder, tmp_path, *overrides: str) -> RatioRecorder:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = compose_config(*STUDY, *overrides)
    args = grpo_args(cfg, tmp_path)
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": f"Add {i} and {i}."}]} for i in range(64)])
    trainer = RatioRecorder(
        model=AutoModelForCausalLM.from_pretrained(tiny_folder),
        args=args,
        train_dataset=dataset,
        reward_funcs=[lambda completions, **kw: [len(c[-1]["content"]) / 10 for c in completions]],
        processing_class=AutoTokenizer.from_pretrained(tiny_folder),
        peft_config=lora_config(cfg.lora),
    )
    trainer.ratios, trainer._old_logps = [], None
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # an adapter that has trained already: at B = 0 the LoRA path (and its dropout) adds nothing
        for name, param in trainer.model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    return trainer


def test_two_training_mode_forwards_of_the_study_model_agree(tiny_folder, tmp_path):
    trainer = study_trainer(tiny_folder, tmp_path)
    trainer.model.train()
    ids = torch.randint(0, 500, (4, 24), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    first, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, 12)
    second, _, _ = trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, 12)
    assert torch.equal(first, second)


def test_the_policy_ratio_is_exactly_one_on_policy(tiny_folder, tmp_path):
    trainer = study_trainer(tiny_folder, tmp_path)
    trainer.train()
    assert len(trainer.ratios) == 4  # the 4 micro-batches of the first optimizer step
    assert all(torch.equal(ratio, torch.ones_like(ratio)) for ratio in trainer.ratios)
