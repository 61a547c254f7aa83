"""``python -m fitnet.baseline output=PATH [data=test.h5 limit=500]``: pyimfit Sersic fits of
every stamp of an HDF5 file (the data layout), resumable, in parallel (needs the ``imfit`` extra).

Stamps padded to the stored size are fitted on their original ``size`` cutout only (from
``/params/size``), as a real small cutout would be. The catalogue has the columns of ``fitnet.predict`` (``row, source, mag, n, re, q, flag,
problem``) plus ``seconds`` (time of each fit on one core), so ``fitnet.evaluate`` can put the
network and the fitter side by side. ``flag`` 16 (``fit_failed``, fitnet.flags) marks fits that did not converge.

Example: python -m fitnet.baseline output=imfit.csv limit=500
"""

from __future__ import annotations

from omegaconf import DictConfig

from sersic_runtime.commands import command


def run(cfg: DictConfig):
    """Run ``python -m fitnet.baseline`` with ``cfg`` (``fitnet.baseline_fits.fit_file``);
    return the catalogue (an astropy Table)."""
    from .baseline_fits import fit_file  # pyimfit, GalSim and astropy load here, not for --help

    return fit_file(cfg)


main = command("fitnet.baseline", "baseline", __doc__)(run)

if __name__ == "__main__":
    main()
