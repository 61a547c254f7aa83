"""Accuracy metrics of docs/contract.md, section 7.

Per label the error is: mag ``pred - true``; re ``(pred - true) / true``; n
``log10(pred / true)``; q ``pred - true`` (``labels.spec_error``). Over a set of galaxies:
bias = median error; scatter = half the 16-84 percentile range; outlier fractions =
fraction with ``|error| > 0.5`` and with ``|error| > 5 * scatter``.
"""

from __future__ import annotations

import numpy as np

from .labels import spec_error

OUTLIER_ABS = (
    0.5  # |error| threshold of the Euclid Morphology Challenge (docs/contract.md, section 7)
)
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
    """``summarize`` of the contract error for every label in ``pred``."""
    return {name: summarize(spec_error(name, pred[name], true[name])) for name in pred}


def binned(errors: np.ndarray, values: np.ndarray, edges, stats=None) -> list[dict]:
    """Per bin of ``values`` with the given edges (lo <= v < hi): ``lo``, ``hi`` and
    ``stats(inside)`` (a boolean mask of the bin), by default ``summarize(errors[inside])``."""
    stats = stats or (lambda inside: summarize(errors[inside]))
    return [{"lo": lo, "hi": hi, **stats(inside)} for lo, hi, inside in _bins(values, edges)]


COVERAGE = {"cover68": 1.0, "cover95": 1.959964}  # |z| limits of the 68% and 95% intervals


def standard_scores(name: str, pred, true, sigma, transform: str) -> np.ndarray:
    """(f(pred) - f(true)) / sigma_f, with f the label transform the network was trained in.

    For ``log`` labels the physical sigma is ``pred * sigma_ln`` (first order), so
    ``sigma_ln = sigma / pred``.
    """
    pred, true, sigma = (np.asarray(a, dtype=float) for a in (pred, true, sigma))
    if transform == "log":
        return (np.log(pred) - np.log(true)) / (sigma / pred)
    return (pred - true) / sigma


def calibration(z: np.ndarray) -> dict[str, float]:
    """Fraction of galaxies whose true value lies inside the predicted 68% and 95% intervals."""
    if z.size == 0:
        return {key: float("nan") for key in COVERAGE}
    return {key: float(np.mean(np.abs(z) < limit)) for key, limit in COVERAGE.items()}


def _bins(values, edges):
    edges = np.asarray(edges, dtype=float)
    return [
        (float(lo), float(hi), (values >= lo) & (values < hi))
        for lo, hi in zip(edges[:-1], edges[1:], strict=True)
    ]


def report(pred, true, mag, snr, mag_bins, snr_bins, sigma=None, transforms=None, crb=None) -> dict:
    """Overall and binned (true magnitude, S/N) metrics for every predicted label.

    With ``sigma`` (predicted uncertainties per label) and ``transforms``, every bin also gets
    ``cover68``/``cover95``; with ``crb`` (Cramer-Rao bounds per label, contract error units) it
    gets ``crb_median`` and ``scatter_over_crb`` (the bin's scatter / its median bound).
    """
    out = {}
    for name in pred:
        errors = spec_error(name, pred[name], true[name])
        z = None
        if sigma is not None and name in sigma:
            z = standard_scores(name, pred[name], true[name], sigma[name], transforms[name])
        bound = None if crb is None or name not in crb else np.asarray(crb[name], dtype=float)

        def stats(inside, errors=errors, z=z, bound=bound):
            row = summarize(errors[inside])
            if z is not None:
                row.update(calibration(z[inside]))
            if bound is not None:
                b = bound[inside]
                b = b[np.isfinite(b)]
                row["crb_median"] = float(np.median(b)) if b.size else float("nan")
                row["scatter_over_crb"] = (
                    row["scatter"] / row["crb_median"] if b.size else float("nan")
                )
            return row

        everything = np.ones(len(errors), dtype=bool)
        out[name] = {
            "all": stats(everything),
            "mag_bins": binned(errors, mag, mag_bins, stats),
            "snr_bins": binned(errors, snr, snr_bins, stats),
        }
    return out


ERROR_DEFINITIONS = {
    "mag": "pred - true (mag)",
    "re": "(pred - true) / true",
    "n": "log10(pred / true)",
    "q": "pred - true",
}


#: Optional columns of the Markdown tables: key, header, format.
OPTIONAL_COLUMNS = (
    ("cover68", "in 68%", lambda v: f"{100 * v:.1f}%"),
    ("cover95", "in 95%", lambda v: f"{100 * v:.1f}%"),
    ("crb_median", "median CRB", lambda v: f"{v:.4f}"),
    ("scatter_over_crb", "scatter / CRB", lambda v: f"{v:.2f}"),
)


def _row(row: dict, optional) -> str:
    cells = [
        str(row["count"]),
        f"{row['bias']:+.4f}",
        f"{row['scatter']:.4f}",
        f"{100 * row['outlier_frac']:.2f}%",
        f"{100 * row['outlier5_frac']:.2f}%",
    ]
    cells += [fmt(row[key]) for key, _, fmt in optional]
    return " | ".join(cells)


def markdown(report_: dict, title: str = "") -> str:
    """Markdown tables of a ``report``: one per label, rows per magnitude and S/N bin."""
    lines = []
    for name, parts in report_.items():
        overall = parts["all"]
        optional = [c for c in OPTIONAL_COLUMNS if c[0] in overall]
        head = [
            "bin",
            "N",
            "bias",
            "scatter",
            "\\|e\\|>0.5",
            "\\|e\\|>5 scatters",
            *[c[1] for c in optional],
        ]
        lines += [
            f"### {title}{name}: error = {ERROR_DEFINITIONS[name]}",
            "",
            "| " + " | ".join(head) + " |",
            "| " + " | ".join("---" for _ in head) + " |",
            f"| all | {_row(overall, optional)} |",
        ]
        for kind, label in (("mag_bins", "mag"), ("snr_bins", "S/N")):
            for row in parts[kind]:
                if row["count"]:
                    lines.append(
                        f"| {row['lo']:g} <= {label} < {row['hi']:g} | {_row(row, optional)} |"
                    )
        lines.append("")
    return "\n".join(lines)
