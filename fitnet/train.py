"""``python -m fitnet.train [target=all epochs=30 data_dir=data/sersic ...]``: train a network on
the HDF5 splits that ``python -m simulate`` writes.

Writes ``last.pt`` and ``best.pt`` (checkpoints that carry everything predict needs),
``metrics.csv`` (one row per epoch) and ``loss_curve.png`` into the run folder. ``run(cfg)``
returns the best validation loss, so Hydra sweepers (multirun, Optuna) can minimise it.

Example: python -m fitnet.train target=[n,re] epochs=10 loss=gaussian_nll optim=adamw
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from sersic_runtime.commands import command


def run(cfg: DictConfig, output_dir: str | Path | None = None) -> float:
    """Run ``python -m fitnet.train`` with ``cfg`` (``fitnet.training.train``)."""
    from .training import train  # PyTorch and astropy load here, not for --help

    return train(cfg, output_dir)


main = command("fitnet.train", "train", __doc__)(run)

if __name__ == "__main__":
    main()
