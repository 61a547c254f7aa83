"""``python -m fitnet.evaluate [ckpt=PATH] [data=test.h5]``: accuracy against the GalSim truth.

Writes into the run folder: ``metrics.json`` and ``metrics.md`` (the metrics of
docs/contract.md, section 7, overall and in bins of true magnitude and S/N),
``predictions.csv`` (every galaxy with its true and predicted labels),
``residuals_<label>.png``, ``gallery.png`` and the training loss curves carried by the
checkpoint(s). Without ``ckpt`` the shipped model is evaluated on data/sersic/test.h5.

Example: python -m fitnet.evaluate ckpt=outputs/train/<date>/<time>/best.pt
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from sersic_runtime.commands import command


def run(cfg: DictConfig, output_dir: str | Path | None = None) -> dict:
    """Run ``python -m fitnet.evaluate`` with ``cfg`` (``fitnet.evaluation.evaluate``)."""
    from .evaluation import evaluate  # PyTorch and astropy load here, not for --help

    return evaluate(cfg, output_dir)


main = command("fitnet.evaluate", "evaluate", __doc__)(run)

if __name__ == "__main__":
    main()
