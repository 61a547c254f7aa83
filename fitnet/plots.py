"""Figures of training runs."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import math  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402

from simulate.plots import save_figure  # noqa: E402

from .metrics import ERROR_DEFINITIONS  # noqa: E402

#: Each training loss: (axis label, what it is), for loss curves (labels are standardised,
#: fitnet.labels).
LOSS_NAMES = {
    "gaussian_nll": ("Gaussian NLL", "Gaussian negative log-likelihood"),
    "mse": ("MSE", "mean squared error"),
    "l1": ("L1", "mean absolute error"),
}
PLAIN = FuncFormatter(lambda value, _: f"{value:g}")  # 0.85, not 8.5x10^-1


def label_loss(ax, loss: str | None) -> None:
    """The y label and title of a loss curve of training loss ``loss`` (a conf ``loss`` name)."""
    short, what = LOSS_NAMES.get(loss, (loss or "loss", loss or "loss"))
    ax.set_ylabel(f"{short} per stamp")
    ax.set_title(f"training loss: {what}, standardised labels", fontsize=9)


def plot_history(history: list[dict], png: Path, loss: str | None = None) -> Path | None:
    """Training and validation loss per epoch to ``png``; ``loss`` names the training loss
    (its axis label). A log axis only when the losses span more than a decade."""
    if not history:
        return None
    epochs = [row["epoch"] for row in history]
    values = [row[k] for row in history for k in ("train_loss", "val_loss")]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.plot(epochs, [row["train_loss"] for row in history], "o-", label="train")
    ax.plot(epochs, [row["val_loss"] for row in history], "s-", label="validation")
    ax.set_xlabel("epoch")
    label_loss(ax, loss)
    if min(values) > 0 and max(values) / min(values) > 10:
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(PLAIN)
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, png, dpi=100)


def plot_folds(histories: list[list[dict]], png: Path, loss: str | None = None) -> Path:
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
    label_loss(ax, loss)
    ax.yaxis.set_major_formatter(PLAIN)
    ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
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
    *_, density = left.hist2d(true, pred, bins=[bins, bins], norm=LogNorm(), cmap="viridis")
    density_bar(fig, density, left)
    left.plot([lo, hi], [lo, hi], "r-", lw=1)
    if log_axis:
        left.set_xscale("log")
        left.set_yscale("log")
        for axis in (left.xaxis, left.yaxis):
            # labels at 1, 2, 5 x 10^k in plain numbers: n (0.3-6) spans barely a decade
            axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(PLAIN)
            axis.set_minor_formatter(NullFormatter())
    left.set_xlabel(f"true {AXIS_LABEL[name]}")
    left.set_ylabel(f"predicted {AXIS_LABEL[name]}")
    left.set_title(f"{name}: predicted vs true (density)")
    elo, ehi = np.nanpercentile(errors, [0.5, 99.5])
    span = max(abs(elo), abs(ehi))
    mag_bins = np.linspace(mag_edges[0], mag_edges[-1], 60)
    *_, density = right.hist2d(
        mag_true,
        errors,
        bins=[mag_bins, np.linspace(-span, span, 60)],
        norm=LogNorm(),
        cmap="Greys",
    )
    density_bar(fig, density, right)
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


def density_bar(fig, density, ax) -> None:
    """A colour bar of galaxies per cell beside ``ax``, in plain numbers (labels between the
    powers of ten only when the counts span less than a decade)."""
    bar = fig.colorbar(density, ax=ax, label="galaxies per cell")
    lo, hi = density.norm.vmin, density.norm.vmax
    bar.ax.yaxis.set_major_formatter(PLAIN)
    bar.ax.yaxis.set_minor_formatter(PLAIN if hi / max(lo, 1e-9) < 10 else NullFormatter())


def plot_gallery(images, captions, rms, png, title=""):
    """Grid of stamps with captions: an arcsinh stretch in units of the background rms, from
    -2 rms to each stamp's own brightest pixel, so that a faint galaxy shows as well as its
    noise allows (its caption gives its S/N)."""

    count = len(images)
    cols = min(6, count)
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.5 * cols, 3.0 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k < count:
            scaled = np.arcsinh(images[k] / rms)
            top = max(float(np.percentile(scaled, 99.9)), float(np.arcsinh(3.0)))
            ax.imshow(scaled, origin="lower", cmap="gray_r", interpolation="nearest",
                      vmin=float(np.arcsinh(-2.0)), vmax=top)  # fmt: skip
            ax.set_title(captions[k], fontsize=6.5)
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, png, dpi=90)
