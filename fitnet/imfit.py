"""The classical reference: one Sersic fitted with pyimfit (optional extra ``imfit``).

Each stamp is fitted with the true PSF, drawn *without* the pixel response (imfit integrates
each pixel itself; handing it the pixel-convolved PSF would count the pixel twice). The fit
starts from image moments, and imfit derives the noise from gain, read noise and the
subtracted sky (the image is passed in electrons). imfit's Sersic ``r_e`` is along the
semi-major axis and its ``PA`` counts from +y, so labels convert directly to contract conventions.
"""

from __future__ import annotations

import math
import time

import galsim
import numpy as np

from sersic_runtime.errors import UserError
from simulate.render import sersic_log_intensity_at_re

PSF_SIZE = 41  # pixel, side of the PSF image handed to imfit


def require_pyimfit():
    """The pyimfit module; a clear error when the optional extra is not installed."""
    try:
        import pyimfit
    except ImportError as err:
        raise UserError(
            "pyimfit is not installed: pip install 'sersic-fitnet[imfit]' (or -e '.[imfit]')"
        ) from err
    return pyimfit


def psf_image(psf: galsim.GSObject, pixel_scale: float, size: int = PSF_SIZE) -> np.ndarray:
    """The PSF sampled at pixel centres without pixel convolution, normalised to unit sum."""
    image = psf.drawImage(nx=size, ny=size, scale=pixel_scale, method="no_pixel").array
    return image / image.sum()


def moment_start(image: np.ndarray, noise_rms: float, mask=None) -> dict:
    """Centre (numpy pixels), semi-major size (pixels), axis ratio, angle (deg from +x), flux;
    of the pixels ``mask`` (non-zero: bad) leaves."""
    y, x = np.indices(image.shape)
    if mask is not None:
        image = np.where(np.asarray(mask) != 0, 0.0, image)
    weights = np.where(image > 2 * noise_rms, image, 0.0)
    if weights.sum() <= 0:
        weights = np.clip(image, 0, None) + 1e-12
    total = weights.sum()
    xc, yc = (weights * x).sum() / total, (weights * y).sum() / total
    ixx = (weights * (x - xc) ** 2).sum() / total
    iyy = (weights * (y - yc) ** 2).sum() / total
    ixy = (weights * (x - xc) * (y - yc)).sum() / total
    evals = np.linalg.eigvalsh(np.array([[ixx, ixy], [ixy, iyy]]))
    major, minor = math.sqrt(max(evals[1], 0.25)), math.sqrt(max(evals[0], 0.25))
    return {
        "x": xc,
        "y": yc,
        "re": max(0.5, 1.18 * major),  # half-light radius of a Gaussian with this sigma
        "q": float(np.clip(minor / major, 0.1, 1.0)),
        "pa": math.degrees(0.5 * math.atan2(2 * ixy, ixx - iyy)) % 180.0,
        "flux": float(max(image.sum(), 10 * noise_rms)),
    }


def sersic_intensity_at_re(flux: float, n: float, re: float, q: float) -> float:
    """Surface brightness at r_e (per pixel) of a Sersic of total ``flux`` (re in pixels)."""
    return math.exp(sersic_log_intensity_at_re(flux, n, re, q))


def fit_sersic(
    image: np.ndarray,
    psf: np.ndarray,
    instrument: dict,
    n_start: float = 2.0,
    rms=None,
    mask=None,
    fit_sky: bool = False,
) -> dict:
    """Fit one Sersic to ``image`` (sky-subtracted e-/s per pixel); labels in contract units.

    ``instrument`` uses the HDF5/checkpoint attribute names (pixel_scale_arcsec, zero_point_mag,
    exposure_time_s, sky_level_e_per_s_per_pixel, read_noise_e, background_rms_e_per_s,
    noise_model). With a ``noise_model`` other than ``ccd`` imfit gets an error map instead:
    the stamp's background rms ``rms`` (e-/s per pixel; the file's when None) and the source's
    Poisson noise, per pixel (correlations left out, as GALFIT and imfit users do). ``mask``
    (the image's shape, non-zero: bad) leaves pixels out of the fit and of its start.
    ``fit_sky`` fits a flat sky (e-/s per pixel, returned as ``sky``) with the Sersic, for an
    image whose background was not subtracted.
    Returns mag, n, re (arcsec), q, pa (deg from +x), seconds, and ok (fit converged).
    """
    pyimfit = require_pyimfit()
    t = instrument["exposure_time_s"]
    start = moment_start(image, instrument["background_rms_e_per_s"], mask)
    h, w = image.shape
    model = pyimfit.SimpleModelDescription()
    model.x0.setValue(start["x"] + 1, [start["x"] + 1 - 5, start["x"] + 1 + 5])  # imfit is 1-based
    model.y0.setValue(start["y"] + 1, [start["y"] + 1 - 5, start["y"] + 1 + 5])
    sersic = pyimfit.make_imfit_function("Sersic")
    sersic.PA.setValue((start["pa"] - 90.0) % 180.0)  # imfit: from +y; periodic, so no limits
    sersic.ell.setValue(1.0 - start["q"], [0.0, 0.95])
    sersic.n.setValue(n_start, [0.2, 10.0])
    i_e = sersic_intensity_at_re(start["flux"] * t, n_start, start["re"], start["q"])
    sersic.I_e.setValue(i_e, [i_e * 1e-4, i_e * 1e4])
    sersic.r_e.setValue(start["re"], [0.1, 2.0 * max(h, w)])
    model.addFunction(sersic)
    if fit_sky:
        sky = pyimfit.make_imfit_function("FlatSky")
        sky.I_sky.setValue(0.0, [-1e6, 1e6])  # e- per pixel
        model.addFunction(sky)
    fitter = pyimfit.Imfit(model, psf=psf, maxThreads=1)
    t0 = time.perf_counter()
    electrons = image.astype(np.float64) * t
    if instrument.get("noise_model", "ccd") == "ccd":
        fitter.fit(
            electrons,
            mask=mask,
            gain=1.0,
            read_noise=instrument["read_noise_e"],
            original_sky=instrument["sky_level_e_per_s_per_pixel"] * t,
        )
    else:
        background = (instrument["background_rms_e_per_s"] if rms is None else rms) * t
        fitter.fit(electrons, mask=mask,
                   error=np.sqrt(background**2 + np.clip(electrons, 0, None)))  # fmt: skip
    seconds = time.perf_counter() - t0
    params = dict(zip(fitter.numberedParameterNames, fitter.getRawParameters(), strict=True))
    n_fit = params["n_1"]
    re_pix = params["r_e_1"]
    q_fit = 1.0 - params["ell_1"]
    flux = sersic_intensity_at_re(1.0, n_fit, re_pix, q_fit) ** -1 * params["I_e_1"] / t  # e-/s
    return {
        "mag": instrument["zero_point_mag"] - 2.5 * math.log10(max(flux, 1e-30)),
        "n": n_fit,
        "re": re_pix * instrument["pixel_scale_arcsec"],
        "q": q_fit,
        "pa": (params["PA_1"] + 90.0) % 180.0,
        "seconds": seconds,
        "ok": bool(fitter.fitConverged),
        "sky": params.get("I_sky_2", 0.0) / t,
    }
