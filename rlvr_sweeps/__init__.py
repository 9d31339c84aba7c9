"""rlvr-sweeps: GRPO + LoRA experiments on small language models under a fixed compute budget."""

__version__ = "0.1.0"
