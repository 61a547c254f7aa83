"""Fits per second of the batched Sersic fit (``fitnet.fit.SersicFit``), on the CPU and on a GPU
when there is one, in one run.

    python benchmarks/bench_fit.py --galaxies 2000 --window 48

``--galaxies`` Sersic galaxies (n 0.5-4, re 1.5-6 px, q 0.3-1, S/N of tens to thousands)
drawn with GalSim through a Moffat PSF of 3 px FWHM on ``--window`` px windows, unit noise;
each fitted from a start off the truth as the network's answer is (flux and re 15% off, n 20%,
q 0.1, pa 0.2 rad, the centre 0.5 px), all rows in batches of ``--batch``. Prints
``fit, <device>: <rate> fits/s`` lines (``benchmarks/gpu.py`` reads them), the median
iterations and the fraction converged.
"""

from __future__ import annotations

import argparse
import math
import time

import galsim
import numpy as np
import torch

from fitnet.fit import FitBatch, SersicFit, Spectrum, box_side, params_from_labels
from sersic_runtime.configs import load_group
from simulate.render import transfer_function


def galaxies(count: int, window: int, seed: int):
    """Noisy images (count, window, window), the start parameters and the PSF's spectrum."""
    rng = np.random.default_rng(seed)
    psf = galsim.Moffat(beta=3.0, fwhm=3.0)
    truth = {"flux": np.exp(rng.uniform(np.log(300), np.log(3e4), count)),
             "n": rng.uniform(0.5, 4.0, count), "re": rng.uniform(1.5, 6.0, count),
             "q": rng.uniform(0.3, 1.0, count), "pa": rng.uniform(0, math.pi, count),
             "x": (window - 1) / 2 + rng.uniform(-1, 1, count),
             "y": (window - 1) / 2 + rng.uniform(-1, 1, count)}  # fmt: skip
    images = np.empty((count, window, window))
    for i in range(count):
        t = {k: v[i] for k, v in truth.items()}
        gal = galsim.Sersic(n=t["n"], half_light_radius=t["re"] * math.sqrt(t["q"]), flux=t["flux"])
        gal = gal.shear(q=t["q"], beta=t["pa"] * galsim.radians)
        offset = (t["x"] - (window - 1) / 2, t["y"] - (window - 1) / 2)
        images[i] = galsim.Convolve(gal, psf).drawImage(nx=window, ny=window, scale=1.0,
                                                        offset=offset).array  # fmt: skip
    images += rng.normal(0.0, 1.0, images.shape)
    start = params_from_labels(truth["flux"] * 1.15, truth["n"] * 0.8, truth["re"] * 1.15,
                               np.clip(truth["q"] + 0.1, 0.05, 1), truth["pa"] + 0.2,
                               truth["x"] + 0.5, truth["y"] - 0.5)  # fmt: skip
    transfer = np.fft.ifftshift(transfer_function(psf, 1.0, box_side(window)), axes=0)
    spectrum = Spectrum(torch.from_numpy(transfer)[None], window, 1, 1e-7)
    return torch.from_numpy(images), start, spectrum


def rate(device: str, images, start, spectrum, batch: int) -> tuple[float, float, float]:
    """Fits per second on ``device`` (after one warm-up batch), median iterations, converged."""
    fitter = SersicFit(load_group("fit", "auto"), device)

    def run(rows):
        b = FitBatch(images[rows], torch.ones_like(images[rows]), spectrum,
                     torch.zeros(len(images[rows]), dtype=torch.float64), start[rows])  # fmt: skip
        return fitter.fit(b)

    run(slice(0, min(batch, len(images))))
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    results = [run(slice(k, k + batch)) for k in range(0, len(images), batch)]
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    iterations = torch.cat([r.iterations for r in results]).double().median().item()
    converged = torch.cat([r.converged for r in results]).double().mean().item()
    return len(images) / seconds, iterations, converged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--galaxies", type=int, default=2000)
    parser.add_argument("--window", type=int, default=48, help="pixel")
    parser.add_argument("--batch", type=int, default=512, help="rows per fit batch on the CPU")
    parser.add_argument("--gpu-batch", type=int, default=8192, help="rows per batch on a GPU")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    images, start, spectrum = galaxies(args.galaxies, args.window, args.seed)
    devices = [("cpu", args.batch)] + (
        [("cuda", args.gpu_batch)] if torch.cuda.is_available() else []
    )
    print(
        f"{args.galaxies} galaxies on {args.window} px windows, {torch.get_num_threads()} CPU threads"
    )
    for device, batch in devices:
        fits, iterations, converged = rate(device, images, start, spectrum, batch)
        print(f"fit, {device} : {fits:.1f} fits/s (median {iterations:.0f} iterations, "
              f"{100 * converged:.1f}% converged)")  # fmt: skip


if __name__ == "__main__":
    main()
