"""Sampling backends for evaluation: transformers generate, or vLLM (with the LoRA adapter).

Both return, per prompt, n Completions sampled with the benchmark's temperature, top_p and
max_new_tokens, seeded from eval.seed so that the same config gives the same numbers.
"""

from __future__ import annotations

from .evaluation import Benchmark, Completion
from .errors import UserError
from .lora_merge import merged_lora


def make_generator(cfg, trainer, loaded):
    """The evaluation backend for this run: eval.backend, or auto (vLLM when training uses it)."""
    backend = cfg.eval.backend
    if backend == "auto":
        backend = "vllm" if cfg.generation.get("use_vllm") else "hf"
    if backend == "hf":
        return HFGenerator(trainer.model, loaded.tokenizer, cfg.eval.batch_size)
    if backend == "vllm":
        from .vllm_backend import TrainerVLLMGenerator

        return TrainerVLLMGenerator(trainer)
    raise UserError(f"eval.backend={backend!r}: use auto, hf or vllm.")


def sampling_seed(seed: int, index: int) -> int:
    return int(seed) * 1_000_003 + index


class HFGenerator:
    """Batched sampling with transformers generate (CPU or GPU), the LoRA adapter merged meanwhile."""

    def __init__(self, model, tokenizer, batch_size: int = 64):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = int(batch_size)

    def generate(self, prompts: list[str], benchmark: Benchmark, seed: int) -> list[list[Completion]]:
        import torch
        from transformers import GenerationConfig

        tokenizer, model = self.tokenizer, self.model
        eos = {tokenizer.eos_token_id, *([model.generation_config.eos_token_id] if isinstance(model.generation_config.eos_token_id, int) else (model.generation_config.eos_token_id or []))}
        eos.discard(None)
        greedy = benchmark.temperature == 0  # one greedy completion stands for all n samples
        sampling = {} if greedy else {"temperature": benchmark.temperature, "top_p": benchmark.top_p, "top_k": 0}
        returned = 1 if greedy else benchmark.n
        config = GenerationConfig(do_sample=not greedy, **sampling, use_cache=True, max_new_tokens=benchmark.max_new_tokens,
                                  num_return_sequences=returned, pad_token_id=tokenizer.pad_token_id, eos_token_id=sorted(eos))
        per_batch = max(1, self.batch_size // returned)
        was_training = model.training
        model.eval()  # also switches activation checkpointing off
        padding_side = tokenizer.padding_side
        tokenizer.padding_side = "left"
        results = []
        try:
            with merged_lora(model), torch.no_grad():  # un-merged LoRA costs more per token, more with the rank
                for start in range(0, len(prompts), per_batch):
                    chunk = prompts[start : start + per_batch]
                    inputs = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
                    torch.manual_seed(sampling_seed(seed, start))
                    output = model.generate(**inputs, generation_config=config)
                    new = output[:, inputs["input_ids"].shape[1] :].tolist()
                    for i in range(len(chunk)):
                        outputs = [self._completion(ids, eos) for ids in new[i * returned : (i + 1) * returned]]
                        results.append(outputs * (benchmark.n // returned))
        finally:
            tokenizer.padding_side = padding_side
            model.train(was_training)
        return results

    def _completion(self, ids: list[int], eos: set[int]) -> Completion:
        end = next((i for i, t in enumerate(ids) if t in eos), None)
        kept = ids if end is None else ids[: end + 1]
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        return Completion(text, len(kept), truncated=end is None)



