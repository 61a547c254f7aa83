"""A survey's own PSF image as the instrument's PSF (GalSim ``InterpolatedImage``).

``instrument.psf`` takes any GalSim profile; for a PSF image from the survey (a PSFEx or PIFF
model drawn at a position, a coadd's PSF image, webbpsf's output), point it at the FITS file::

    psf:
      _target_: simulate.psf.image_psf
      file: psf.fits
      data_pixel_scale: ${..pixel_scale}
      ...

as ``conf/instrument/psf_image.yaml`` does (``instrument=psf_image instrument.psf.file=psf.fits``).

The image is checked (finite, a positive total, centred within ``max_offset_px`` data pixels,
large enough that its edge holds less than ``max_edge_flux`` of the light), normalised to unit
flux and recentred on its centroid. An effective PSF (one that already includes the detector
pixel, as PSFEx, PIFF and coadd PSF images do) is divided by that pixel in Fourier space, since
the renderer convolves every galaxy with the PSF and the pixel.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import galsim
import numpy as np
from astropy.io import fits

from sersic_runtime.errors import ConfigError

log = logging.getLogger(__name__)

#: Header keywords giving the PSF image's pixel scale in arcsec (webbpsf writes PIXELSCL).
SCALE_KEYS = ("PIXELSCL", "PIXSCALE", "PIXSCAL1", "SECPIX")
#: Header keywords giving PSF pixels per data pixel (webbpsf writes OVERSAMP).
OVERSAMPLING_KEYS = ("OVERSAMP", "OVERSAMPL", "DET_SAMP")


def profile_fwhm(psf: galsim.GSObject) -> float:
    """FWHM of a GalSim profile, in its own units (arcsec, or pixels for a profile in pixel
    units), by GalSim's ``calculateFWHM``. That draws the profile, and an obscured Airy can give
    NaN at the Nyquist scale (about 1 sheared preset PSF in 24,000); the profile is then drawn
    again at finer scales."""
    fwhm = float(psf.calculateFWHM())
    for factor in (0.5, 0.25):
        if math.isfinite(fwhm):
            break
        fwhm = float(psf.calculateFWHM(scale=factor * psf.nyquist_scale))
    return fwhm


def header_scale(header) -> float | None:
    """The pixel scale in arcsec a FITS header gives (a scale keyword or its CD / CDELT in
    degrees), or None."""
    for key in SCALE_KEYS:
        if key in header:
            return float(header[key])
    for key in ("CD1_1", "CDELT1"):
        if key in header and float(header[key]) != 0:
            return abs(float(header[key])) * 3600.0
    return None


def psf_pixel_scale(header, data_pixel_scale, pixel_scale=None, oversampling=None):
    """Arcsec per pixel of a PSF image: ``pixel_scale`` if given, else the data's divided by
    ``oversampling``, else the header's scale, else its oversampling, else the data's."""
    if pixel_scale is not None:
        return float(pixel_scale)
    if oversampling is None:
        scale = header_scale(header)
        if scale is not None:
            return scale
        oversampling = next((header[k] for k in OVERSAMPLING_KEYS if k in header), None)
    if oversampling is None:
        log.info("PSF image: no pixel scale or oversampling given; taking the data's")
        return float(data_pixel_scale)
    if not float(oversampling) > 0:
        raise ConfigError(f"instrument.psf.oversampling={oversampling!r} must be > 0")
    return float(data_pixel_scale) / float(oversampling)


def check_psf_image(array: np.ndarray, scale: float, data_pixel_scale: float, where: str,
                    max_offset_px: float, max_edge_flux: float) -> tuple[float, float]:  # fmt: skip
    """Raise ConfigError naming ``where`` (``psf=psf.fits``) unless the PSF image is usable;
    return its centroid's offset (x, y) from the image centre in PSF pixels."""
    if array.ndim != 2 or min(array.shape) < 5:
        raise ConfigError(f"{where}: needs a 2-D image of at least 5 x 5 pixels, not {array.shape}")
    if not np.isfinite(array).all():
        raise ConfigError(f"{where}: holds NaN or infinite pixels")
    total = float(array.sum())
    if not total > 0:
        raise ConfigError(f"{where}: its pixels sum to {total:g}; a PSF needs a positive total")
    bright = np.where(array > 0.01 * array.max(), array, 0.0)
    ys, xs = np.indices(array.shape)
    cx = (bright * xs).sum() / bright.sum() - 0.5 * (array.shape[1] - 1)
    cy = (bright * ys).sum() / bright.sum() - 0.5 * (array.shape[0] - 1)
    offset_px = math.hypot(cx, cy) * scale / data_pixel_scale
    if offset_px > max_offset_px:
        raise ConfigError(
            f"{where}: its light is centred {offset_px:.2f} data pixels from the image centre "
            f"(at most {max_offset_px} allowed): give a PSF image centred on the star"
        )
    width = max(1, min(array.shape) // 16)
    inner = array[width:-width, width:-width].sum()
    edge = (total - inner) / total
    if edge > max_edge_flux:
        raise ConfigError(
            f"{where}: its outer {width} pixel(s) hold {edge:.1%} of the flux (at most "
            f"{max_edge_flux:.1%} allowed): the image is too small for this PSF; give a larger one"
        )
    return cx, cy


def image_psf(file: str, data_pixel_scale: float, max_offset_px: float, max_edge_flux: float,
              interpolant: str, hdu: int = 0, pixel_scale: float | None = None,
              oversampling: float | None = None, includes_pixel: bool = True,
              key: str = "instrument.psf.file") -> galsim.GSObject:  # fmt: skip
    """The PSF of a FITS image, as a GalSim profile of unit flux (sizes in arcsec) that does not
    include the detector pixel.

    ``data_pixel_scale``: arcsec per pixel of the images the PSF belongs to; ``pixel_scale``
    (arcsec) or ``oversampling`` (PSF pixels per data pixel) say how the image is sampled, else
    its header does (``psf_pixel_scale``); ``interpolant``: GalSim's ``x_interpolant`` between
    its pixels; ``max_offset_px`` and ``max_edge_flux`` bound ``check_psf_image``.
    ``includes_pixel``: the image is an effective PSF
    that already includes the detector pixel (true for PSFEx, PIFF, coadd PSFs; false for an
    optical PSF such as webbpsf's oversampled one). ``key`` names the option in messages.
    """
    path = Path(file)
    if not path.is_file():
        raise ConfigError(f"{key}={file} does not exist")
    try:
        with fits.open(path) as hdul:
            array = np.asarray(hdul[hdu].data, dtype=float)
            header = hdul[hdu].header
    except (OSError, IndexError, TypeError, ValueError) as err:
        raise ConfigError(f"{key}={file}: not a readable FITS image ({err})") from err
    scale = psf_pixel_scale(header, data_pixel_scale, pixel_scale, oversampling)
    return array_psf(array, scale, data_pixel_scale, max_offset_px, max_edge_flux, interpolant,
                     includes_pixel, f"{key}={file}")  # fmt: skip


def array_psf(array: np.ndarray, scale: float, data_pixel_scale: float, max_offset_px: float,
              max_edge_flux: float, interpolant: str, includes_pixel: bool = True,
              where: str = "the PSF image") -> galsim.GSObject:  # fmt: skip
    """The PSF of the image ``array`` sampled at ``scale`` arcsec per pixel, as ``image_psf``
    makes it (checked by ``check_psf_image``, naming ``where``)."""
    array = np.asarray(array, dtype=float)
    cx, cy = check_psf_image(array, scale, data_pixel_scale, where, max_offset_px, max_edge_flux)
    image = galsim.Image(np.ascontiguousarray(array / array.sum()), scale=scale)
    psf = galsim.InterpolatedImage(
        image, x_interpolant=interpolant, offset=galsim.PositionD(cx, cy), normalization="flux"
    )
    if includes_pixel:
        psf = galsim.Convolve(psf, galsim.Deconvolve(galsim.Pixel(float(data_pixel_scale))))
    return psf.withFlux(1.0)
