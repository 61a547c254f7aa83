"""Entry point: ``python -m fitnet.train target=all epochs=30 data_dir=data/sersic``.

Returns the best validation loss, so Hydra sweepers (multirun, Optuna) can optimise it.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from .training import train


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    output_dir = cfg.output_dir or HydraConfig.get().runtime.output_dir
    return train(cfg, Path(output_dir))


if __name__ == "__main__":
    main()
