"""Figures of training runs."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import math  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from simulate.plots import save_figure  # noqa: E402

from .metrics import ERROR_DEFINITIONS  # noqa: E402


def plot_history(history: list[dict], png: Path) -> Path | None:
    """Training and validation loss per epoch (log scale) to ``png``."""
    if not history:
        return None
    epochs = [row["epoch"] for row in history]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(epochs, [row["train_loss"] for row in history], "o-", label="train")
    ax.plot(epochs, [row["val_loss"] for row in history], "s-", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (standardised labels)")
    if all(row["train_loss"] > 0 and row["val_loss"] > 0 for row in history):
        ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, png, dpi=100)


def plot_folds(histories: list[list[dict]], png: Path) -> Path:
    """The loss curves of k folds (thin lines) with their mean and +-1 standard deviation per
    epoch (over the folds that reached it), training and validation, to ``png``."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for key, colour, name in (("train_loss", "C0", "train"), ("val_loss", "C1", "validation")):
        epochs = sorted({row["epoch"] for h in histories for row in h})
        per_epoch = [
            [row[key] for h in histories for row in h if row["epoch"] == e] for e in epochs
        ]
        mean = np.array([np.mean(v) for v in per_epoch])
        std = np.array([np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in per_epoch])
        for h in histories:
            ax.plot([r["epoch"] for r in h], [r[key] for r in h], color=colour, lw=0.6, alpha=0.4)
        ax.plot(epochs, mean, "o-", color=colour, label=f"{name}: mean of {len(histories)} folds")
        ax.fill_between(
            epochs, mean - std, mean + std, color=colour, alpha=0.2, label=f"{name}: +-1 std"
        )
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (standardised labels)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return save_figure(fig, png, dpi=100)


LOG_AXIS = {"re": True, "n": True, "mag": False, "q": False}
AXIS_LABEL = {"mag": "mag (AB)", "n": "Sersic n", "re": "re (arcsec, semi-major)", "q": "q = b/a"}


def running_percentiles(x, y, edges):
    """Centres, median, 16th and 84th percentiles of y in bins of x (NaN where a bin is empty)."""

    centres = 0.5 * (edges[1:] + edges[:-1])
    stats = np.full((3, len(centres)), np.nan)
    for k, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        inside = (x >= lo) & (x < hi)
        if inside.sum() >= 5:
            stats[:, k] = np.percentile(y[inside], [50, 16, 84])
    return centres, stats


def plot_residuals(name, true, pred, errors, mag_true, mag_edges, png, title=""):
    """Two panels: predicted vs true (2-D density) and error vs true magnitude with bands."""

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    log_axis = LOG_AXIS[name]
    lo, hi = np.nanpercentile(np.concatenate([true, pred]), [0.2, 99.8])
    bins = np.geomspace(lo, hi, 80) if log_axis else np.linspace(lo, hi, 80)
    left.hist2d(true, pred, bins=[bins, bins], norm=LogNorm(), cmap="viridis")
    left.plot([lo, hi], [lo, hi], "r-", lw=1)
    if log_axis:
        left.set_xscale("log")
        left.set_yscale("log")
        for axis in (left.xaxis, left.yaxis):
            axis.set_minor_formatter(NullFormatter())  # minor labels overlap on short log ranges
    left.set_xlabel(f"true {AXIS_LABEL[name]}")
    left.set_ylabel(f"predicted {AXIS_LABEL[name]}")
    left.set_title(f"{name}: predicted vs true (density)")
    elo, ehi = np.nanpercentile(errors, [0.5, 99.5])
    span = max(abs(elo), abs(ehi))
    mag_bins = np.linspace(mag_edges[0], mag_edges[-1], 60)
    right.hist2d(
        mag_true,
        errors,
        bins=[mag_bins, np.linspace(-span, span, 60)],
        norm=LogNorm(),
        cmap="Greys",
    )
    centres, (med, p16, p84) = running_percentiles(
        mag_true, errors, np.asarray(mag_edges, dtype=float)
    )
    right.fill_between(centres, p16, p84, color="tab:orange", alpha=0.35, label="network 16-84%")
    right.plot(centres, med, "o-", color="tab:red", label="network median")
    right.axhline(0, color="k", lw=0.8)
    right.set_xlabel("true mag (AB)")
    right.set_ylabel(f"{name} error: {ERROR_DEFINITIONS[name]}")
    right.set_title(f"{name}: error vs true magnitude")
    right.legend(loc="upper left", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, png, dpi=100)


def plot_gallery(images, captions, rms, png, title=""):
    """Grid of stamps (arcsinh stretch in units of the background rms) with captions."""

    count = len(images)
    cols = min(6, count)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.7 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k < count:
            ax.imshow(
                np.arcsinh(images[k] / rms), origin="lower", cmap="gray_r", interpolation="nearest"
            )
            ax.set_title(captions[k], fontsize=6.5)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, png, dpi=90)
