"""Entry point: ``python -m simulate n=50000 seed=1 out_dir=data/sersic workers=0``."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from .pipeline import run_simulation


def output_dir(cfg: DictConfig) -> Path:
    """Where this job writes: ``out_dir``, or in a multirun ``out_dir/<the job's overrides>``.

    A multirun that does not sweep ``out_dir`` itself would otherwise write every job's data to
    the same folder.
    """
    hc = HydraConfig.get()
    swept = any(o.split("=", 1)[0].lstrip("+~") == "out_dir" for o in hc.overrides.task)
    if hc.mode == RunMode.MULTIRUN and not swept:
        return Path(cfg.out_dir) / (hc.job.override_dirname or f"job{hc.job.num}")
    return Path(cfg.out_dir)


@hydra.main(version_base="1.3", config_path="../conf", config_name="simulate")
def main(cfg: DictConfig) -> None:
    run_simulation(cfg, out_dir=output_dir(cfg))


if __name__ == "__main__":
    main()
