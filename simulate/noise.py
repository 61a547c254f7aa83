"""CCD noise on sky-subtracted stamps in e-/s per pixel (docs/contract.md, section 1).

Poisson noise on (source + sky) electrons plus Gaussian read noise, sky subtracted, divided by
the exposure time: GalSim's ``CCDNoise`` on an image in electrons does exactly this.
"""

from __future__ import annotations

import math

import galsim
import numpy as np

from sersic_runtime.errors import ConfigError


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


def matched_filter_snr(stamp: np.ndarray, variance: np.ndarray) -> float:
    """Noiseless optimal (matched-filter) S/N of a stamp with per-pixel noise ``variance``
    (e.g. ``variance_map``): ``sqrt(sum(s^2 / var))``; of white noise (a correlated model's
    per-pixel variance gives the S/N of a measurement that ignores the correlations)."""
    return float(np.sqrt(np.sum(stamp**2 / variance)))


# --- noise models (conf/noise): the CCD noise above, a weight/rms map's depths, correlated noise

#: The split files' root attribute ``noise`` of each model.
NOISE_DESCRIPTIONS = {
    "ccd": "Poisson on (source + sky) electrons + Gaussian read noise, sky subtracted, / exposure time",
    "map": "Gaussian background of a rms drawn per stamp (/params/background_rms, /noise/rms_quantiles) "
    "+ Poisson on the source's electrons, / exposure time",
    "correlated": "stationary Gaussian background with the correlation function /noise/correlation "
    "+ Poisson on the source's electrons, / exposure time",
}


class CCDModel:
    """The instrument's CCD noise (``noise=ccd``): one background rms for every stamp."""

    name = "ccd"

    def __init__(self, instrument):
        self.instrument = instrument
        self.exposure_time = float(instrument.exposure_time)

    @property
    def background_rms(self) -> float:
        """Reference background rms, e-/s per pixel (the one rms of this model)."""
        return background_rms(self.instrument)

    @property
    def rms_range(self) -> tuple[float, float]:
        """Least and largest background rms of a stamp, e-/s per pixel."""
        return self.background_rms, self.background_rms

    def draw_rms(self, seed: int) -> float:
        """The background rms of the stamp whose noise seed is ``seed``, e-/s per pixel."""
        return self.background_rms

    def add(self, stamp: np.ndarray, seed: int, rms: float) -> np.ndarray:
        return add_noise(stamp, self.instrument, seed)

    def variance(self, stamp: np.ndarray, rms: float) -> np.ndarray:
        """Per-pixel variance (e-/s per pixel)^2 of white noise about noiseless ``stamp``."""
        return variance_map(stamp, self.instrument)

    def inverse_covariance_times(self, vectors: np.ndarray, stamp: np.ndarray, rms: float):
        """``C^-1 v`` for each stamp-shaped ``vectors[k]``, C the noise covariance of ``stamp``."""
        return vectors / self.variance(stamp, rms)

    def attrs(self) -> dict:
        return {"noise_model": self.name}

    def datasets(self) -> dict[str, tuple[np.ndarray, str, str]]:
        """Arrays the split files keep under /noise: name -> (array, units, description)."""
        return {}


class MapModel(CCDModel):
    """Background noise of a rms drawn per stamp from a survey's weight or rms map (``noise=map``),
    between the map's ``quantiles``; the source's own Poisson noise from the exposure time."""

    name = "map"

    def __init__(self, instrument, rms_quantiles: np.ndarray):
        super().__init__(instrument)
        self.rms_quantiles = np.asarray(rms_quantiles, dtype=float)  # e-/s per pixel, ascending
        self.probabilities = np.linspace(0.0, 1.0, len(self.rms_quantiles))

    @property
    def background_rms(self) -> float:
        """Median background rms of a stamp, e-/s per pixel (the images' normalisation)."""
        return float(np.interp(0.5, self.probabilities, self.rms_quantiles))

    @property
    def rms_range(self) -> tuple[float, float]:
        return float(self.rms_quantiles[0]), float(self.rms_quantiles[-1])

    def draw_rms(self, seed: int) -> float:
        u = np.random.default_rng([int(seed), 1]).uniform()  # its own stream: not the noise's
        return float(np.interp(u, self.probabilities, self.rms_quantiles))

    def add(self, stamp: np.ndarray, seed: int, rms: float) -> np.ndarray:
        rng = np.random.default_rng(int(seed))
        poisson = source_noise(stamp, self.exposure_time, rng)
        return stamp + poisson + rng.normal(0.0, rms, stamp.shape)

    def variance(self, stamp: np.ndarray, rms: float) -> np.ndarray:
        return np.clip(stamp, 0.0, None) / self.exposure_time + rms**2

    def attrs(self) -> dict:
        lo, hi = self.rms_range
        return {"noise_model": self.name, "background_rms_min_e_per_s": lo,
                "background_rms_max_e_per_s": hi}  # fmt: skip

    def datasets(self) -> dict:
        return {"rms_quantiles": (
            self.rms_quantiles, "e-/s per pixel",
            "background rms at evenly spaced probabilities from 0 to 1 of the stamps' distribution "
            "(the map's, between its quantiles): a stamp's rms is this at a uniform draw",
        )}  # fmt: skip


class CorrelatedModel(CCDModel):
    """Stationary correlated background noise (``noise=correlated``): a Gaussian field whose
    correlation function was measured on a blank-sky patch with GalSim's ``CorrelatedNoise``,
    drawn through its power spectrum on the stamp grid as ``CorrelatedNoise.applyTo`` does; the
    source's own Poisson noise from the exposure time."""

    name = "correlated"

    def __init__(self, instrument, correlation: np.ndarray, power_floor: float, cg_rtol: float):
        super().__init__(instrument)
        self.correlation = np.asarray(correlation, dtype=float)  # (S, S), zero lag at [S//2, S//2]
        self.power_floor, self.cg_rtol = float(power_floor), float(cg_rtol)
        self.power = power_spectrum(self.correlation, self.power_floor)

    @property
    def background_rms(self) -> float:
        # the variance of the field as drawn: the mean power over all S*S Fourier modes
        s = self.correlation.shape
        full = np.fft.irfft2(self.power, s=s)
        return float(np.sqrt(full[0, 0]))

    def add(self, stamp: np.ndarray, seed: int, rms: float) -> np.ndarray:
        rng = np.random.default_rng(int(seed))
        white = rng.standard_normal(stamp.shape)
        field = np.fft.irfft2(np.fft.rfft2(white) * np.sqrt(self.power), s=stamp.shape)
        return stamp + source_noise(stamp, self.exposure_time, rng) + field

    def variance(self, stamp: np.ndarray, rms: float) -> np.ndarray:
        return np.clip(stamp, 0.0, None) / self.exposure_time + self.background_rms**2

    def inverse_covariance_times(self, vectors, stamp, rms):
        """``C^-1 v`` by conjugate gradients, C = the stationary field's (circulant) covariance
        plus the source's Poisson variance on the diagonal, preconditioned by the stationary
        part with the mean Poisson variance added."""
        s = stamp.shape
        poisson = np.clip(stamp, 0.0, None) / self.exposure_time
        spectrum = self.power
        apply_c = lambda v: np.fft.irfft2(np.fft.rfft2(v) * spectrum, s=s) + poisson * v  # noqa: E731
        pre = spectrum + poisson.mean()
        precondition = lambda r: np.fft.irfft2(np.fft.rfft2(r) / pre, s=s)  # noqa: E731
        return conjugate_gradient(apply_c, precondition, np.asarray(vectors, float), self.cg_rtol)

    def core(self) -> np.ndarray:
        """The correlation function's non-zero centre, (2L+1, 2L+1), zero lag in the middle."""
        cy, cx = (n // 2 for n in self.correlation.shape)
        rows, cols = np.nonzero(self.correlation)
        lag = int(max(np.abs(rows - cy).max(), np.abs(cols - cx).max()))
        return self.correlation[cy - lag : cy + lag + 1, cx - lag : cx + lag + 1]

    def attrs(self) -> dict:
        rms = self.background_rms
        return {"noise_model": self.name, "background_rms_min_e_per_s": rms,
                "background_rms_max_e_per_s": rms, "noise_power_floor": self.power_floor,
                "noise_correlation_core": self.core()}  # fmt: skip

    def datasets(self) -> dict:
        return {"correlation": (
            self.correlation, "(e-/s per pixel)^2",
            "correlation function of the background noise on the stamp grid, zero lag at "
            "[S//2, S//2]; the noise is drawn with power spectrum |rfft2| of it (clipped at the "
            "power floor)",
        )}  # fmt: skip


def source_noise(stamp: np.ndarray, exposure_time: float, rng: np.random.Generator) -> np.ndarray:
    """Poisson noise of the source's own electrons (zero mean), e-/s per pixel, for a
    noiseless ``stamp`` in e-/s per pixel and ``exposure_time`` s."""
    electrons = np.clip(stamp, 0.0, None) * exposure_time
    return (rng.poisson(electrons) - electrons) / exposure_time


def power_spectrum(correlation: np.ndarray, floor: float) -> np.ndarray:
    """Power spectrum (``rfft2`` layout) of a correlation function on the stamp grid, ``|rfft2(cf)|``
    as GalSim's ``CorrelatedNoise`` takes it, raised to at least ``floor`` times the variance
    (the mean power) so that the covariance stays invertible."""
    power = np.abs(np.fft.rfft2(correlation))
    return np.maximum(power, floor * correlation[tuple(n // 2 for n in correlation.shape)])


def conjugate_gradient(apply_a, precondition, b: np.ndarray, rtol: float) -> np.ndarray:
    """Solve ``A x_k = b_k`` for every ``b[k]`` at once (A symmetric positive definite, given as
    ``apply_a`` on a stack) to relative residual ``rtol``, by preconditioned conjugate gradients."""

    def dot(u, v):  # one inner product per right-hand side, shaped to broadcast
        return np.sum(u * v, axis=tuple(range(1, b.ndim)), keepdims=True)

    x = np.zeros_like(b)
    r = b.copy()
    z = precondition(r)
    p, rz = z.copy(), dot(r, z)
    limit = rtol * np.sqrt(dot(b, b))
    for _ in range(b[0].size):
        active = np.sqrt(dot(r, r)) > limit  # converged right-hand sides stop moving
        if not active.any():
            break
        ap = apply_a(p)
        alpha = np.where(active, rz / np.where(active, dot(p, ap), 1.0), 0.0)
        x += alpha * p
        r -= alpha * ap
        z = precondition(r)
        rz, rz_old = dot(r, z), rz
        p = z + np.where(active, rz / np.where(active, rz_old, 1.0), 0.0) * p
    return x


def noise_model(cfg) -> CCDModel:
    """The noise model of a validated ``simulate`` config (``cfg.noise``; ``ccd`` when absent),
    its weight map or blank patch read and checked here, once; ConfigError names a bad file."""
    noise = cfg.get("noise")
    if noise is None or noise.model == "ccd":
        return CCDModel(cfg.instrument)
    image = read_noise_image(noise)
    if noise.model == "map":
        return MapModel(cfg.instrument, map_rms_table(image, noise))
    correlation = measured_correlation(
        image, noise, cfg.instrument.pixel_scale, cfg.render.stamp_size
    )
    return CorrelatedModel(cfg.instrument, correlation, noise.power_floor, noise.cg_rtol)


def read_noise_image(noise) -> np.ndarray:
    """The 2-D image of ``noise.file`` (HDU ``noise.hdu``) as float64."""
    from astropy.io import fits

    try:
        with fits.open(noise.file) as hdus:
            data = hdus[int(noise.hdu)].data
    except (OSError, IndexError) as err:
        raise ConfigError(
            f"noise.file={noise.file} (HDU {noise.hdu}) cannot be read as a FITS image: {err}"
        ) from err
    if data is None or np.ndim(data) != 2:
        raise ConfigError(
            f"noise.file={noise.file}: HDU {noise.hdu} holds {np.ndim(data)} dimensions, not a 2-D image"
        )
    return np.asarray(data, dtype=float)


def map_rms_table(image: np.ndarray, noise) -> np.ndarray:
    """The rms (e-/s per pixel) of a weight or rms map at ``noise.table_points`` evenly spaced
    probabilities between its ``noise.quantiles``, from its valid pixels (finite, > 0)."""
    valid = image[np.isfinite(image) & (image > 0)]
    if valid.size == 0:
        raise ConfigError(
            f"noise.file={noise.file} has no finite pixel > 0: it is not a {noise.kind} map"
        )
    rms = (1.0 / np.sqrt(valid) if noise.kind == "weight" else valid) * float(noise.scale)
    lo, hi = noise.quantiles
    return np.quantile(rms, np.linspace(lo, hi, int(noise.table_points)))


def measured_correlation(image, noise, pixel_scale: float, stamp_size: int) -> np.ndarray:
    """The correlation function (e-/s per pixel)^2 of a blank-sky patch on the stamp grid, zero
    lag at [S//2, S//2], measured with GalSim's ``CorrelatedNoise`` and cut at ``noise.max_lag_px``."""
    patch = image * float(noise.scale)
    if min(patch.shape) < noise.min_size_px:
        raise ConfigError(
            f"noise.file={noise.file} is {patch.shape[1]} x {patch.shape[0]} px; a blank patch "
            f"must be at least noise.min_size_px={noise.min_size_px} px on each side"
        )
    if not np.isfinite(patch).all():
        raise ConfigError(
            f"noise.file={noise.file} holds NaN or infinite pixels: cut a clean patch"
        )
    centre = np.median(patch)
    sigma = 1.4826 * np.median(np.abs(patch - centre))  # the MAD of a Gaussian's
    if not sigma > 0:
        raise ConfigError(f"noise.file={noise.file} has no noise (robust rms {sigma:g})")
    sources = np.mean(np.abs(patch - centre) > noise.blank_sigma * sigma)
    if sources > noise.max_source_fraction:
        raise ConfigError(
            f"noise.file={noise.file}: {sources:.2%} of its pixels lie beyond {noise.blank_sigma:g} "
            f"robust sigma (at most noise.max_source_fraction={noise.max_source_fraction:g}): "
            "it holds sources; cut a blank patch or mask them out"
        )
    measured = galsim.CorrelatedNoise(galsim.Image(patch, scale=pixel_scale), subtract_mean=True)
    cf = measured.drawImage(
        galsim.Image(stamp_size, stamp_size, scale=pixel_scale, dtype=float)
    ).array
    lag = np.arange(stamp_size) - stamp_size // 2
    cf[np.hypot(*np.meshgrid(lag, lag)) > noise.max_lag_px] = 0.0
    return cf
