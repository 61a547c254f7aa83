"""Entry point: ``python -m fitnet.predict ckpt=best.pt input=cutouts/ output=catalogue.csv``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from .predicting import run_predict


@hydra.main(version_base="1.3", config_path="../conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    run_predict(cfg)


if __name__ == "__main__":
    main()
