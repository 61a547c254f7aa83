"""Draw the true parameters of each galaxy from the prior.

Galaxy ``i`` of a run with master seed ``s`` uses its own stream
``numpy.random.SeedSequence(s, spawn_key=(i,))``, so its parameters and its noise depend only on
``(s, i)``: not on the number of workers, on chunking, or on the split it falls in.
"""

from __future__ import annotations

import numpy as np

#: Labels drawn from the prior, in storage order, with their units (docs/contract.md, section 2).
LABEL_UNITS = {
    "mag": "AB mag",
    "n": "dimensionless",
    "re": "arcsec",
    "q": "dimensionless",
    "pa": "deg",
    "dx": "pixel",
    "dy": "pixel",
    "size": "pixel",
}

#: The structural labels a Sersic fit measures: what the network regresses, the Cramer-Rao
#: bounds cover and the classical fitter reports.
FIT_LABELS = ("mag", "n", "re", "q")

LABEL_DESCRIPTIONS = {
    "mag": "total AB magnitude of the whole Sersic profile (all its flux, not only the stamp's)",
    "n": "Sersic index of the profile drawn (rounded to the render n grid)",
    "re": "half-light radius along the semi-major axis",
    "q": "axis ratio b/a",
    "pa": "position angle of the major axis, counter-clockwise from the +x (column) axis",
    "dx": "x offset of the profile centre from the rendered stamp's centre (GalSim offset)",
    "dy": "y offset of the profile centre from the rendered stamp's centre (GalSim offset)",
    "size": "side of the square stamp as rendered, before pad/crop",
}


def galaxy_stream(seed: int, index: int) -> np.random.SeedSequence:
    """The random stream of galaxy ``index`` under master ``seed``."""
    return np.random.SeedSequence(seed, spawn_key=(int(index),))


def n_grid(prior_n, n_grid_points: int) -> np.ndarray | None:
    """Log-spaced Sersic indices that drawn n values are rounded to; None means no rounding."""
    if n_grid_points == 0:
        return None
    return np.geomspace(prior_n.min, prior_n.max, n_grid_points)


def round_to_grid(values: np.ndarray, grid: np.ndarray | None) -> np.ndarray:
    """Round each value to its nearest grid point in log space (identity if grid is None)."""
    if grid is None:
        return values
    log_grid = np.log(grid)
    edges = 0.5 * (log_grid[1:] + log_grid[:-1])
    return grid[np.searchsorted(edges, np.log(values))]


def draw_parameters(seed: int, indices: np.ndarray, prior, n_grid_points: int, table=None) -> dict:
    """Draw the labels of the galaxies with the given global ``indices``.

    Returns a dict of 1-D arrays keyed by LABEL_UNITS plus ``index`` (global index) and
    ``noise_seed`` (seed of the galaxy's GalSim noise deviate, never 0). With ``table`` (a
    ``ReferenceTable``), mag, n, re and q are resampled from it instead; every other label and
    the noise stay those of the independent draws.
    """
    indices = np.asarray(indices, dtype=np.int64)
    m = len(indices)
    raw = np.empty((m, 8))
    sizes = np.empty(m, dtype=np.int32)
    noise_seeds = np.empty(m, dtype=np.int64)
    log_re = (np.log(prior.re.min), np.log(prior.re.max))
    for k, index in enumerate(indices):
        rng = np.random.default_rng(galaxy_stream(seed, index))
        raw[k, 0] = rng.uniform(prior.mag.min, prior.mag.max)
        raw[k, 1] = rng.uniform(prior.n.min, prior.n.max)
        raw[k, 2] = np.exp(rng.uniform(*log_re))
        raw[k, 3] = rng.uniform(prior.q.min, prior.q.max)
        raw[k, 4] = rng.uniform(prior.pa.min, prior.pa.max)
        raw[k, 5:7] = rng.uniform(prior.offset.min, prior.offset.max, size=2)
        sizes[k] = rng.integers(prior.size.min, prior.size.max, endpoint=True)
        noise_seeds[k] = rng.integers(1, 2**31 - 1)  # GalSim treats seed 0 as "from the clock"
    if table is not None:
        raw[:, :4] = table.draw(seed, indices)
    grid = n_grid(prior.n, n_grid_points)
    return {
        "index": indices,
        "mag": raw[:, 0],
        "n": round_to_grid(raw[:, 1], grid),
        "re": raw[:, 2],
        "q": raw[:, 3],
        "pa": raw[:, 4],
        "dx": raw[:, 5],
        "dy": raw[:, 6],
        "size": sizes,
        "noise_seed": noise_seeds,
    }


#: Columns of a reference table, in the order of ``draw_parameters``' first four labels.
TABLE_COLUMNS = ("mag", "n", "re", "q")
#: Labels whose jitter is relative (a Gaussian in ln), the others' is absolute.
RELATIVE_JITTER = ("n", "re")


class ReferenceTable:
    """A joint prior of (mag, n, re, q): rows of a reference catalogue resampled with Gaussian
    jitter, so that a survey trains on its own population rather than on independent draws.

    ``rows``: array (N, 4) of mag (AB), n, re (arcsec, semi-major axis), q, all inside the
    prior's ranges; ``jitter``: per column, the rms of the jitter (mag, and q absolute; n and
    re in ln). A jittered value leaving its range is reflected back into it.
    """

    def __init__(self, rows: np.ndarray, jitter: dict, prior):
        self.rows = np.asarray(rows, dtype=float)
        self.jitter = np.array([float(jitter[c]) for c in TABLE_COLUMNS])
        self.ranges = [(float(prior[c].min), float(prior[c].max)) for c in TABLE_COLUMNS]

    @classmethod
    def read(cls, file, jitter: dict, prior) -> ReferenceTable:
        """Read a FITS, ECSV or CSV table with the TABLE_COLUMNS; rows outside the prior's
        ranges are left out. ValueError names the file and what is wrong."""
        from astropy.table import Table

        table = Table.read(file)
        missing = [c for c in TABLE_COLUMNS if c not in table.colnames]
        if missing:
            raise ValueError(f"prior_table.file={file} lacks the columns {missing}")
        rows = np.stack([np.asarray(table[c], dtype=float) for c in TABLE_COLUMNS], axis=1)
        inside = np.isfinite(rows).all(axis=1)
        for j, c in enumerate(TABLE_COLUMNS):
            inside &= (rows[:, j] >= prior[c].min) & (rows[:, j] <= prior[c].max)
        if inside.sum() == 0:
            raise ValueError(
                f"prior_table.file={file}: none of its {len(rows)} rows lies inside the prior"
            )
        return cls(rows[inside], jitter, prior)

    def draw(self, seed: int, indices: np.ndarray) -> np.ndarray:
        """(len(indices), 4) jittered rows, galaxy ``i`` from its own stream of ``(seed, i)``."""
        out = np.empty((len(indices), 4))
        for k, index in enumerate(indices):
            rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(int(index), 2)))
            row = self.rows[rng.integers(len(self.rows))]
            noise = rng.normal(size=4) * self.jitter
            for j, column in enumerate(TABLE_COLUMNS):
                lo, hi = self.ranges[j]
                if column in RELATIVE_JITTER:
                    out[k, j] = np.exp(reflect(np.log(row[j]) + noise[j], np.log(lo), np.log(hi)))
                else:
                    out[k, j] = reflect(row[j] + noise[j], lo, hi)
        return out


def reflect(value: float, lo: float, hi: float) -> float:
    """``value`` mirrored at ``lo`` and ``hi`` until it lies in [lo, hi]."""
    if hi <= lo:
        return lo
    period = 2 * (hi - lo)
    x = (value - lo) % period
    return lo + (period - x if x > hi - lo else x)


def companion_stream(seed: int, index: int) -> np.random.SeedSequence:
    """The random stream of galaxy ``index``'s companions: its own, so that the galaxy's
    parameters and noise are the same with companions or without."""
    return np.random.SeedSequence(seed, spawn_key=(int(index), 1))


def draw_companions(seed: int, index: int, mag: float, prior, companions, grid) -> list[dict]:
    """The companions of galaxy ``index`` (AB magnitude ``mag``): a Poisson number of
    ``companions.mean_count``, each at a distance uniform in ``companions.distance_px`` (pixel)
    in a uniform direction, ``mag`` plus a uniform ``companions.delta_mag`` (mag), and n, re, q,
    pa from ``prior`` (n rounded to ``grid``). Keys as ``StampRenderer.render`` takes them, with
    dx, dy the offsets in pixel from the stamp centre before the galaxy's own offset."""
    rng = np.random.default_rng(companion_stream(seed, index))
    out = []
    for _ in range(rng.poisson(companions.mean_count)):
        distance = rng.uniform(*companions.distance_px)
        angle = rng.uniform(0.0, 2 * np.pi)
        n = rng.uniform(prior.n.min, prior.n.max)
        out.append(
            {
                "mag": mag + rng.uniform(*companions.delta_mag),
                "n": float(round_to_grid(np.array([n]), grid)[0]),
                "re": float(np.exp(rng.uniform(np.log(prior.re.min), np.log(prior.re.max)))),
                "q": rng.uniform(prior.q.min, prior.q.max),
                "pa": rng.uniform(prior.pa.min, prior.pa.max),
                "dx": distance * np.cos(angle),
                "dy": distance * np.sin(angle),
            }
        )
    return out
