"""Hydra entry point: `python launch.py [overrides]`, or `python launch.py -m ...` for a sweep."""

import hydra
from omegaconf import DictConfig

import rlvr_sweeps.resolvers  # noqa: F401 - registers the resolvers the configs use


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> dict:
    from hydra.core.hydra_config import HydraConfig

    from rlvr_sweeps.planning.search import check_launcher

    check_launcher(cfg.get("search"), HydraConfig.get().launcher.get("_target_"), bool(cfg.dry_run))
    # torch, TRL & co. are imported once the config has composed: a typo in an override is answered in half a
    # second instead of eight
    from rlvr_sweeps.train import train

    return train(cfg)


if __name__ == "__main__":
    main()
