"""Sample from a LoRA model with the adapter merged into the weights, then put the base weights back
exactly.

Un-merged, every LoRA layer adds two matmuls per token: generation cost grows with the rank although
the rank changes nothing about the tokens produced (on an H100, rank 256 rollouts ran 3.3x slower than
rank 8). Merged, a rollout costs what the base model costs. PEFT's merge_adapter/unmerge_adapter would
add B@A into the base weights and subtract it again; in bf16 each cycle rounds, and over thousands of
rollouts the frozen base weights drift. Here PEFT merges into fresh copies (safe_merge) and the
untouched original tensors are swapped back afterwards: bit-exact, at the transient cost of one copy
of the adapted weights. The same holds for every lora.variant: PEFT's merge computes DoRA's
magnitude-scaled weight (and caches the weight norm it used, dropped here), and rsLoRA and PiSSA
merge as LoRA does (another scale; another frozen base).
"""

from __future__ import annotations

from contextlib import contextmanager


def lora_layers(model) -> list:
    from peft.tuners.lora import LoraLayer

    return [module for module in model.modules() if isinstance(module, LoraLayer)]


@contextmanager
def merged_lora(model):
    """Within the block, the model's LoRA layers compute with merged weights (no adapter matmuls,
    no dropout); afterwards the base weights are the very tensors they were before."""
    originals = []
    try:
        for layer in lora_layers(model):
            if layer.merged or layer.disable_adapters:
                continue
            base = layer.get_base_layer()
            bias = getattr(base, "bias", None)
            originals.append((layer, base.weight.data, None if bias is None else bias.data))
            layer.merge(safe_merge=True)  # writes W + scale * B @ A into a new tensor
        yield model
    finally:
        for layer, weight, bias in originals:
            base = layer.get_base_layer()
            base.weight.data = weight
            if bias is not None:
                base.bias.data = bias
            for name in layer.merged_adapters:
                layer._caches.pop(f"{name}-weight_norm", None)  # DoRA's, kept by PEFT for its un-merge
            layer.merged_adapters.clear()
