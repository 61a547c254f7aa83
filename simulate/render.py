"""Noiseless PSF-convolved Sersic stamps, rendered with GalSim in Fourier space.

Why not plain ``drawImage``: GalSim sizes its FFT box to hold all but 0.5% of the flux, which
for large high-n profiles means 2048-4096 pixel FFTs (seconds per galaxy), although only the
stored ``stamp_size`` window is kept. Here the Fourier image of the sheared, shifted Sersic
(GalSim's own ``drawKImage``, so its Sersic tables and conventions) is multiplied by the PSF x
pixel transfer function (computed once) and transformed on a fixed ``fft_size`` box. The flux
of the far wings that the periodic box folds back onto the window is then subtracted: at
``fft_size - stamp_size/2`` pixels and beyond, the Sersic is smooth on the PSF scale, so the
folded light is the sum of the unconvolved profile over the periodic images, evaluated on a
coarse grid and spline-interpolated. benchmarks/bench_simulate.py checks the result against
GalSim's ``drawImage`` at tight accuracy.
"""

from __future__ import annotations

import math

import galsim
import numpy as np
from omegaconf import DictConfig
from scipy.interpolate import RectBivariateSpline
from scipy.special import gammaincc, gammainccinv, gammaincinv, gammaln

from .psf_record import build_psf
from .stamps import centre_shift, placement


def flux_from_mag(mag, zero_point: float):
    """Total flux in e-/s of a source of AB magnitude ``mag`` (``m = ZP - 2.5 log10 F``)."""
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=float) - zero_point))


def make_psf(instrument: DictConfig) -> galsim.GSObject:
    """The instrument's PSF as a GalSim profile (sizes in arcsec), normalised to unit flux."""
    return build_psf(instrument.psf).withFlux(1.0)


def transfer_function(
    psf: galsim.GSObject, pixel_scale: float, fft_size: int, oversample: int = 1
) -> np.ndarray:
    """The Fourier transform of the PSF convolved with the pixel, on the half-plane k-grid
    of an ``fft_size`` box of ``pixel_scale`` arcsec pixels: array (N, N // 2 + 1) with
    ky = -N/2 .. N/2 - 1 along rows and kx = 0 .. N/2 along columns (GalSim's layout), N =
    ``fft_size * oversample``: the same k spacing, out to ``oversample`` times the Nyquist
    frequency (the grid of a box ``oversample`` times finer, for models without aliasing)."""
    dk = 2 * math.pi / (fft_size * pixel_scale)  # 1 / arcsec
    fft_size = fft_size * oversample
    bounds = galsim.BoundsI(0, fft_size // 2, -fft_size // 2, fft_size // 2 - 1)
    kimage = galsim.ImageCD(bounds, scale=dk)
    profile = galsim.Convolve(psf, galsim.Pixel(pixel_scale))
    profile.drawKImage(image=kimage, recenter=False)
    array = kimage.array
    # GalSim's obscured Airy gives NaN at isolated k where its formula changes regime (seen at
    # 1 of 33,000 points for obscurations near 0.01): evaluate those a hair away instead (the
    # transfer function is smooth there, so a relative step of 1e-6 changes it by about that)
    for row, col in np.argwhere(~np.isfinite(array)):
        k = galsim.PositionD(col * dk, (row - fft_size // 2) * dk)
        for step in (1e-9, 1e-7, 1e-6):
            array[row, col] = profile.kValue(k * (1 + step))
            if np.isfinite(array[row, col]):
                break
    if not np.isfinite(array).all():
        raise ValueError(f"the PSF's Fourier transform is not finite: {psf!r}")
    return array


def oversampling(psf: galsim.GSObject, pixel_scale: float, tolerance: float) -> int:
    """3 when the PSF x pixel transfer function at the Nyquist frequency exceeds ``tolerance``
    (a PSF the pixels undersample, whose images need drawing finer than the pixels so that no
    power folds back), else 1."""
    grid = np.abs(transfer_function(psf, pixel_scale, 32))
    nyquist = max(grid[0, :].max(), grid[:, -1].max())  # ky = -N/2 row, kx = N/2 column
    return 3 if nyquist > tolerance else 1


def sersic_profile(n: float, re: float, q: float, pa: float, flux: float) -> galsim.GSObject:
    """Sheared Sersic with semi-major-axis half-light radius ``re`` (arcsec), ``pa`` in deg.

    GalSim's Sersic radius is circular and ``shear(q=...)`` preserves area, so the circular
    radius handed to GalSim is ``re * sqrt(q)``.
    """
    circ = galsim.Sersic(n=n, half_light_radius=re * math.sqrt(q), flux=flux)
    return circ.shear(q=q, beta=pa * galsim.degrees)


def sersic_b(n):
    """The Sersic b_n: the half-light radius encloses half the flux."""
    return gammaincinv(2 * n, 0.5)


def sersic_log_intensity_at_re(flux, n, re, q):
    """ln of the surface brightness at the semi-major half-light radius ``re``.

    Flux per unit area in the units of ``re`` squared (arcsec^2, or pixel^2 for re in pixels);
    numbers or arrays.
    """
    b = sersic_b(n)
    return (
        np.log(flux) - np.log(2 * math.pi * n * q * re**2) - b + 2 * n * np.log(b) - gammaln(2 * n)
    )


def sersic_surface_brightness(x, y, n, re, q, pa, flux):
    """Unconvolved Sersic surface brightness in flux / arcsec^2 at offsets ``x, y`` (arcsec)."""
    b = sersic_b(n)
    cos, sin = math.cos(math.radians(pa)), math.sin(math.radians(pa))
    xp = cos * x + sin * y
    yp = -sin * x + cos * y
    r = np.sqrt(xp**2 + (yp / q) ** 2)
    log_ie = sersic_log_intensity_at_re(flux, n, re, q)
    return np.exp(log_ie - b * ((r / re) ** (1.0 / n) - 1.0))


def flux_fraction_beyond(radius, n, re):
    """Fraction of a Sersic's flux beyond elliptical (semi-major) radius ``radius`` (arcsec)."""
    return gammaincc(2 * n, sersic_b(n) * (radius / re) ** (1.0 / n))


def radius_enclosing_all_but(fraction, n, re):
    """Elliptical (semi-major) radius in arcsec beyond which ``fraction`` of the flux lies."""
    return re * (gammainccinv(2 * n, fraction) / sersic_b(n)) ** n


class StampRenderer:
    """Renders noiseless stamps in e-/s per pixel on the stored ``stamp_size`` grid."""

    def __init__(self, instrument: DictConfig, render: DictConfig):
        self.pixel_scale = float(instrument.pixel_scale)  # arcsec / pixel
        self.zero_point = float(instrument.zero_point)  # AB mag for 1 e-/s
        self.stamp_size = int(render.stamp_size)  # pixel
        self.fft_size = int(render.fft_size)  # pixel
        self.alias_rings = int(render.alias_rings)
        self.alias_grid = int(render.alias_grid)
        self.alias_skip_flux = float(render.alias_skip_flux)
        self.alias_tolerance = float(render.alias_tolerance)
        self._dk = 2 * math.pi / (self.fft_size * self.pixel_scale)  # 1 / arcsec
        self.set_psf(make_psf(instrument))

    def set_psf(self, psf: galsim.GSObject) -> None:
        """Render with ``psf`` (sizes in arcsec, unit flux) from now on (a PSF per galaxy); an
        undersampled one on a 3 x finer grid (``oversampling``)."""
        self.psf = psf
        self.oversample = oversampling(psf, self.pixel_scale, self.alias_tolerance)
        n_fine = self.fft_size * self.oversample
        # Half-plane k-grid as GalSim's own FFT drawing uses: kx = 0..N/2, ky = -N/2..N/2-1.
        self._kbounds = galsim.BoundsI(0, n_fine // 2, -n_fine // 2, n_fine // 2 - 1)
        self._transfer = transfer_function(psf, self.pixel_scale, self.fft_size, self.oversample)

    def _draw_k(self, profile: galsim.GSObject) -> np.ndarray:
        kimage = galsim.ImageCD(self._kbounds, scale=self._dk)
        profile.drawKImage(image=kimage, recenter=False)
        return kimage.array

    def centre(self, dx: float, dy: float, size: int) -> tuple[float, float]:
        """Profile centre (x, y) in stored-stamp pixels, 0-based numpy indices (x = column)."""
        base = 0.5 * (self.stamp_size - 1) + centre_shift(size, self.stamp_size)
        return base + dx, base + dy

    def render(self, n, re, q, pa, mag, dx, dy, size) -> np.ndarray:
        """Noiseless stamp (stamp_size, stamp_size) in e-/s per pixel, float64.

        The galaxy is drawn on a ``size`` square stamp, offset by ``(dx, dy)`` pixels from its
        true centre, and brought to ``stamp_size`` by the pad/crop rule of ``stamps``; pixels
        outside the ``size`` stamp are zero.
        """
        s, n_fft, pix = self.stamp_size, self.fft_size, self.pixel_scale
        gx, gy = self.centre(dx, dy, size)
        # FFT pixel 0 (the profile origin before shifting) is stored pixel s // 2.
        shift_x, shift_y = gx - s // 2, gy - s // 2
        flux = float(flux_from_mag(mag, self.zero_point))
        gal = sersic_profile(n, re, q, pa, flux).shift(shift_x * pix, shift_y * pix)
        kimage = self._draw_k(gal) * self._transfer
        o = self.oversample  # sampled at every o-th point of the o x finer grid: no aliasing
        fine = np.fft.irfft2(np.fft.ifftshift(kimage, axes=0), s=(o * n_fft, o * n_fft))
        image = fine[::o, ::o] * o**2
        _, dst = placement(size, s)
        rows = np.arange(dst.start, dst.stop)
        fft_idx = (rows - s // 2) % n_fft
        window = image[np.ix_(fft_idx, fft_idx)]
        window -= self._alias_correction(n, re, q, pa, flux, gx, gy, rows)
        stamp = np.zeros((s, s))
        stamp[dst, dst] = window
        return stamp

    def _alias_correction(self, n, re, q, pa, flux, gx, gy, rows) -> np.ndarray | float:
        """Light of the periodic images of the far wings that lands on the window (e-/s/pixel)."""
        pix, period = self.pixel_scale, self.fft_size * self.pixel_scale
        reach = max(abs(rows[0] - gx), abs(rows[-1] - gx), abs(rows[0] - gy), abs(rows[-1] - gy))
        nearest = (
            self.fft_size - reach
        ) * pix  # arcsec, closest periodic image to any window pixel
        if self.alias_rings == 0 or flux_fraction_beyond(nearest, n, re) < self.alias_skip_flux:
            return 0.0
        # Rings of periodic images out to where the wings are negligible, at most alias_rings.
        reach_wings = radius_enclosing_all_but(self.alias_skip_flux, n, re)
        rings = int(min(self.alias_rings, math.ceil(reach_wings / period)))
        k = np.arange(-rings, rings + 1) * period
        kx, ky = np.meshgrid(k, k)
        far = (kx != 0) | (ky != 0)
        kx, ky = kx[far], ky[far]
        grid = np.linspace(rows[0], rows[-1], self.alias_grid)  # stored-stamp pixels
        xs = (grid - gx) * pix
        ys = (grid - gy) * pix
        yy, xx = np.meshgrid(ys, xs, indexing="ij")
        folded = (
            sersic_surface_brightness(
                xx[..., None] + kx, yy[..., None] + ky, n, re, q, pa, flux
            ).sum(axis=-1)
            * pix**2
        )
        spline = RectBivariateSpline(grid, grid, folded, kx=3, ky=3)
        return spline(rows, rows)  # rows are y; columns the same set of pixel indices
