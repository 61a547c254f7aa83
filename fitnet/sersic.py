"""Sersic galaxies in Fourier space, for the fit (``fitnet.fit``).

The transform of an elliptical Sersic of semi-major half-light radius ``re``, axis ratio ``q``
and position angle ``pa`` is ``T_n(re * sqrt(k_major^2 + q^2 k_minor^2))`` of the circular
one; a shift is a phase. ``T_n`` comes from a table of GalSim's own unit-half-light-radius
profiles (log-spaced in n and in k), interpolated linearly in ln n and ln k; the PSF x pixel
transfer function is GalSim's ``drawKImage`` (``simulate.render.transfer_function``), as the
simulator's renderer uses. tests/test_fit.py compares the models with GalSim's ``drawImage``.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import galsim
import numpy as np
import torch

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
    Made once (a few seconds for the fit's 64 x 2048) and kept in ``cache_folder()``, per
    GalSim version; read from there by later processes."""
    log_n = np.linspace(*np.log(GALSIM_N_RANGE), n_points)
    log_k = np.linspace(*np.log(KAPPA_RANGE), k_points)
    path = cache_folder() / f"sersic_table_galsim{galsim.__version__}_{n_points}x{k_points}.npy"
    try:
        table = np.load(path)
    except (OSError, ValueError):
        table = np.empty((n_points, k_points))
        for i, n in enumerate(np.clip(np.exp(log_n), *GALSIM_N_RANGE)):  # exp(log) rounds
            profile = galsim.Sersic(n=float(n), half_light_radius=1.0)
            table[i] = [profile.kValue(galsim.PositionD(float(k), 0.0)).real for k in np.exp(log_k)]
        save_quietly(path, table)
    if table.shape != (n_points, k_points):
        raise ValueError(f"{path} holds a table of shape {table.shape}: remove it")
    for array in (log_n, log_k, table):
        array.flags.writeable = False  # shared by every renderer of this process
    return log_n, log_k, table


def cache_folder() -> Path:
    """Where tables worth keeping between runs go: ``$XDG_CACHE_HOME/sersic-fitnet`` (by
    default ``~/.cache/sersic-fitnet``)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "sersic-fitnet"


def save_quietly(path: Path, array: np.ndarray) -> None:
    """``np.save`` under a temporary name and renamed; a folder that cannot be written just
    means the next process computes the table again."""
    from sersic_runtime.files import atomic_path

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as out:
            np.save(out, array)
    except OSError:
        pass


class SersicFourier:
    """Elliptical Sersic galaxies and their derivatives in Fourier space, for the fit
    (``fitnet.fit``), in pixel units: on an FFT box of N pixels, frequencies k (radian per
    pixel), a galaxy of total flux F, index n and shape matrix M (``kappa^2 = k^T M k``: the
    semi-major half-light radius re and q re along the axes, in pixels) centred at (x, y) has

        G(k) = F T_n(kappa) exp(-i (k_x x + k_y y)),

    with T_n GalSim's circular unit-radius transform (``sersic_table``, linear in ln n and in
    ln kappa). ``kimages`` gives G and the derivatives of ln T with respect to ln n and to
    ln kappa, from which ``fitnet.fit`` forms its Jacobian. ``n_points`` and ``k_points`` size
    the table."""

    def __init__(self, n_points: int, k_points: int):
        log_n, log_k, table = sersic_table(n_points, k_points)
        self.log_n = (float(log_n[0]), float(log_n[1] - log_n[0]), len(log_n))
        self.log_k = (float(log_k[0]), float(log_k[1] - log_k[0]), len(log_k))
        self.table = torch.tensor(table, dtype=torch.float32)
        self.slope_n = torch.diff(self.table, dim=0) / self.log_n[1]  # (n-1, K): dT / d ln n

    def to(self, device) -> SersicFourier:
        """The tables on ``device`` (this object, moved)."""
        self.table, self.slope_n = self.table.to(device), self.slope_n.to(device)
        return self

    def rows(self, log_n: torch.Tensor):
        """Per galaxy (B,) the table row of its n and that row's derivative in ln n: (B, K)."""
        start, step, count = self.log_n
        u = torch.nan_to_num((log_n - start) / step).clamp(0, count - 1.001)
        i = u.floor().long()
        w = (u - i)[:, None]
        return self.table[i] * (1 - w) + self.table[i + 1] * w, self.slope_n[i]

    def profile(self, rows, d_rows, log_kappa: torch.Tensor):
        """T, dT/d ln kappa and dT/d ln n at ``log_kappa`` (B, ...), from ``rows()``."""
        start, step, count = self.log_k
        shape = log_kappa.shape
        u = ((log_kappa.reshape(shape[0], -1) - start) / step).clamp(0, count - 1.001)
        j = u.floor().long()
        w = u - j
        lo, hi = torch.gather(rows, 1, j), torch.gather(rows, 1, j + 1)
        value = lo + (hi - lo) * w
        slope = (hi - lo) / step
        d_lo, d_hi = torch.gather(d_rows, 1, j), torch.gather(d_rows, 1, j + 1)
        d_n = d_lo + (d_hi - d_lo) * w
        return value.reshape(shape), slope.reshape(shape), d_n.reshape(shape)
