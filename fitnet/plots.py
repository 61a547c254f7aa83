"""Figures of training runs."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from simulate.io import atomic_path  # noqa: E402


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
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return png
