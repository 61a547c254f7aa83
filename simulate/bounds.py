"""Cramer-Rao bounds: the smallest scatter any unbiased measurement of a stamp can reach.

For one galaxy the Fisher matrix of the noiseless model ``mu`` in the parameters
``(mag, n, ln re, q, pa, x, y)`` is ``F_ij = sum_pixels d_i mu * d_j mu / var``, with the SPEC
noise variance per pixel (sky, read noise and the source's own Poisson noise, ``noise.variance_map``)
and the derivatives taken by central finite differences of the project's own renders (GalSim
Sersic, PSF, pixel, stamp window). The bound of a label is the square root of the diagonal of
``F^-1``, converted to the SPEC error of that label: mag in mag, re relative
(``sigma(ln re)``), n in dex (``sigma(n) / (n ln 10)``), q absolute.

The n derivative uses the neighbouring values of the render n grid (whose GalSim tables are
cached in n-sorted blocks), or a relative step when n is continuous.
"""

from __future__ import annotations

import math

import numpy as np

from .noise import variance_map
from .render import StampRenderer

PARAMETERS = ("mag", "n", "ln_re", "q", "pa", "x", "y")
LABELS = ("mag", "n", "re", "q")


def _n_neighbours(n: float, grid: np.ndarray | None, rel_step: float) -> tuple[float, float]:
    if grid is None:
        return n * (1 - rel_step), n * (1 + rel_step)
    k = int(np.argmin(np.abs(np.log(grid) - math.log(n))))
    return float(grid[max(k - 1, 0)]), float(grid[min(k + 1, len(grid) - 1)])


def fisher_matrix(
    renderer: StampRenderer, instrument, p: dict, steps, n_grid=None, base=None
) -> np.ndarray:
    """7 x 7 Fisher matrix of galaxy ``p`` (keys n re q pa mag dx dy size) in PARAMETERS order.

    ``steps`` holds the finite-difference steps (``bounds`` config); ``base`` is the noiseless
    stamp if already rendered.
    """
    p = {
        k: float(p[k]) if k != "size" else int(p[k])
        for k in ("n", "re", "q", "pa", "mag", "dx", "dy", "size")
    }
    base = renderer.render(**p) if base is None else base
    inv_var = 1.0 / variance_map(base, instrument)

    def render(**change):
        return renderer.render(**{**p, **change})

    derivs = []
    d = steps.mag
    derivs.append((render(mag=p["mag"] + d) - render(mag=p["mag"] - d)) / (2 * d))
    lo, hi = _n_neighbours(p["n"], n_grid, steps.n_relative)
    derivs.append((render(n=hi) - render(n=lo)) / (hi - lo))
    d = steps.ln_re
    derivs.append((render(re=p["re"] * math.exp(d)) - render(re=p["re"] * math.exp(-d))) / (2 * d))
    d = steps.q
    q_hi, q_lo = min(p["q"] + d, 1.0), p["q"] - d  # q may not exceed 1: one-sided there
    derivs.append((render(q=q_hi) - render(q=q_lo)) / (q_hi - q_lo))
    d = steps.pa
    derivs.append((render(pa=p["pa"] + d) - render(pa=p["pa"] - d)) / (2 * d))
    d = steps.offset
    derivs.append((render(dx=p["dx"] + d) - render(dx=p["dx"] - d)) / (2 * d))
    derivs.append((render(dy=p["dy"] + d) - render(dy=p["dy"] - d)) / (2 * d))
    D = np.stack([x.ravel() for x in derivs])  # (7, pixels)
    return (D * inv_var.ravel()) @ D.T


def label_bounds(fisher: np.ndarray, n: float) -> dict[str, float]:
    """Bounds of mag, n, re, q in SPEC error units from a Fisher matrix (PARAMETERS order).

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
