"""Entry point: ``python -m fitnet.evaluate ckpt=outputs/train/.../best.pt [data=test.h5]``."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from .evaluation import run_evaluate


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    run_evaluate(cfg, Path(cfg.output_dir or HydraConfig.get().runtime.output_dir))


if __name__ == "__main__":
    main()
