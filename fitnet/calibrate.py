"""Entry point: ``python -m fitnet.calibrate ckpt=best.pt data=[calib.h5] output=calibrated.pt``."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from .calibrating import run_calibrate


@hydra.main(version_base="1.3", config_path="../conf", config_name="calibrate")
def main(cfg: DictConfig) -> None:
    run_calibrate(cfg)


if __name__ == "__main__":
    main()
