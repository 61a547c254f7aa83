"""CCD noise on sky-subtracted stamps in e-/s per pixel (docs/contract.md, section 1).

Poisson noise on (source + sky) electrons plus Gaussian read noise, sky subtracted, divided by
the exposure time: GalSim's ``CCDNoise`` on an image in electrons does exactly this.
"""

from __future__ import annotations

import math

import galsim
import numpy as np


def background_rms(instrument) -> float:
    """Rms of a source-free pixel, e-/s per pixel: ``sqrt(sky * t + rn^2) / t``."""
    t = instrument.exposure_time
    return math.sqrt(instrument.sky_level * t + instrument.read_noise**2) / t


def variance_map(stamp: np.ndarray, instrument) -> np.ndarray:
    """Per-pixel noise variance (e-/s per pixel)^2 of a noiseless stamp in e-/s per pixel."""
    t = instrument.exposure_time
    electrons = np.clip(stamp, 0.0, None) * t
    return (electrons + instrument.sky_level * t + instrument.read_noise**2) / t**2


def add_noise(stamp: np.ndarray, instrument, seed: int) -> np.ndarray:
    """Return ``stamp`` (noiseless, e-/s per pixel) with CCD noise from GalSim seed ``seed``."""
    t = instrument.exposure_time
    image = galsim.ImageD(np.ascontiguousarray(stamp) * t)
    noise = galsim.CCDNoise(
        galsim.BaseDeviate(int(seed)),
        sky_level=instrument.sky_level * t,
        gain=1.0,
        read_noise=instrument.read_noise,
    )
    image.addNoise(noise)
    return image.array / t


def matched_filter_snr(stamp: np.ndarray, instrument) -> float:
    """Noiseless optimal (matched-filter) S/N of a stamp: ``sqrt(sum(s^2 / var))``."""
    return float(np.sqrt(np.sum(stamp**2 / variance_map(stamp, instrument))))
