"""``python -m simulate [n=2000 seed=20260101 out_dir=data/sersic ...]``: render Sersic galaxies
with GalSim and write the train, val and test HDF5 splits (8:1:1 by default).

Every galaxy depends only on the master seed and its index, so the files are the same for any
number of workers, and a killed run resumes where it stopped when run again.

Example: python -m simulate n=50000 seed=7 out_dir=data/seed7 instrument.psf.fwhm=0.12
"""

from __future__ import annotations

from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from sersic_runtime.commands import command


def output_dir(cfg: DictConfig) -> Path:
    """Where this job writes: ``out_dir``, or in a multirun ``out_dir/<the job's overrides>``
    (except for shards, which share ``out_dir``).

    A multirun that does not sweep ``out_dir`` itself would otherwise write every job's data to
    the same folder.
    """
    if cfg.get("shard") is not None:  # every shard writes its parts into the one out_dir
        return Path(cfg.out_dir)
    hc = HydraConfig.get()
    swept = any(o.split("=", 1)[0].lstrip("+~") == "out_dir" for o in hc.overrides.task)
    if hc.mode == RunMode.MULTIRUN and not swept:
        return Path(cfg.out_dir) / (hc.job.override_dirname or f"job{hc.job.num}")
    return Path(cfg.out_dir)


def run(cfg: DictConfig) -> dict:
    """Render the data set of ``cfg`` into its output folder; return the summary."""
    from .pipeline import run_simulation  # GalSim loads here, not for --help

    return run_simulation(cfg, out_dir=output_dir(cfg))


main = command("simulate", "simulate", __doc__)(run)

if __name__ == "__main__":
    main()
