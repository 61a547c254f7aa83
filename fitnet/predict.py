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

Example: python -m fitnet.predict input=cutouts/ output=catalogue.csv pixel_scale=0.06
"""

from __future__ import annotations

import logging
import time

import numpy as np
from omegaconf import DictConfig

from .generalist import generalist_catalogue
from .inference import Predictor, catalogue, write_table
from .runtime import UserError, as_list, checkpoint_paths, command, positive, resolve_device
from .survey import open_mosaics, read_sources, survey_catalogue

log = logging.getLogger(__name__)


def run(cfg: DictConfig):
    """Predict every image of ``cfg.input`` and write the catalogue(s); return the table."""
    outputs = as_list(cfg.output)
    input_scale = positive("input_scale", cfg.input_scale)
    pixel_scale = positive("pixel_scale", cfg.pixel_scale, allow_null=True)
    predictor = Predictor(checkpoint_paths(cfg.ckpt), resolve_device(cfg.device), cfg.amp)
    start = time.perf_counter()
    if predictor.needs_psf or cfg.get("psf") is not None:  # the PSF-conditioned generalist
        table = predict_with_psf(cfg, predictor, pixel_scale)
    elif cfg.catalog is not None:  # a mosaic and its source catalogue
        table = survey_catalogue(
            predictor,
            open_mosaics(cfg.input, cfg.weight, cfg.rms, cfg.mask, cfg.segmap),
            read_sources(cfg.catalog),
            cfg.columns,
            cfg.batch_size[predictor.device.type],
            quality=cfg.quality,
            input_scale=input_scale,
            pad_seed=cfg.pad_seed,
            pixel_scale=pixel_scale,
            allow_mismatch=cfg.allow_pixel_scale_mismatch,
            progress=cfg.progress,
        )
    else:
        if cfg.weight is not None or cfg.rms is not None or cfg.segmap is not None:
            raise UserError("weight=, rms= and segmap= are maps of a mosaic: give catalog= too")
        if len(as_list(cfg.input)) > 1:
            raise UserError("a list of inputs needs catalog= (mosaics); cutouts go in one folder")
        table = catalogue(
            predictor,
            cfg.input,
            cfg.batch_size[predictor.device.type],
            input_scale=input_scale,
            pad_seed=cfg.pad_seed,
            quality=cfg.quality,
            pixel_scale=pixel_scale,
            allow_mismatch=cfg.allow_pixel_scale_mismatch,
            mask=cfg.mask,
            progress=cfg.progress,
        )
    seconds = time.perf_counter() - start
    for path in outputs:
        write_table(table, path)
    flagged = int((table["flag"] != 0).sum())
    skipped = int(np.isnan(table[predictor.labels[0]]).sum())
    log.info(
        "predicted %s for %d images (%d flagged, %d of them not measured) in %.1f s "
        "(%.0f images/s); wrote %s",
        predictor.labels,
        len(table),
        flagged,
        skipped,
        seconds,
        len(table) / max(seconds, 1e-9),
        ", ".join(map(str, outputs)),
    )
    return table


def predict_with_psf(cfg: DictConfig, predictor: Predictor, pixel_scale):
    """The catalogue of cutouts measured by a PSF-conditioned model with ``cfg.psf``."""
    if cfg.get("psf") is None:
        raise UserError(
            f"{predictor.paths[0]} takes the PSF as an input: give psf=psf.fits (a FITS image of "
            "the cutouts' PSF)"
        )
    if cfg.catalog is not None or cfg.weight is not None or cfg.rms is not None:
        raise UserError(
            "ckpt=generalist measures cutouts: catalog=, weight= and rms= are not for it"
        )
    return generalist_catalogue(
        predictor,
        cfg.input,
        cfg.batch_size[predictor.device.type],
        psf=cfg.psf,
        pixel_scale=pixel_scale,
        zero_point=cfg.get("zero_point"),
        psf_includes_pixel=cfg.get("psf_includes_pixel", True),
        quality=cfg.quality,
        pad_seed=cfg.pad_seed,
        mask=cfg.mask,
        progress=cfg.progress,
    )


main = command("fitnet.predict", "predict", __doc__)(run)

if __name__ == "__main__":
    main()
