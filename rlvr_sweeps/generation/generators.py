"""Evaluation sampling with transformers generate, and the choice of backend for a training run.

Both backends return, per prompt, n Completions sampled with the benchmark's temperature, top_p and
max_new_tokens, seeded from eval.seed so that the same config gives the same numbers.
"""

from __future__ import annotations

from ..policy.lora_merge import merged_lora
from ..policy.models import eos_token_ids
from .sampling import Benchmark, Completion, Generator, resolve_backend, sampling_seed


def make_generator(backend: str, trainer, tokenizer, batch_size: int) -> Generator:
    """The evaluation backend of a training run: eval.backend, or auto (vLLM when training uses it)."""
    if resolve_backend(backend, bool(trainer.use_vllm)) == "vllm":
        from .vllm_backend import TrainerVLLMGenerator

        return TrainerVLLMGenerator(trainer)
    return HFGenerator(trainer.model, tokenizer, batch_size)


class HFGenerator:
    """Batched sampling with transformers generate (CPU or GPU), the LoRA adapter merged meanwhile."""

    def __init__(self, model, tokenizer, batch_size: int = 64):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = int(batch_size)

    def generate(self, prompt_ids: list[list[int]], benchmark: Benchmark, seed: int) -> list[list[Completion]]:
        import torch
        from transformers import GenerationConfig

        tokenizer, model = self.tokenizer, self.model
        eos = eos_token_ids(model, tokenizer)
        greedy = benchmark.temperature == 0  # one greedy completion stands for all n samples
        sampling = {} if greedy else {"temperature": benchmark.temperature, "top_p": benchmark.top_p, "top_k": 0}
        returned = 1 if greedy else benchmark.n
        config = GenerationConfig(
            do_sample=not greedy,
            **sampling,
            use_cache=True,
            max_new_tokens=benchmark.max_new_tokens,
            num_return_sequences=returned,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=sorted(eos),
        )
        per_batch = max(1, self.batch_size // returned)
        was_training = model.training
        model.eval()  # also switches activation checkpointing off
        results = []
        try:
            with merged_lora(model), torch.no_grad():  # un-merged LoRA costs more per token, more with the rank
                for start in range(0, len(prompt_ids), per_batch):
                    inputs = self._left_padded(prompt_ids[start : start + per_batch], model.device)
                    torch.manual_seed(sampling_seed(seed, start))
                    output = model.generate(**inputs, generation_config=config)
                    new = output[:, inputs["input_ids"].shape[1] :].tolist()
                    for i in range(len(new) // returned):
                        outputs = [self._completion(ids, eos) for ids in new[i * returned : (i + 1) * returned]]
                        results.append(outputs * (benchmark.n // returned))
        finally:
            model.train(was_training)
        return results

    def _left_padded(self, batch: list[list[int]], device) -> dict:
        import torch

        width = max(len(ids) for ids in batch)
        input_ids = torch.full((len(batch), width), self.tokenizer.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, ids in enumerate(batch):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention_mask[row, width - len(ids) :] = 1
        return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}

    def _completion(self, ids: list[int], eos: set[int]) -> Completion:
        end = next((i for i, t in enumerate(ids) if t in eos), None)
        kept = ids if end is None else ids[: end + 1]
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        return Completion(text, len(kept), truncated=end is None)
