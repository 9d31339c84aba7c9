"""Hydra launchers for rlvr-sweeps (Hydra finds launchers only inside the hydra_plugins package)."""
