"""Where runs go: the GPU a run finds (hardware), the Hugging Face Hub (hub) and Weights & Biases (tracking,
wandb_server). Imports nothing else of the package but errors."""
