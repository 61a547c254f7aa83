"""``python -m fitnet.predict input=PATH output=PATH [ckpt=PATH]``: a catalogue from new images.

The input is an HDF5 file (only /images needed), a FITS image or cube, or a folder of FITS
cutouts; images of any size are padded (with noise) or cropped to the model's stamps. With
``catalog=``, the input is a mosaic and every catalogue row is measured at its position
(``fitnet.survey``), with ``weight=`` or ``rms=`` maps bringing the cutouts to the model's noise. The
output (CSV, ECSV or FITS) has one row per image in input order: the labels mag (AB), n,
re (arcsec, semi-major axis) and q, their 1-sigma errors, and a flag (0 = trust the row).
Without ``ckpt`` the shipped pretrained model is used. ``ckpt=generalist`` measures cutouts of
any instrument given their PSF (``psf=psf.fits``, ``pixel_scale=``, ``zero_point=``;
``fitnet.generalist``).

With ``output=`` a folder (``cats/``), every input of a list or glob gets its own catalogue
there, named after it; ``shards=K shard=i`` measures only every K-th input (a job of a
multirun or a cluster array), inputs whose catalogue exists are skipped, and
``python -m fitnet.merge input=cats/ output=all.fits`` joins the catalogues.

Example: python -m fitnet.predict input=cutouts/ output=catalogue.csv pixel_scale=0.06
"""

from __future__ import annotations

from omegaconf import DictConfig

from sersic_runtime.commands import command


def run(cfg: DictConfig) -> object:
    """Run ``python -m fitnet.predict`` with ``cfg`` (``fitnet.prediction.predict``)."""
    from .prediction import predict  # PyTorch and astropy load here, not for --help

    return predict(cfg)


main = command("fitnet.predict", "predict", __doc__)(run)

if __name__ == "__main__":
    main()
