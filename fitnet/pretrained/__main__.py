"""``python -m fitnet.pretrained ckpt=PATH output=PATH``: a slim, prediction-only copy of a
checkpoint (weights, targets, label and image normalisation, instrument, config and training
history; no optimiser or random-number state), in the current checkpoint format.

It writes only the file named by ``output=``, and replaces an existing one only with
``overwrite=true``. It also converts a checkpoint of an earlier format (docs/security.md).

Example: python -m fitnet.pretrained ckpt=outputs/train/2026-01-01/12-00-00/best.pt output=my_model.pt
"""

from __future__ import annotations

import logging
from pathlib import Path

from omegaconf import DictConfig

from sersic_runtime.commands import command
from sersic_runtime.errors import UserError

from . import export

log = logging.getLogger("fitnet.pretrained")


def run(cfg: DictConfig) -> Path:
    """Export ``cfg.ckpt`` to ``cfg.output``; return the path written."""
    output = Path(cfg.output)
    if output.suffix != ".pt":
        raise UserError(f"output={output}: a checkpoint file ends in .pt")
    if output.exists() and not cfg.overwrite:
        raise UserError(
            f"output={output} exists: name another file, or pass overwrite=true to replace it"
        )
    path = export(cfg.ckpt, output)
    log.info("wrote %s (%.1f MB) from %s", path, path.stat().st_size / 1e6, cfg.ckpt)
    return path


main = command("fitnet.pretrained", "pretrained", __doc__)(run)

if __name__ == "__main__":
    main()
