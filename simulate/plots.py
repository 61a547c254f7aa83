"""Montage of simulated stamps with their labels, for checking a data set by eye."""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from sersic_runtime.files import atomic_path


def save_montage(h5_path: Path, png_path: Path, count: int) -> Path:
    """Write a grid of the first ``count`` stamps of ``h5_path`` (arcsinh stretch) to a PNG."""
    with h5py.File(h5_path, "r") as f:
        count = min(count, len(f["images"]))
        images = f["images"][:count]
        params = {k: f["params"][k][:count] for k in ("mag", "n", "re", "q", "pa", "snr")}
        rms = float(f.attrs["background_rms_e_per_s"])
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.0 * cols, 2.25 * rows), squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k >= count:
            continue
        # arcsinh in units of the background rms shows the noise and the core at once
        ax.imshow(
            np.arcsinh(images[k] / rms), origin="lower", cmap="gray_r", interpolation="nearest"
        )
        ax.set_title(
            f"m={params['mag'][k]:.1f} n={params['n'][k]:.2f}\n"
            f're={params["re"][k]:.2f}" q={params["q"][k]:.2f} S/N={params["snr"][k]:.0f}',
            fontsize=7,
        )
    fig.suptitle(
        f"{Path(h5_path).name}: first {count} stamps, arcsinh(image / background rms)", fontsize=9
    )
    return save_figure(fig, png_path, dpi=90)


def save_figure(fig, png_path: Path, dpi: int = 100) -> Path:
    """Lay out, write (temporary name, then renamed) and close a matplotlib figure."""
    fig.tight_layout()
    with atomic_path(png_path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)
    return Path(png_path)
