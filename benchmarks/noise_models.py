"""Correlated noise: what a model trained on white noise does with it, against one trained on it.

    python benchmarks/noise_models.py --out data/noise-models [--galaxies 6000 --epochs 4]

A blank-sky patch of correlated noise (white noise smoothed by a Gaussian of ``--smooth-px``
pixels sigma, as resampling does, scaled to the default instrument's background rms) is
written as FITS. Two data sets of the same galaxies (same master seed) are simulated with the
default instrument: one with its white CCD noise, one with ``noise=correlated`` measured on the
patch (same per-pixel rms). A network is trained on each (``experiment=full_cpu``, the same
epochs) and both are evaluated on the correlated test split, beside the white-noise model on
its own test split. The Cramer-Rao bounds of the two test splits (same galaxies) show what the
correlations cost; the table shows whether a white-noise model notices (its flags) and how far
its scatter and sigmas are off. Each step is a command as a user runs it and is skipped when its
output exists, so a killed run resumes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
from astropy.io import fits
from scipy import ndimage

LABELS = ("mag", "n", "re", "q")


def command(args: list[str], log: Path) -> float:
    """Run ``python -m ...args`` with its output in ``log``; its wall time in s."""
    start = time.perf_counter()
    with open(log, "w") as fh:
        subprocess.run(
            [sys.executable, "-m", *args], check=True, stdout=fh, stderr=subprocess.STDOUT
        )
    return time.perf_counter() - start


def write_patch(path: Path, rms: float, smooth_px: float, seed: int, size: int = 512) -> None:
    white = np.random.default_rng(seed).standard_normal((size, size))
    field = ndimage.gaussian_filter(white, smooth_px, mode="wrap")
    fits.writeto(path, (field * rms / field.std()).astype(np.float32), overwrite=True)


def simulate(out: Path, name: str, args, extra: list[str]) -> float:
    folder = out / name
    if (folder / "test.h5").exists():
        return float("nan")
    sim = ["simulate", f"n={args.galaxies}", f"seed={args.seed}", f"out_dir={folder}", "montage=0"]
    return command([*sim, *extra], out / f"simulate-{name}.log")


def train(out: Path, name: str, args) -> Path:
    run = out / f"train-{name}"
    if not (run / "best.pt").exists():
        command(["fitnet.train", "experiment=full_cpu", f"epochs={args.epochs}", "amp_cpu=true",
                 "progress=false", f"data_dir={out / name}", f"output_dir={run}"],
                out / f"train-{name}.log")  # fmt: skip
    return run / "best.pt"


def evaluate(out: Path, ckpt: Path, data: str, tag: str) -> dict:
    folder = out / f"evaluate-{tag}"
    if not (folder / "metrics.json").exists():
        command(["fitnet.evaluate", f"ckpt={ckpt}", f"data={out / data / 'test.h5'}",
                 f"output_dir={folder}", "progress=false"], out / f"evaluate-{tag}.log")  # fmt: skip
    return json.loads((folder / "metrics.json").read_text())


def crb_ratio(out: Path) -> dict:
    """Median over the test galaxies of the correlated noise's bound over the white noise's."""
    bounds = {}
    for name in ("white", "correlated"):
        with h5py.File(out / name / "test.h5") as f:
            bounds[name] = {label: f[f"params/crb_{label}"][()] for label in LABELS}
            mags = f["params/mag"][()]
    bright = mags < 23
    return {label: float(np.median(bounds["correlated"][label][bright] / bounds["white"][label][bright]))
            for label in LABELS}  # fmt: skip


def table(results: dict, ratios: dict) -> str:
    rows = ["| model, test data | flagged | " + " | ".join(
        f"{x} {label}" for label in LABELS for x in ("scatter/CRB", "cover68")) + " |",
        "| --- | --- |" + " --- |" * (2 * len(LABELS))]  # fmt: skip
    for tag, metrics in results.items():
        cells = []
        for label in LABELS:
            overall = metrics["labels"][label]["all"]
            cells += [f"{overall['scatter_over_crb']:.2f}", f"{overall['cover68']:.2f}"]
        flagged = metrics["flagged"] / (metrics["flagged"] + metrics["evaluated"])
        rows.append(f"| {tag} | {flagged:.1%} | " + " | ".join(cells) + " |")
    ratio = ", ".join(f"{label} {ratios[label]:.2f}" for label in LABELS)
    return "\n".join(rows) + f"\n\nCRB correlated / white (median, mag < 23): {ratio}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--galaxies", type=int, default=6000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--smooth-px", type=float, default=0.6)  # lag-1 correlation 0.5
    parser.add_argument("--seed", type=int, default=777)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    from sersic_runtime.configs import compose_packaged
    from simulate.noise import background_rms

    rms = background_rms(compose_packaged("simulate").instrument)
    patch = args.out / "blank.fits"
    write_patch(patch, rms, args.smooth_px, args.seed)
    seconds = {
        "white": simulate(args.out, "white", args, []),
        "correlated": simulate(args.out, "correlated", args, ["noise=correlated", f"noise.file={patch}"]),
    }  # fmt: skip
    models = {name: train(args.out, name, args) for name in ("white", "correlated")}
    results = {
        "white model, white test": evaluate(args.out, models["white"], "white", "white-on-white"),
        "white model, correlated test": evaluate(args.out, models["white"], "correlated", "white-on-correlated"),
        "correlated model, correlated test": evaluate(args.out, models["correlated"], "correlated", "correlated-on-correlated"),
    }  # fmt: skip
    text = table(results, crb_ratio(args.out))
    text += f"\nsimulation wall time (s): {json.dumps(seconds)}\n"
    (args.out / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
