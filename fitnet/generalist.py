"""The generalist's own system, and how a user's cutout is brought to it and back.

The PSF-conditioned generalist (``ckpt=generalist``, conf/instrument/generalist.yaml) was
trained with pixels as the unit of length, a PSF per galaxy given as a second input, and
images at one background rms. ``stamps.GeneralistMaker`` brings each cutout there:

1. **Binning.** A cutout larger than the model's stamp is summed in b x b blocks, b the least
   integer that brings it within the stamp (``bin_image``), and the PSF is drawn at the binned
   sampling (``effective_psf``), so a large galaxy is measured rather than cropped
   (``bin_factor``); the fit (``fitnet.fit``) works on the cutout's own pixels.
2. **Noise units.** The background rms of the (binned) cutout is measured robustly
   (``background_rms``: the MAD outside its sources, or an rms map's median) and the cutout
   scaled to the model's rms (``input_scale`` of the row).
3. **PSF.** Each row's PSF (``fitnet.psfs``) is drawn as an effective PSF at the data's
   (binned) sampling on the model's PSF input; its FWHM in (binned) pixels outside the
   training range flags the row ``psf_range``.
4. **Back.** re in pixels times ``bin_factor`` times the pixel scale is re in arcsec (also
   ``re_px``); the flux in the model's system divided by the row's scale is the flux in image
   units (``flux``), and with a zero point (``zero_point=``, or ``ZERO_POINT_KEYWORDS`` in the
   header) the magnitude; without one, no ``mag`` columns. n and q are as predicted. Every check
   of conf/quality runs on the scaled cutout (``fitnet.measure``).
"""

from __future__ import annotations

import logging
import math

import numpy as np
from astropy.stats import mad_std, sigma_clipped_stats
from scipy import ndimage

from sersic_runtime.configs import load_group

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
CLIP_SIGMA = 3.0  # sigma-clipping of the noise measurement's first guess (sources rejected)
NOISE_ITERATIONS = 2  # source masks of the noise measurement, each from the rms before


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


def background_rms(data: np.ndarray, rms=None, quality=None) -> float:
    """Background rms of a cutout in its units: the median of its ``rms`` map where it has one,
    else the robust rms (MAD) of its pixels outside the sources (``quality.noise_mask_*``:
    pixels of the image smoothed to ``smooth_fwhm_px`` above that many noise rms, grown), or,
    when the sources leave fewer than ``noise_min_pixels`` (a cutout without sky), of its second
    differences, which a smooth galaxy hardly moves."""
    if rms is not None and np.isfinite(rms).any():
        return float(np.nanmedian(rms))
    finite = np.isfinite(data)
    if not finite.any():
        return math.nan
    q = quality or load_group("quality")
    _, _, noise = sigma_clipped_stats(data[finite], sigma=CLIP_SIGMA, stdfunc="mad_std")
    filled = np.where(finite, data, 0.0)
    sigma = q.smooth_fwhm_px / (2 * math.sqrt(2 * math.log(2)))
    smoothed = ndimage.gaussian_filter(filled, sigma)
    for _ in range(NOISE_ITERATIONS):
        threshold = q.noise_mask_nsigma * noise / (2 * math.sqrt(math.pi) * sigma)
        sources = ndimage.binary_dilation(
            smoothed > threshold, iterations=int(q.noise_mask_grow_px)
        )
        sky = data[finite & ~sources]
        if sky.size < q.noise_min_pixels:
            return second_difference_rms(filled)
        noise = float(mad_std(sky))
    return noise


def second_difference_rms(data: np.ndarray) -> float:
    """The rms of white noise from the MAD of an image's second differences along rows and
    columns (variance 1.5 x the pixels'), which a smooth light profile hardly moves."""
    a = data[1:-1, 1:-1] - 0.5 * (data[:-2, 1:-1] + data[2:, 1:-1])
    b = data[1:-1, 1:-1] - 0.5 * (data[1:-1, :-2] + data[1:-1, 2:])
    return float(0.5 * (mad_std(a) + mad_std(b)) / math.sqrt(1.5))


def zero_point_of(header, zero_point: float | None) -> float | None:
    """``zero_point`` if given, else the header's (``ZERO_POINT_KEYWORDS``), else None."""
    if zero_point is not None or header is None:
        return zero_point
    return next((float(header[k]) for k in ZERO_POINT_KEYWORDS if k in header), None)
