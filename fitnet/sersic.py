"""Batched Sersic models in torch: PSF-convolved, pixel-integrated stamps in e-/s per pixel.

The check of whether a predicted Sersic explains the pixels (``quality.FitCheck``) renders one
model per catalogue row, so it needs to be fast: a few hundred per second on a CPU, which
GalSim's ``drawImage`` is not for large high-n profiles (docs: simulate/render.py). This
renderer works in Fourier space, as ``simulate.render.StampRenderer`` does, with the same
PSF x pixel transfer function (GalSim's ``drawKImage``) and the same k-grid; the Fourier
transform of the Sersic comes from a table of GalSim's own unit-half-light-radius profiles
(log-spaced in n and in k), interpolated bilinearly. An elliptical profile of semi-major
half-light radius ``re``, axis ratio ``q`` and position angle ``pa`` has the transform
``T_n(re * sqrt(k_major^2 + q^2 k_minor^2))`` of the circular one; a shift is a phase. The
periodic box folds back the light beyond ``fft_size - stamp_size / 2`` pixels, which the
simulator subtracts and this does not (at most about one noise rms per pixel for the
largest, brightest n = 6 galaxies of the prior; tests/test_sersic.py compares the two).
"""

from __future__ import annotations

import functools
import math

import galsim
import numpy as np
import torch

from simulate.render import sersic_b, sersic_log_intensity_at_re, transfer_function

#: The Sersic indices GalSim renders (galsim.Sersic refuses others): a prediction beyond them
#: is drawn at the nearest end (such rows are flagged out_of_range anyway).
GALSIM_N_RANGE = (0.3, 6.2)
#: k * re range of the table (dimensionless): below it the transform is 1 to 1e-6, above it
#: the PSF x pixel transfer of any pixel-sampled image is nil for re within the prior.
KAPPA_RANGE = (1e-3, 1e3)


@functools.lru_cache(maxsize=4)
def sersic_table(n_points: int, k_points: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ln n grid, ln kappa grid, T) of the Fourier transform T[i, j] of GalSim's circular,
    unit-flux, unit-half-light-radius Sersic of index n_i at k = kappa_j (both log-spaced).
    Made once per process (about a second)."""
    log_n = np.linspace(*np.log(GALSIM_N_RANGE), n_points)
    log_k = np.linspace(*np.log(KAPPA_RANGE), k_points)
    table = np.empty((n_points, k_points))
    for i, n in enumerate(np.clip(np.exp(log_n), *GALSIM_N_RANGE)):  # exp(log) rounds
        profile = galsim.Sersic(n=float(n), half_light_radius=1.0)
        table[i] = [profile.kValue(galsim.PositionD(float(k), 0.0)).real for k in np.exp(log_k)]
    for array in (log_n, log_k, table):
        array.flags.writeable = False  # shared by every renderer of this process
    return log_n, log_k, table


class _Box:
    """One FFT box of ``size`` pixel: its k-grid (1 / arcsec) and PSF x pixel transfer."""

    def __init__(self, psf, pixel_scale: float, size: int):
        self.size = size
        transfer = np.fft.ifftshift(transfer_function(psf, pixel_scale, size), axes=0)
        self.transfer = torch.from_numpy(transfer.astype(np.complex64))
        k = 2 * math.pi / pixel_scale  # 1 / arcsec per unit of the FFT frequency
        self.ky = torch.from_numpy(np.fft.fftfreq(size) * k).float()  # rows
        self.kx = torch.from_numpy(np.fft.rfftfreq(size) * k).float()  # columns
        self.kxx = self.kx[None] ** 2
        self.kxy = self.ky[:, None] * self.kx[None]
        self.kyy = self.ky[:, None] ** 2


class SersicRenderer:
    """Noiseless model stamps (B, S, S) in e-/s per pixel of Sersic galaxies seen through an
    instrument: ``psf`` (a GalSim profile, arcsec), ``pixel_scale`` (arcsec / pixel) and
    ``stamp_size`` S (pixel). ``n_points`` and ``k_points`` size the transform table
    (``sersic_table``).

    Each galaxy is drawn in the smallest centred window (S/8, S/4, S/2 or S on a side, on an
    FFT box twice that) that holds it down to ``floor`` (e-/s per pixel): its unconvolved
    surface brightness falls below that within half the window, less the radius at which the
    PSF of a point source of its flux does. The pixels beyond are zero. Most galaxies are
    small and faint, so most boxes are small.
    """

    def __init__(
        self, psf, pixel_scale: float, stamp_size: int, n_points: int, k_points: int, floor: float
    ):
        self.pixel_scale, self.stamp_size, self.floor = pixel_scale, stamp_size, floor
        # the PSF's light per pixel along a ray, unit flux: its reach at any flux
        self.psf_r = np.arange(stamp_size + 1, dtype=float)  # pixel
        profile = [psf.xValue(galsim.PositionD(r * pixel_scale, 0)) for r in self.psf_r]
        self.psf_log = np.log(np.maximum(np.array(profile) * pixel_scale**2, 1e-300))
        sides = sorted({min(max(stamp_size // d, 8), stamp_size) for d in (8, 4, 2)} | {stamp_size})
        self.boxes = {w: _Box(psf, pixel_scale, 2 * w) for w in sides}
        log_n, log_k, table = sersic_table(n_points, k_points)
        self.log_n = (float(log_n[0]), float(log_n[1] - log_n[0]), len(log_n))
        self.log_k = (float(log_k[0]), float(log_k[1] - log_k[0]), len(log_k))
        self.table = torch.tensor(table, dtype=torch.float32)

    def _profile_rows(self, n: torch.Tensor) -> torch.Tensor:
        """The table's transform of each galaxy's n (B,), interpolated in ln n: (B, k_points)."""
        start, step, count = self.log_n
        u = ((torch.log(n.clamp(*GALSIM_N_RANGE)) - start) / step).clamp(0, count - 1.001)
        i = u.floor().long()
        w = (u - i)[:, None]
        return self.table[i] * (1 - w) + self.table[i + 1] * w

    def extent(self, flux, n, re, q) -> np.ndarray:
        """Semi-major radius (pixel) beyond which each galaxy's unconvolved surface brightness
        is below ``floor`` e-/s per pixel (arrays; ``re`` in arcsec, ``flux`` in e-/s)."""
        n = np.clip(np.asarray(n, dtype=float), *GALSIM_N_RANGE)
        re_px = np.clip(np.asarray(re, dtype=float), 1e-6, None) / self.pixel_scale
        q = np.clip(np.asarray(q, dtype=float), 1e-3, 1.0)
        b = sersic_b(n)
        # ln of the surface brightness at re, e-/s per pixel (re in pixel)
        log_ie = sersic_log_intensity_at_re(np.clip(flux, 1e-30, None), n, re_px, q)
        ratio = 1 + (log_ie - math.log(self.floor)) / b
        return np.where(ratio > 0, re_px * np.clip(ratio, 0, None) ** n, 0.0)

    def render(self, flux, n, re, q, pa, x, y) -> torch.Tensor:
        """Model stamps (B, S, S), float32, e-/s per pixel, of galaxies of total ``flux`` (e-/s),
        Sersic index ``n``, semi-major half-light radius ``re`` (arcsec), axis ratio ``q``,
        position angle ``pa`` (radian, major axis counter-clockwise from +x) centred at
        ``x, y`` (pixel, 0-based column and row of the stamp): arrays (B,). A galaxy with a
        value that is not finite gets a stamp of NaN."""
        values = [np.asarray(v, dtype=np.float64).reshape(-1) for v in (flux, n, re, q, pa, x, y)]
        finite = np.logical_and.reduce([np.isfinite(v) for v in values])
        if not finite.all():  # NaN stamps for those, drawn as something harmless
            values = [np.where(finite, v, 1.0) for v in values]
        s = self.stamp_size
        # the PSF's reach for each flux (the profile falls with r: interpolate it reversed)
        level = np.log(self.floor / np.clip(values[0], 1e-30, None))
        blur = np.interp(level, self.psf_log[::-1], self.psf_r[::-1])
        reach = self.extent(*values[:4]) + blur
        offset = np.maximum(np.abs(values[5] - (s - 1) / 2), np.abs(values[6] - (s - 1) / 2))
        sides = np.array(list(self.boxes))
        need = np.searchsorted(sides / 2, reach + offset).clip(max=len(sides) - 1)
        out = torch.zeros((len(values[0]), s, s))
        for k, side in enumerate(sides):
            index = np.flatnonzero(need == k)
            if not len(index):
                continue
            lo = (s - side) // 2
            part = [torch.from_numpy(v[index]).float() for v in values]
            part[5], part[6] = part[5] - lo, part[6] - lo  # in the window's pixels
            out[index, lo : lo + side, lo : lo + side] = self._draw(self.boxes[side], *part)
        out[torch.from_numpy(~finite)] = math.nan
        return out

    def _draw(self, box: _Box, flux, n, re, q, pa, x, y) -> torch.Tensor:
        """The first ``side`` x ``side`` pixels of ``box`` holding the galaxies at ``x, y``."""
        c, s, q = torch.cos(pa), torch.sin(pa), q.clamp(1e-3, 1.0)
        a, b, d = c**2 + (q * s) ** 2, 2 * c * s * (1 - q**2), s**2 + (q * c) ** 2
        re2 = re.clamp(min=1e-6) ** 2
        kappa2 = (re2 * a)[:, None, None] * box.kxx + (re2 * b)[:, None, None] * box.kxy
        kappa2 += (re2 * d)[:, None, None] * box.kyy
        start, step, count = self.log_k
        u = ((0.5 * torch.log(kappa2.clamp(min=1e-30)) - start) / step).clamp(0, count - 1.001)
        u = u.reshape(len(u), -1)
        j = u.long()  # u >= 0: the floor
        w = u - j
        rows = self._profile_rows(n)
        value = torch.gather(rows, 1, j).lerp_(torch.gather(rows, 1, j + 1), w)
        value = value.reshape(kappa2.shape)
        # the window's pixel (0, 0) at the box's origin: the window is the box's first pixels
        sx, sy = x * self.pixel_scale, y * self.pixel_scale  # arcsec
        phase_y = torch.polar(flux[:, None], -box.ky[None] * sy[:, None])  # flux folded in
        phase_x = torch.polar(torch.ones_like(sx[:, None]), -box.kx[None] * sx[:, None])
        kimage = value * box.transfer * phase_y[:, :, None] * phase_x[:, None, :]
        image = torch.fft.irfft2(kimage, s=(box.size, box.size))
        side = box.size // 2
        return image[:, :side, :side]
