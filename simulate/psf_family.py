"""A PSF drawn for every galaxy (``psf_family=generalist``), for a network that takes the PSF
as an input and so needs no retraining for a new instrument.

Sizes are in pixels: the generalist's instrument has ``pixel_scale: 1.0``, so GalSim's
"arcsec" are pixels. Each galaxy draws from its own random stream (master seed, index and a
stream number of its own, so the other draws stay what they are without PSFs): a family,
with ``psf_family.weights``, then

- ``moffat``: index beta uniform in ``moffat_beta``;
- ``kolmogorov``: atmospheric seeing;
- ``airy``: an obscured Airy (obscuration uniform in ``airy_obscuration``) convolved with a
  Gaussian jitter whose FWHM is a fraction (uniform in ``airy_jitter``) of the unobscured
  Airy's, 1.028 lambda / D;
- ``preset``: the PSF of one of ``presets`` (conf/instrument) at that instrument's pixel scale,
  whose FWHM in pixels is that preset's own;

each but ``preset`` dilated to a FWHM log-uniform in ``fwhm_px``, and every one sheared by an
ellipticity |g| uniform in ``shear`` in a uniform direction. The drawn values are kept as
columns (``psf_family``, ``psf_fwhm``, ...), and the PSF image at the data's sampling (pixel
included, as survey PSF models are) in ``/psf``.
"""

from __future__ import annotations

import functools
import math

import galsim
import numpy as np

from sersic_runtime.configs import load_group

from .psf import profile_fwhm
from .psf_record import build_psf

FAMILIES = ("moffat", "kolmogorov", "airy", "preset")
PSF_STREAM = 3  # spawn-key suffix of the PSF's own stream (companions use another)


def psf_stream(seed: int, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(seed, spawn_key=(int(index), PSF_STREAM))


@functools.lru_cache(maxsize=16)
def preset_psf(name: str) -> galsim.GSObject:
    """The PSF of conf/instrument/<name>.yaml in pixel units of that instrument, unit flux."""
    instrument = load_group("instrument", name)
    psf = build_psf(instrument.psf, f"conf/instrument/{name}.yaml psf").withFlux(1.0)
    return psf.dilate(1.0 / float(instrument.pixel_scale))


def draw_psf(seed: int, index: int, spec) -> tuple[galsim.GSObject, dict]:
    """The PSF of galaxy ``index`` (sizes in pixels, unit flux) and its columns."""
    rng = np.random.default_rng(psf_stream(seed, index))
    weights = np.array([float(spec.weights[f]) for f in FAMILIES])
    family = int(rng.choice(len(FAMILIES), p=weights / weights.sum()))
    fwhm = math.exp(rng.uniform(*np.log(spec.fwhm_px)))
    columns = {"psf_family": family, "psf_beta": math.nan, "psf_obscuration": math.nan,
               "psf_preset": -1}  # fmt: skip
    name = FAMILIES[family]
    if name == "moffat":
        columns["psf_beta"] = rng.uniform(*spec.moffat_beta)
        psf = galsim.Moffat(beta=columns["psf_beta"], fwhm=fwhm)
    elif name == "kolmogorov":
        psf = galsim.Kolmogorov(fwhm=fwhm)
    elif name == "airy":
        columns["psf_obscuration"] = rng.uniform(*spec.airy_obscuration)
        airy = galsim.Airy(lam_over_diam=1.0, obscuration=columns["psf_obscuration"])
        # GalSim has no FWHM of an obscured Airy: the fraction is of the unobscured one, 1.028 lam/D
        jitter = galsim.Gaussian(fwhm=rng.uniform(*spec.airy_jitter) * 1.028)
        psf = galsim.Convolve(airy, jitter)
        psf = psf.dilate(fwhm / profile_fwhm(psf))
    else:
        columns["psf_preset"] = int(rng.integers(len(spec.presets)))
        psf = preset_psf(spec.presets[columns["psf_preset"]])
    g = rng.uniform(*spec.shear)
    psf = psf.shear(g=g, beta=rng.uniform(0.0, math.pi) * galsim.radians)
    columns["psf_fwhm"] = profile_fwhm(psf)
    columns["psf_g"] = g
    return psf.withFlux(1.0), columns


def psf_image(psf: galsim.GSObject, size: int, fft_size: int = 256) -> np.ndarray:
    """The PSF at the data's sampling with the pixel (an effective PSF), ``size`` square,
    centred on the middle pixel, unit sum; float32. Drawn from the renderer's own transfer
    function (``render.transfer_function`` on an ``fft_size`` box), so that the image is the
    PSF the galaxy was convolved with (and GalSim's drawImage, which fails on some obscured
    Airy profiles, is not needed)."""
    from .render import transfer_function

    kimage = transfer_function(psf, 1.0, fft_size)
    image = np.fft.fftshift(np.fft.irfft2(np.fft.ifftshift(kimage, axes=0), s=(fft_size,) * 2))
    lo = fft_size // 2 - size // 2
    image = image[lo : lo + size, lo : lo + size]
    return (image / image.sum()).astype(np.float32)


#: The /params columns of a simulation with a PSF per galaxy: (dtype, units, description).
PSF_COLUMNS = {
    "psf_family": ("int32", "", "index into " + ", ".join(FAMILIES) + " (simulate.psf_family)"),
    "psf_fwhm": ("float64", "pixel", "FWHM of the galaxy's PSF (simulate.psf.profile_fwhm)"),
    "psf_beta": ("float64", "", "Moffat index of a moffat PSF; NaN otherwise"),
    "psf_obscuration": ("float64", "", "obscuration of an airy PSF; NaN otherwise"),
    "psf_preset": ("int32", "", "index into psf_family.presets of a preset PSF; -1 otherwise"),
    "psf_g": ("float64", "", "reduced shear |g| applied to the PSF"),
}
