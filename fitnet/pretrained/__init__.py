"""The pretrained models shipped with the package, by name, and how to make one.

``SHIPPED`` names them: ``candels_h`` (the CANDELS F160W specialist, the default when ``ckpt``
is not given) and ``generalist`` (the PSF-conditioned model for any instrument, which needs
``psf=``); ``ckpt=<name>`` picks one. ``python -m fitnet.pretrained outputs/train/<run>/best.pt
[--dst fitnet/pretrained/<name>.pt]`` writes a slim copy of a checkpoint (weights, targets,
label and image normalisation, instrument, config and training history; no optimiser or
random-number state).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..checkpoint import CheckpointError, load, save
from ..runtime import EXIT_USER_ERROR, full_error, report

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


def export(src: str | Path, dst: str | Path = DEFAULT) -> Path:
    """Write a slim, prediction-only copy of checkpoint ``src`` to ``dst``."""
    payload = {k: v for k, v in load(src).items() if k not in RESUME_ONLY}
    payload["exported_from"] = str(src)
    save(Path(dst), payload)
    return Path(dst)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("src", help="checkpoint to export (a best.pt)")
    parser.add_argument("--dst", default=str(DEFAULT), help=f"destination (default {DEFAULT})")
    args = parser.parse_args()
    try:
        path = export(args.src, args.dst)
    except CheckpointError as err:
        if full_error():
            raise
        report(err)
        raise SystemExit(EXIT_USER_ERROR) from None
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
