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


def binned(errors: np.ndarray, values: np.ndarray, edges) -> list[dict]:
    """``summarize`` of ``errors`` in bins of ``values`` with the given edges (lo <= v < hi)."""
    edges = np.asarray(edges, dtype=float)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (values >= lo) & (values < hi)
        rows.append({"lo": float(lo), "hi": float(hi), **summarize(errors[inside])})
    return rows


def report(pred: dict, true: dict, mag: np.ndarray, snr: np.ndarray, mag_bins, snr_bins) -> dict:
    """Overall and binned (true magnitude, S/N) metrics for every predicted label."""
    out = {}
    for name in pred:
        errors = spec_error(name, pred[name], true[name])
        out[name] = {
            "all": summarize(errors),
            "mag_bins": binned(errors, mag, mag_bins),
            "snr_bins": binned(errors, snr, snr_bins),
        }
    return out


ERROR_DEFINITIONS = {
    "mag": "pred - true (mag)",
    "re": "(pred - true) / true",
    "n": "log10(pred / true)",
    "q": "pred - true",
}


def markdown(report_: dict) -> str:
    """Markdown tables of a ``report``: one per label, rows per magnitude and S/N bin."""
    lines = []
    for name, parts in report_.items():
        overall = parts["all"]
        lines += [
            f"### {name}: error = {ERROR_DEFINITIONS[name]}",
            "",
            f"All {overall['count']} galaxies: bias {overall['bias']:+.4f}, scatter {overall['scatter']:.4f}, "
            f"outliers |e|>0.5 {100 * overall['outlier_frac']:.2f}%, |e|>5 scatters {100 * overall['outlier5_frac']:.2f}%",
            "",
            "| bin | N | bias | scatter | \\|e\\|>0.5 | \\|e\\|>5 scatters |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for kind, label in (("mag_bins", "mag"), ("snr_bins", "S/N")):
            for row in parts[kind]:
                if row["count"] == 0:
                    continue
                lines.append(
                    f"| {row['lo']:g} <= {label} < {row['hi']:g} | {row['count']} | {row['bias']:+.4f} | "
                    f"{row['scatter']:.4f} | {100 * row['outlier_frac']:.2f}% | {100 * row['outlier5_frac']:.2f}% |"
                )
        lines.append("")
    return "\n".join(lines)
