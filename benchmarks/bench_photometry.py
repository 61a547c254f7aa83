"""Adaptive moments measured in windows against the whole stamp, side by side in one run.

    python benchmarks/bench_photometry.py --data data/sersic/test.h5 --stamps 2000

``AdaptiveMoments`` (fitnet/photometry.py) measures each galaxy in the smallest centred window
that holds its weight. This times it as ``predict`` runs it (batches of conf/predict.yaml's CPU
batch size, all threads) against the same module restricted to the whole stamp, on the same
stamps, alternating the two three times, and reports the speed-up, the share of galaxies per
window and the largest feature difference.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from hydra import compose, initialize_config_dir

from fitnet.photometry import AdaptiveMoments

CONF = Path(__file__).resolve().parents[1] / "conf"


def features(
    module: AdaptiveMoments, images: torch.Tensor, batch: int
) -> tuple[float, torch.Tensor]:
    """Seconds per stamp and the features of all ``images`` (N, S*S), in batches."""
    start = time.perf_counter()
    out = torch.cat([module(images[i : i + batch]) for i in range(0, len(images), batch)])
    return (time.perf_counter() - start) / len(images), out


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", default="data/sersic/test.h5", help="HDF5 file in the data layout"
    )
    parser.add_argument("--stamps", type=int, default=2000, help="stamps to measure")
    args = parser.parse_args()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        batch = compose("predict", overrides=["ckpt=x", "input=x", "output=x"]).batch_size.cpu
        options = compose("train", overrides=["model=photometric"]).model.photometry.adaptive
    with h5py.File(args.data) as f:
        rms = float(f.attrs["background_rms_e_per_s"])  # e-/s per pixel
        stamps = f["images"][: args.stamps]
    size = stamps.shape[-1]
    images = torch.from_numpy(stamps.reshape(len(stamps), -1) / rms).float()  # in units of rms
    windowed = AdaptiveMoments(size, options.iterations, options.initial_sigma_px)
    whole = AdaptiveMoments(size, options.iterations, options.initial_sigma_px)
    whole.windows = [size]
    with torch.inference_mode():
        features(windowed, images[:batch], batch)  # warm-up
        times = {"windows": [], "whole stamp": []}
        for _ in range(3):
            t, a = features(windowed, images, batch)
            times["windows"].append(t)
            t, b = features(whole, images, batch)
            times["whole stamp"].append(t)
        share = np.bincount(windowed.fit(images)[2].numpy(), minlength=len(windowed.windows))
    best = {name: min(t) for name, t in times.items()}
    print(
        f"adaptive moments of {len(images)} {size} px stamps of {args.data}, batches of {batch}, "
        f"{torch.get_num_threads()} threads (best of 3):"
    )
    for name, t in best.items():
        print(f"  {name:12s}: {1e3 * t:.3f} ms per stamp")
    print(f"  speed-up   : {best['whole stamp'] / best['windows']:.2f}x")
    print(
        "  galaxies per window: "
        + ", ".join(
            f"{k} px {100 * n / len(images):.0f}%"
            for k, n in zip(windowed.windows, share, strict=True)
        )
    )
    diff = (a - b).abs()
    print(
        f"  |windows - whole stamp|: 99th percentile {diff.quantile(0.99).item():.1e}, "
        f"max {diff.max().item():.1e} (features: ln sigma, e, asinh S/N, offset px, rho4, e2, asinh S/N2)"
    )


if __name__ == "__main__":
    main()
