"""The pretrained models shipped with the package, by name, and how to make one.

``SHIPPED`` names them: ``candels_h`` (the CANDELS F160W specialist, the default when ``ckpt``
is not given) and ``generalist`` (the PSF-conditioned model for any instrument, which needs
``psf=``); ``ckpt=<name>`` picks one. ``export`` writes a slim copy of a checkpoint (weights,
targets, label and image normalisation, instrument, config and training history; no optimiser
or random-number state): ``python -m fitnet.pretrained ckpt=best.pt output=my_model.pt``.
"""

from __future__ import annotations

from pathlib import Path

from ..checkpoint import CheckpointError, load, save

DEFAULT = Path(__file__).with_name("candels_h.pt")
#: name -> shipped checkpoint (``ckpt=<name>``)
SHIPPED = {"candels_h": DEFAULT, "generalist": Path(__file__).with_name("generalist.pt")}
#: Checkpoint entries needed only to resume training.
RESUME_ONLY = ("optimizer", "scheduler", "rng")


def default_checkpoint() -> Path:
    """Path of the shipped model; a clear error if this installation has none."""
    if not DEFAULT.is_file():
        raise CheckpointError(
            f"no checkpoint given and no pretrained model at {DEFAULT}; pass ckpt=PATH to a best.pt"
        )
    return DEFAULT


def shipped_checkpoint(name: str) -> Path:
    """Path of the shipped model ``name`` (a key of ``SHIPPED``); a clear error if this
    installation lacks its file."""
    path = SHIPPED[name]
    if not path.is_file():
        raise CheckpointError(f"ckpt={name}: this installation has no {path}")
    return path


def export(src: str | Path, dst: str | Path) -> Path:
    """Write a slim, prediction-only copy of checkpoint ``src`` to ``dst``."""
    payload = {k: v for k, v in load(src).items() if k not in RESUME_ONLY}
    payload["exported_from"] = str(src)
    save(Path(dst), payload)
    return Path(dst)
