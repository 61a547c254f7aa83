"""Does the predicted Sersic explain the pixels? The reduced chi-square of each row's residual.

For every measured row the predicted galaxy (mag, n, re, q) is rendered through the model's
instrument (``sersic.SersicRenderer``: the PSF and pixel of the training data) at the
position and position angle of the stamp's adaptive moments (``photometry.AdaptiveMoments``;
the network does not predict them), and compared with the stamp over the source's footprint:

    chi2 = sum (data - model)^2 / (rms^2 + model / exposure_time + (f model)^2) / N_footprint

with ``rms`` the stamp's measured background rms (e-/s per pixel), the source's own Poisson
noise, and a model tolerance ``f`` (``quality.fit_model_error``) that stands for what a
network at the noise limit still misses at high S/N (its errors, the moments' centre and
angle). The footprint is the target's detection segment (pixels replaced by noise left out)
together with the pixels where the model exceeds ``quality.fit_footprint_nsigma`` rms. A
galaxy that is not one Sersic (bulge plus disk, a merger, a blend, an artefact) leaves a
residual well above the noise: ``bad_fit`` when the chi-square exceeds its expectation by
``quality.max_chi2_sigma`` of its spread, ``(chi2 - 1) sqrt(N / 2)``, and ``chi2`` exceeds
``quality.max_reduced_chi2``.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from simulate.psf_record import from_record

from .photometry import AdaptiveMoments
from .sersic import SersicRenderer

#: Labels the check needs predicted (the rest of the model comes from the stamp).
NEEDS = ("mag", "n", "re", "q")
#: Smallest stamp (pixel) the check judges: its adaptive moments need a few pixels a side.
MIN_STAMP_PX = 16
#: Catalogue columns of the check: name -> description (dimensionless).
COLUMNS = {
    "chi2": "reduced chi-square of the predicted Sersic's residual over the source's footprint",
    "chi2_pixels": "pixels of that footprint (the chi-square's degrees of freedom)",
}


def excess_sigma(chi2, pixels) -> np.ndarray:
    """How many standard deviations ``sqrt(2 N)`` a chi-square ``chi2 * N`` of N = ``pixels``
    lies above its expectation N."""
    return (np.asarray(chi2, dtype=float) - 1.0) * np.sqrt(np.asarray(pixels, dtype=float) / 2)


def stamp_pose(moments: AdaptiveMoments, images, noise_rms: float):
    """Centre x, y (pixel, 0-based column and row) and position angle (radian, counter-
    clockwise from +x) of each stamp (B, S, S; e-/s per pixel, background rms ``noise_rms``),
    from its adaptive moments."""
    images = np.ascontiguousarray(images, dtype=np.float32)
    x = torch.from_numpy(images / noise_rms)
    m, c, _ = moments.fit(x.reshape(len(x), -1))
    mxx, myy, mxy = m.double().numpy().T
    centre = (images.shape[-1] - 1) / 2
    cx, cy = c.double().numpy().T
    return centre + cx, centre + cy, 0.5 * np.arctan2(2 * mxy, mxx - myy)


class FitCheck:
    """Reduced chi-square of the predicted Sersic against each stamp.

    ``instrument``: the checkpoint's instrument record (pixel scale, zero point, exposure
    time, background rms, PSF); ``quality``: the thresholds of conf/quality."""

    def __init__(self, quality, instrument: dict, stamp_size: int):
        self.q = quality
        self.zero_point = float(instrument["zero_point_mag"])  # AB mag of 1 e-/s
        self.exposure_s = float(instrument["exposure_time_s"])
        self.noise_rms = float(instrument["background_rms_e_per_s"])  # e-/s per pixel
        self.stamp_size = stamp_size
        self.renderer = SersicRenderer(
            from_record(instrument["psf"]),
            float(instrument["pixel_scale_arcsec"]),
            stamp_size,
            int(quality.fit_table_n_points),
            int(quality.fit_table_k_points),
            float(quality.fit_floor_nsigma) * self.noise_rms,
        )
        self.moments = AdaptiveMoments(
            stamp_size, int(quality.fit_moment_iterations), float(quality.fit_moment_sigma_px)
        )

    def pose(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``stamp_pose`` of stamps (B, S, S) in e-/s per pixel."""
        return stamp_pose(self.moments, images, self.noise_rms)

    def __call__(self, images, footprints, replaced, rms, values: dict):
        """Reduced chi-square (B,) and its number of pixels (B,) of stamps ``images`` (B, S, S, e-/s per pixel) against the
        predicted ``values`` (label -> (B,)); ``footprints``: per stamp the target's pixels
        (bool, S x S) or None; ``replaced``: per stamp its pixels replaced by noise (left out)
        or None; ``rms``: per stamp its background rms (e-/s per pixel, NaN = the model's).
        NaN where the footprint has fewer than ``fit_min_pixels`` pixels."""
        images = np.asarray(images, dtype=np.float32)
        x, y, pa = self.pose(images)
        flux = 10.0 ** (-0.4 * (np.asarray(values["mag"], float) - self.zero_point))
        model = self.renderer.render(flux, values["n"], values["re"], values["q"], pa, x, y)
        model = model.double().numpy()
        rms = np.where(np.isfinite(rms) & (np.asarray(rms) > 0), rms, self.noise_rms)
        out = np.full(len(images), math.nan)
        counts = np.zeros(len(images), dtype=np.int64)
        for k, image in enumerate(images):
            m = model[k]
            var = rms[k] ** 2 + np.clip(m, 0, None) / self.exposure_s
            var += (self.q.fit_model_error * m) ** 2
            use = m > self.q.fit_footprint_nsigma * rms[k]
            if footprints[k] is not None:
                use |= footprints[k]
            if replaced[k] is not None:
                use &= ~replaced[k]
            counts[k] = count = int(use.sum())
            if count >= self.q.fit_min_pixels and np.isfinite(m).all():
                out[k] = float(np.sum((image[use] - m[use]) ** 2 / var[use]) / count)
        return out, counts
