"""The pretrained models shipped with the package (``candels_h.pt``, ``generalist.pt`` in this
folder; ``fitnet.runtime.SHIPPED`` names them: ``candels_h``, the CANDELS F160W specialist and
the default when ``ckpt`` is not given, and ``generalist``, the PSF-conditioned model for any
instrument, which needs ``psf=``; ``ckpt=<name>`` picks one), and how to make one. ``export`` writes a slim copy of a
checkpoint (weights, targets, label and image normalisation, instrument, config and training
history; no optimiser or random-number state): ``python -m fitnet.pretrained ckpt=best.pt output=my_model.pt``.
"""

from __future__ import annotations

from pathlib import Path

#: Checkpoint entries needed only to resume training.
RESUME_ONLY = ("optimizer", "scheduler", "rng")


def export(src: str | Path, dst: str | Path) -> Path:
    """Write a slim, prediction-only copy of checkpoint ``src`` to ``dst``."""
    from ..checkpoint import load, save  # torch: only when exporting

    payload = {k: v for k, v in load(src).items() if k not in RESUME_ONLY}
    payload["exported_from"] = str(src)
    save(Path(dst), payload)
    return Path(dst)
