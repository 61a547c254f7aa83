"""``python -m fitnet.calibrate data=[a.h5,...] output=PATH [ckpt=PATH]``: measure a
gaussian_nll model's sigma scale factors again on independent simulated galaxies.

Training measures the sigma scale factors (``labels.calibration_scale``) on its validation
split: 5,000 galaxies in the default set, about 700 per magnitude bin, which leaves 1.8
percentage points of binomial noise in every bin's 68% coverage, and the same split also picks
the best epoch. This step measures them again on independent simulated galaxies, as many as
one likes, and writes a copy of the checkpoint that carries the new factors and a record of
how they were measured (``payload["calibration"]``).

Example: python -m simulate n=20000 seed=31337 out_dir=data/calib bounds.splits=[]
         python -m fitnet.calibrate data=[data/calib/train.h5] output=calibrated.pt
"""

from __future__ import annotations

from omegaconf import DictConfig

from sersic_runtime.commands import command


def run(cfg: DictConfig) -> dict:
    """Run ``python -m fitnet.calibrate`` with ``cfg`` (``fitnet.calibration.calibrate``)."""
    from .calibration import calibrate  # PyTorch and astropy load here, not for --help

    return calibrate(cfg)


main = command("fitnet.calibrate", "calibrate", __doc__)(run)

if __name__ == "__main__":
    main()
