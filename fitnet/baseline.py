"""Entry point: ``python -m fitnet.baseline output=imfit.csv [data=test.h5 limit=500]``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from .fitting import run_baseline


@hydra.main(version_base="1.3", config_path="../conf", config_name="baseline")
def main(cfg: DictConfig) -> None:
    run_baseline(cfg)


if __name__ == "__main__":
    main()
