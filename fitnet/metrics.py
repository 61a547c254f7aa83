"""Accuracy metrics of SPEC section 7.

Per label the error is: mag ``pred - true``; re ``(pred - true) / true``; n
``log10(pred / true)``; q ``pred - true`` (``labels.spec_error``). Over a set of galaxies:
bias = median error; scatter = half the 16-84 percentile range; outlier fractions =
fraction with ``|error| > 0.5`` and with ``|error| > 5 * scatter``.
"""

from __future__ import annotations

import numpy as np

from .labels import spec_error

OUTLIER_ABS = 0.5  # |error| threshold of the Euclid Morphology Challenge (SPEC section 7)
OUTLIER_SCATTERS = 5.0  # second outlier threshold, in units of the scatter


def summarize(errors: np.ndarray) -> dict[str, float]:
    """Bias, scatter and outlier fractions of a 1-D array of errors."""
    errors = np.asarray(errors, dtype=float)
    if errors.size == 0:
        nan = float("nan")
        return {"count": 0, "bias": nan, "scatter": nan, "outlier_frac": nan, "outlier5_frac": nan}
    p16, p50, p84 = np.percentile(errors, [16, 50, 84])
    scatter = 0.5 * (p84 - p16)
    return {
        "count": int(errors.size),
        "bias": float(p50),
        "scatter": float(scatter),
        "outlier_frac": float(np.mean(np.abs(errors) > OUTLIER_ABS)),
        "outlier5_frac": float(np.mean(np.abs(errors) > OUTLIER_SCATTERS * scatter))
        if scatter > 0
        else 0.0,
    }


def label_metrics(pred: dict[str, np.ndarray], true: dict[str, np.ndarray]) -> dict[str, dict]:
    """``summarize`` of the SPEC error for every label in ``pred``."""
    return {name: summarize(spec_error(name, pred[name], true[name])) for name in pred}
