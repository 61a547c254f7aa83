"""Cutouts of any instrument through the PSF-conditioned generalist (``ckpt=generalist``).

The generalist was trained in its own system (conf/instrument/generalist.yaml): pixels as the
unit of length, a PSF per galaxy given to the network as a second input, and images at one
background rms. A user's cutout is brought to that system and its predictions back:

1. **Binning.** A cutout larger than the model's stamp is summed in b x b blocks, b the least
   integer that brings it within the stamp, and the PSF is drawn at the binned sampling, so a
   large galaxy is measured rather than cropped (``bin_factor``).
2. **Noise units.** The background rms of the (binned) cutout is measured robustly (the
   sigma-clipped MAD, ``noise_rms`` in input units, or from an rms map); the cutout is scaled
   to the model's rms (``input_scale`` of the row).
3. **PSF.** The PSF image (``psf=``, checked as ``instrument=psf_image`` checks it: centred, a
   positive total, large enough) is drawn as an effective PSF at the data's (binned) sampling
   on the model's PSF input; its FWHM in (binned) pixels outside the training range flags the
   row ``psf_range``.
4. **Back.** re in pixels times ``bin_factor`` times ``pixel_scale`` is re in arcsec (also
   ``re_px``); the flux in the model's system divided by the row's scale is the flux in image
   units (``flux``), and with a ``zero_point`` the magnitude; without one, mag is NaN. n and q
   are as predicted. Every check of conf/quality runs on the scaled cutout.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.stats import sigma_clipped_stats

from sersic_runtime.errors import ConfigError, UserError
from simulate.psf import image_psf, profile_fwhm

from .flags import BITS
from .inputs import (
    InputError,
    Reader,
    Stamp,
    StampMaker,
    check_given_scale,
    count_images,
    first_fits_header,
    fits_pixel_scale,
)

log = logging.getLogger(__name__)

#: Header keywords read as the zero point (AB mag of one image unit summed), in this order.
ZERO_POINT_KEYWORDS = ("MAGZERO", "MAGZPT", "ZP", "ZEROPT", "PHOTZP")
#: Columns the generalist adds to each row: name -> (unit, description).
COLUMNS = {
    "bin_factor": ("", "the cutout was summed in bin_factor x bin_factor blocks before measuring"),
    "noise_rms": ("", "robust background rms of the (binned) cutout, in its units"),
    "input_scale": ("", "factor that brought the (binned) cutout to the model's noise rms"),
    "psf_fwhm_px": ("pixel", "FWHM of the PSF in (binned) pixels, as the model saw it"),
}
PSF_OFFSET_PX = 1.0  # data pixel: a PSF image centred further from its middle is refused
PSF_EDGE_FLUX = 0.02  # a PSF image whose outer 1/16 holds more of the flux is refused (too small)
CLIP_SIGMA = 3.0  # sigma-clipping of the noise measurement (sources rejected)


def read_psf(path, pixel_scale: float, includes_pixel: bool = True):
    """The PSF of FITS image ``path`` as a GalSim profile in arcsec (pixel removed), checked;
    one clear line (InputError) when it cannot be used."""
    if not Path(path).is_file():
        raise InputError(f"psf={path} does not exist")
    try:
        return image_psf(str(path), pixel_scale, PSF_OFFSET_PX, PSF_EDGE_FLUX, "lanczos7",
                         includes_pixel=includes_pixel, key="psf")  # fmt: skip
    except ConfigError as err:
        raise InputError(str(err)) from None


def effective_psf(psf, pixel_scale: float, size: int) -> np.ndarray:
    """``psf`` (arcsec) with the pixel, sampled at ``pixel_scale`` arcsec, ``size`` square,
    centred on the middle pixel, unit sum (the network's PSF input)."""
    image = psf.drawImage(nx=size, ny=size, scale=pixel_scale).array
    return (image / image.sum()).astype(np.float32)


def bin_image(data: np.ndarray, factor: int) -> np.ndarray:
    """``data`` summed in ``factor`` x ``factor`` blocks about its centre (edges trimmed)."""
    if factor == 1:
        return data
    h, w = (n - n % factor for n in data.shape)
    top, left = (data.shape[0] - h) // 2, (data.shape[1] - w) // 2
    cut = data[top : top + h, left : left + w]
    return cut.reshape(h // factor, factor, w // factor, factor).sum((1, 3))


def robust_rms(data: np.ndarray) -> float:
    """Background rms of a cutout: the sigma-clipped MAD of its finite pixels."""
    values = data[np.isfinite(data)]
    if values.size == 0:
        return math.nan
    _, _, std = sigma_clipped_stats(values, sigma=CLIP_SIGMA, stdfunc="mad_std")
    return float(std)


@dataclass
class GeneralistMaker:
    """A ``StampMaker`` for the generalist: bins, measures the noise, scales, attaches the
    PSF input and records what the conversion back needs in the stamp's columns.

    ``psf`` is the user's PSF (GalSim, arcsec), ``pixel_scale`` the data's arcsec / pixel,
    ``fwhm_range`` the training range of the PSF FWHM (pixel)."""

    maker: StampMaker
    psf: object
    pixel_scale: float
    psf_size: int
    fwhm_range: tuple[float, float]
    _psfs: dict = field(default_factory=dict)

    def psf_for(self, factor: int) -> tuple[np.ndarray, float]:
        """The PSF input at bin factor ``factor`` and its FWHM in binned pixels."""
        if factor not in self._psfs:
            scale = self.pixel_scale * factor
            fwhm = profile_fwhm(self.psf) / scale
            self._psfs[factor] = (effective_psf(self.psf, scale, self.psf_size), fwhm)
        return self._psfs[factor]

    def __call__(self, source: str, data, mask=None, padding=None) -> Stamp:
        data = np.asarray(data, dtype=np.float64)
        checker = self.maker.checker
        if checker is not None and data.ndim == 2 and max(data.shape) > checker.q.max_cutout_px:
            return self.maker(source, data, mask, padding)  # a field: flagged not_a_cutout
        size = self.maker.stamp_size
        factor = max(1, math.ceil(max(data.shape) / size)) if data.ndim == 2 else 1
        if data.ndim == 2 and factor > 1:
            bad = None if mask is None else bin_image(np.asarray(mask) != 0, factor) > 0
            data, mask, padding = bin_image(data, factor), bad, None
        rms = robust_rms(data) if data.ndim == 2 else math.nan
        scale = self.maker.noise_rms / rms if rms > 0 else math.nan
        stamp = self.maker(source, data * scale if math.isfinite(scale) else data, mask, padding)
        psf, fwhm = self.psf_for(factor)
        stamp.psf = psf
        stamp.columns.update(bin_factor=factor, noise_rms=rms, input_scale=scale, psf_fwhm_px=fwhm)
        if not math.isfinite(scale) and stamp.image is not None:
            stamp.image, stamp.flag = None, stamp.flag | BITS["no_source"]
            stamp.problem = "; ".join(
                p for p in (stamp.problem, "no_source: no noise measured") if p
            )
        lo, hi = self.fwhm_range
        if not lo <= fwhm <= hi:
            stamp.flag |= BITS["psf_range"]
            detail = f"psf_range: PSF FWHM {fwhm:.2f} px outside the trained {lo:.2f}-{hi:.2f} px"
            stamp.problem = "; ".join(p for p in (stamp.problem, detail) if p)
        return stamp


def to_user_units(table, zero_point: float | None, pixel_scale: float, model_zero_point: float):
    """The catalogue of the generalist's system converted in place to the user's: re in arcsec
    (and ``re_px``), ``flux`` and ``flux_err`` in image units, mag from ``zero_point`` (no mag
    columns without one); the columns of ``GeneralistMaker`` say how each row was scaled and
    binned."""
    import astropy.units as u

    factor = np.asarray(table["bin_factor"], dtype=float)
    scale = np.asarray(table["input_scale"], dtype=float)
    if "re" in table.colnames:
        table["re_px"] = np.asarray(table["re"]) * factor
        table["re_px"].unit, table["re_px"].description = u.pixel, "re in the cutout's pixels"
        table["re"] = table["re_px"] * pixel_scale
        table["re"].unit = u.arcsec
        if "re_err" in table.colnames:
            table["re_err"] = np.asarray(table["re_err"]) * factor * pixel_scale
            table["re_err"].unit = u.arcsec
    if "mag" in table.colnames:
        flux = 10 ** (-0.4 * (np.asarray(table["mag"]) - model_zero_point)) / scale
        table["flux"] = flux
        table["flux"].description = "total flux in the cutout's units (pixel values summed)"
        if "mag_err" in table.colnames:
            table["flux_err"] = flux * math.log(10) / 2.5 * np.asarray(table["mag_err"])
        table["flux"].unit = table["flux_err"].unit = None  # the image's own units
        if zero_point is None:
            table.remove_columns([c for c in ("mag", "mag_err") if c in table.colnames])
        else:
            table["mag"] = zero_point - 2.5 * np.log10(flux)
            table["mag"].unit = u.mag
    table.meta["pixel_scale_arcsec"] = pixel_scale
    table.meta["zero_point_mag"] = zero_point if zero_point is not None else "none given"
    return table


def zero_point_of(header, zero_point: float | None) -> float | None:
    """``zero_point`` if given, else the header's (``ZERO_POINT_KEYWORDS``), else None."""
    if zero_point is not None or header is None:
        return zero_point
    return next((float(header[k]) for k in ZERO_POINT_KEYWORDS if k in header), None)


def generalist_catalogue(predictor, images, batch_size: int, *, psf, pixel_scale=None,
                         zero_point=None, psf_includes_pixel=True, quality=None, pad_seed=0,
                         mask=None, progress=False):  # fmt: skip
    """The catalogue of ``images`` (as ``inference.catalogue`` takes them) measured by a
    PSF-conditioned ``predictor`` with the PSF image ``psf`` (module docstring): labels in the
    user's units, the ``COLUMNS`` of each row, flags."""
    from tqdm import tqdm

    from .inference import checker_for, predict_table

    if not predictor.needs_psf:
        raise UserError(
            "psf= is for a PSF-conditioned model (ckpt=generalist); this one has its own PSF"
        )
    header = first_fits_header(images)
    check_given_scale(images, pixel_scale)  # the header wins; a clash is one line
    scale = (header and fits_pixel_scale(header)) or pixel_scale
    if not scale:
        raise InputError("the images state no pixel scale: give pixel_scale= (arcsec / pixel)")
    zero_point = zero_point_of(header, zero_point)
    if zero_point is None:
        log.warning("no zero point (zero_point=, or a %s header keyword): the catalogue gives "
                    "flux in the images' units, and no mag", "/".join(ZERO_POINT_KEYWORDS[:3]))  # fmt: skip
    inner = StampMaker(predictor.stamp_size, predictor.noise_rms, 1.0, pad_seed,
                       checker_for(predictor, quality))  # fmt: skip
    config = predictor.payload["model"]["config"]
    fwhm = predictor.instrument.get("psf_fwhm_range_px") or (0.0, math.inf)
    maker = GeneralistMaker(inner, read_psf(psf, scale, psf_includes_pixel), scale,
                            int(config["psf_size"]), tuple(fwhm))  # fmt: skip
    reference = "the first image's {scale:.5g}: measure cutouts of one pixel scale per run"
    stamps = Reader(maker, scale, False, pixel_scale, reference).stamps(images, mask)
    with tqdm(total=count_images(images), unit="img", desc="predict", disable=not progress) as bar:
        table = predict_table(predictor, stamps, batch_size, bar.update, quality, COLUMNS)
    model_zp = float(predictor.instrument["zero_point_mag"])
    return to_user_units(table, zero_point, scale, model_zp)
