"""The policy a run trains: the base model (models), its LoRA adapter (adapters), and the merged weights that
generation reads (lora_merge)."""
