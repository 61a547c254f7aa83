"""Cramer-Rao bounds: the smallest scatter any unbiased measurement of a stamp can reach.

For one galaxy the Fisher matrix of the noiseless model ``mu`` in the parameters
``(mag, n, ln re, q, pa, x, y)`` is ``F_ij = d_i mu^T C^-1 d_j mu``, C the noise covariance of
the stamp. For white noise (``noise=ccd`` or ``map``) that is ``sum_pixels d_i mu d_j mu / var``
with the variance per pixel (sky or the stamp's background rms, read noise and the source's own
Poisson noise); for correlated noise ``C^-1`` is applied by conjugate gradients. The derivatives
are taken by central finite differences of the project's own renders (GalSim Sersic, PSF, pixel,
stamp window), except that by mag, which is the stamp times -0.4 ln 10 (a stamp is linear in
its flux). The bound of a label is the square root of the diagonal of
``F^-1``, converted to the contract error of that label: mag in mag, re relative
(``sigma(ln re)``), n in dex (``sigma(n) / (n ln 10)``), q absolute.

The n derivative uses the neighbouring values of the render n grid (whose GalSim tables are
cached in n-sorted blocks), or a relative step when n is continuous.
"""

from __future__ import annotations

import math

import numpy as np

from .render import StampRenderer

PARAMETERS = ("mag", "n", "ln_re", "q", "pa", "x", "y")


def _n_neighbours(n: float, grid: np.ndarray | None, rel_step: float) -> tuple[float, float]:
    if grid is None:
        return n * (1 - rel_step), n * (1 + rel_step)
    k = int(np.argmin(np.abs(np.log(grid) - math.log(n))))
    return float(grid[max(k - 1, 0)]), float(grid[min(k + 1, len(grid) - 1)])


def fisher_matrix(
    renderer: StampRenderer, noise, p: dict, steps, n_grid=None, base=None, rms=None
) -> np.ndarray:
    """7 x 7 Fisher matrix of galaxy ``p`` (keys n re q pa mag dx dy size) in PARAMETERS order.

    ``noise`` is the noise model (``noise.noise_model``; ``F = D C^-1 D^T`` with its
    covariance C, correlated or not) and ``rms`` the stamp's background rms (e-/s per pixel;
    its reference rms when None). ``steps`` holds the finite-difference steps (``bounds``
    config); ``base`` is the noiseless stamp if already rendered.
    """
    p = {
        k: float(p[k]) if k != "size" else int(p[k])
        for k in ("n", "re", "q", "pa", "mag", "dx", "dy", "size")
    }
    base = renderer.render(**p) if base is None else base
    rms = noise.background_rms if rms is None else rms

    def slope(key: str, lo: float, hi: float, width: float) -> np.ndarray:
        """(render at key=hi - render at key=lo) / width: the derivative per unit parameter."""
        return (renderer.render(**{**p, key: hi}) - renderer.render(**{**p, key: lo})) / width

    def central(key: str, step: float) -> np.ndarray:
        return slope(key, p[key] - step, p[key] + step, 2 * step)

    n_lo, n_hi = _n_neighbours(p["n"], n_grid, steps.n_relative)
    d = steps.ln_re
    q_hi, q_lo = min(p["q"] + steps.q, 1.0), p["q"] - steps.q  # q may not exceed 1: one-sided
    derivs = [
        -0.4 * math.log(10) * base,  # the stamp is linear in flux: exact, and two renders fewer
        slope("n", n_lo, n_hi, n_hi - n_lo),
        slope("re", p["re"] * math.exp(-d), p["re"] * math.exp(d), 2 * d),  # per unit ln re
        slope("q", q_lo, q_hi, q_hi - q_lo),
        central("pa", steps.pa),
        central("dx", steps.offset),
        central("dy", steps.offset),
    ]
    weighted = noise.inverse_covariance_times(np.stack(derivs), base, rms)  # C^-1 d_i mu
    return np.stack([x.ravel() for x in derivs]) @ weighted.reshape(len(derivs), -1).T


def label_bounds(fisher: np.ndarray, n: float) -> dict[str, float]:
    """Bounds of mag, n, re, q in contract error units from a Fisher matrix (PARAMETERS order).

    A pseudo-inverse keeps the bounds finite when a direction is unconstrained (pa of a round
    galaxy).
    """
    cov = np.linalg.pinv(fisher, hermitian=True)
    sd = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    return {
        "mag": float(sd[0]),
        "n": float(sd[1] / (n * math.log(10))),
        "re": float(sd[2]),
        "q": float(sd[3]),
    }
