"""Accuracy on images this project did not make: the contract rendered by other code, in one run.

    python benchmarks/other_renderers.py                       # the shipped model, 4,000 each
    python benchmarks/other_renderers.py --ckpt RUN/calibrated.pt --n 1000 --renderers galsim

Galaxies are drawn from the contract prior (conf/prior, continuous n: no render grid) and rendered
with the default instrument (conf/instrument) by code that shares nothing with ``simulate``:

- ``galsim``: plain GalSim, ``Convolve(Sersic, PSF).drawImage(nx=size, ny=size, offset=...)``
  with default GSParams (the pixel response included), as a user following the contract would.
- ``imfit``: imfit's own Sersic (pyimfit ``getModelImage``, its pixel subsampling) convolved
  with the PSF sampled at pixel centres without the pixel (GalSim ``method='no_pixel'``).
  For each galaxy the GalSim image of the same parameters is drawn too, and
  ``/params/renderer_chi`` = sqrt(sum(((imfit - galsim) / background rms)^2)): how many noise
  sigmas the two renderings of one galaxy differ by.

Noise is numpy's: Poisson on source + sky electrons plus Gaussian read noise, sky subtracted,
divided by the exposure time. Stamps are cropped from, or padded with Gaussian background
noise to, the stored size with ``(big - small) // 2`` offsets (not ``simulate.stamps``). The
files carry contract labels and attributes under names other than this project's
(``pixel_scale``, ``zeropoint``, ...), as another simulator's would. Each file is then scored
by ``fitnet.evaluate`` into ``--out/<renderer>/metrics.md``; a summary of scatter and 68%
coverage per magnitude bin is printed. The first ``--fits`` plain-GalSim galaxies are also
written as FITS cutouts at their rendered size (64 to 256 pixels, ``PIXSCALE`` in the header)
and go through ``fitnet.predict`` on the folder, which pads or crops them itself.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import time
from pathlib import Path

import galsim
import h5py
import numpy as np
from astropy.io import fits
from astropy.table import Table
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from scipy.special import gamma, gammaincinv

from sersic_runtime.files import atomic_path
from simulate.priors import FIT_LABELS, LABEL_UNITS
from simulate.psf_record import build_psf
from simulate.render import flux_from_mag  # the contract's magnitude convention, not a renderer

CONF = Path(__file__).resolve().parents[1] / "conf"
# pixel, side of the PSF image the imfit renderer convolves with (this renderer's own choice,
# wider than the fitter's fitnet.imfit.PSF_SIZE)
IMFIT_PSF_SIZE = 51


def draw(prior, n: int, seed: int) -> dict[str, np.ndarray]:
    """Draws from the contract prior (units of conf/prior), continuous n, and one noise seed per galaxy."""
    rng = np.random.default_rng(seed)
    log_re = rng.uniform(math.log(prior.re.min), math.log(prior.re.max), n)
    return {
        "mag": rng.uniform(prior.mag.min, prior.mag.max, n),
        "n": rng.uniform(prior.n.min, prior.n.max, n),
        "re": np.exp(log_re),
        "q": rng.uniform(prior.q.min, prior.q.max, n),
        "pa": rng.uniform(prior.pa.min, prior.pa.max, n),
        "dx": rng.uniform(prior.offset.min, prior.offset.max, n),
        "dy": rng.uniform(prior.offset.min, prior.offset.max, n),
        "size": rng.integers(prior.size.min, prior.size.max + 1, n),
        "noise_seed": rng.integers(0, 2**62, n),
    }


_W: dict = {}  # per worker process: instrument, PSF and the imfit PSF image


def _init(instrument: dict) -> None:
    _W["inst"] = instrument
    _W["psf"] = build_psf(instrument["psf"])
    psf = _W["psf"].drawImage(
        nx=IMFIT_PSF_SIZE, ny=IMFIT_PSF_SIZE, scale=instrument["pixel_scale"], method="no_pixel"
    )
    _W["psf_nopix"] = psf.array / psf.array.sum()


def render_galsim(p: dict) -> np.ndarray:
    """Noiseless stamp in e-/s per pixel, plain GalSim."""
    inst = _W["inst"]
    flux = float(flux_from_mag(p["mag"], inst["zero_point"]))  # e-/s
    gal = galsim.Sersic(n=p["n"], half_light_radius=p["re"] * math.sqrt(p["q"]), flux=flux)
    gal = gal.shear(q=p["q"], beta=p["pa"] * galsim.degrees)
    image = galsim.Convolve(gal, _W["psf"]).drawImage(
        nx=int(p["size"]), ny=int(p["size"]), scale=inst["pixel_scale"], offset=(p["dx"], p["dy"])
    )
    return image.array


def render_imfit(p: dict) -> np.ndarray:
    """Noiseless stamp in e-/s per pixel, imfit's Sersic and convolution."""
    import pyimfit

    inst = _W["inst"]
    n, q, size = p["n"], p["q"], int(p["size"])
    re_pix = p["re"] / inst["pixel_scale"]
    flux = float(flux_from_mag(p["mag"], inst["zero_point"]))  # e-/s
    b = gammaincinv(2 * n, 0.5)
    total_per_i_e = 2 * math.pi * n * q * re_pix**2 * math.exp(b) * b ** (-2 * n) * gamma(2 * n)
    model = pyimfit.SimpleModelDescription()
    centre = (size + 1) / 2.0  # imfit pixels are 1-based; this is the stamp's true centre
    model.x0.setValue(centre + p["dx"])
    model.y0.setValue(centre + p["dy"])
    sersic = pyimfit.make_imfit_function("Sersic")
    sersic.PA.setValue((p["pa"] - 90.0) % 180.0)  # imfit counts from +y
    sersic.ell.setValue(1.0 - q)
    sersic.n.setValue(n)
    sersic.I_e.setValue(flux / total_per_i_e)
    sersic.r_e.setValue(re_pix)
    model.addFunction(sersic)
    return pyimfit.Imfit(model, psf=_W["psf_nopix"], maxThreads=1).getModelImage(shape=(size, size))


def make_stamp(job: tuple[str, dict, int, bool]) -> tuple[np.ndarray, float, np.ndarray | None]:
    """(noisy stamp of the stored size, renderer_chi or NaN, the noisy stamp at its rendered
    size when ``native``) for one galaxy."""
    renderer, p, out, native = job
    inst = _W["inst"]
    t, sky_e = inst["exposure_time"], inst["sky_level"] * inst["exposure_time"]
    image = render_galsim(p) if renderer == "galsim" else render_imfit(p)
    rms = math.sqrt(sky_e + inst["read_noise"] ** 2) / t
    chi = math.nan
    if renderer != "galsim":
        chi = float(np.sqrt((((image - render_galsim(p)) / rms) ** 2).sum()))
    rng = np.random.default_rng(int(p["noise_seed"]))
    electrons = np.clip(image * t + sky_e, 0, None)
    noisy = (rng.poisson(electrons) + rng.normal(0, inst["read_noise"], image.shape) - sky_e) / t
    size = noisy.shape[0]
    if size >= out:
        a = (size - out) // 2
        stamp = noisy[a : a + out, a : a + out]
    else:
        stamp = rng.normal(0, rms, (out, out))
        a = (out - size) // 2
        stamp[a : a + size, a : a + size] = noisy
    return stamp.astype(np.float32), chi, noisy.astype(np.float32) if native else None


def write_set(
    path: Path, renderer: str, cfg, n: int, seed: int, workers: int, cutouts: int = 0
) -> float:
    """Render ``n`` galaxies into a HDF5 file in the data layout, and the first ``cutouts`` of them at their
    rendered size into a folder of FITS files next to it (``<renderer>_fits/``, the truth in
    ``truth.csv``); return the seconds it took."""
    instrument = OmegaConf.to_container(cfg.instrument, resolve=True)
    params = draw(cfg.prior, n, seed)
    rows = [{k: v[i] for k, v in params.items()} for i in range(n)]
    out = cfg.render.stamp_size
    t0 = time.perf_counter()
    with mp.get_context("spawn").Pool(workers, _init, (instrument,)) as pool:
        jobs = [(renderer, row, out, i < cutouts) for i, row in enumerate(rows)]
        results = pool.map(make_stamp, jobs, chunksize=8)
    seconds = time.perf_counter() - t0
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f["images"] = np.stack([r[0] for r in results])
        for k in LABEL_UNITS:
            f[f"params/{k}"] = params[k]
        if renderer != "galsim":
            f["params/renderer_chi"] = np.array([r[1] for r in results])
        f.attrs.update(
            renderer=renderer,
            pixel_scale=instrument["pixel_scale"],
            zeropoint=instrument["zero_point"],
            exptime=instrument["exposure_time"],
            sky=instrument["sky_level"],
            readnoise=instrument["read_noise"],
            psf=str(instrument["psf"]),
            seed=seed,
        )
    if cutouts:
        folder = path.parent / f"{renderer}_fits"
        folder.mkdir(exist_ok=True)
        for i in range(min(cutouts, n)):
            header = fits.Header()
            header["PIXSCALE"] = (instrument["pixel_scale"], "arcsec / pixel")
            header["BUNIT"] = "e-/s"
            fits.PrimaryHDU(results[i][2], header=header).writeto(
                folder / f"gal{i:05d}.fits", overwrite=True
            )
        Table({k: params[k][:cutouts] for k in LABEL_UNITS}).write(
            path.parent / f"{renderer}_fits_truth.csv", overwrite=True
        )
    return seconds


def score_cutouts(out: Path, renderer: str, ckpt: str | None) -> str:
    """``fitnet.predict`` on the folder of FITS cutouts: a line per label, the contract scatter and
    outlier fraction and the fraction inside the 68% interval, next to the same galaxies' in
    the HDF5 file's evaluation."""
    from fitnet.inference import Predictor
    from fitnet.labels import spec_error
    from fitnet.metrics import standard_scores, summarize
    from fitnet.predict import run as run_predict
    from fitnet.runtime import checkpoint_paths, resolve_device

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "predict",
            overrides=[
                f"ckpt={ckpt or 'null'}",
                f"input={out / f'{renderer}_fits'}",
                f"output={out / f'{renderer}_fits_predictions.csv'}",
                "progress=false",
            ],
        )
    table = run_predict(cfg)
    truth = Table.read(out / f"{renderer}_fits_truth.csv")
    hdf5 = Table.read(out / renderer / "predictions.csv")[: len(truth)]
    transforms = Predictor(checkpoint_paths(cfg.ckpt), resolve_device("cpu")).transforms
    lines = [
        "| label | FITS cutouts: scatter, outliers, in 68% | same galaxies from the HDF5 file |"
    ]
    lines.append("| --- | --- | --- |")
    for name in FIT_LABELS:
        cells = []
        for pred in (table, hdf5):
            m = summarize(spec_error(name, pred[name], truth[name]))
            z = standard_scores(
                name, pred[name], truth[name], pred[f"{name}_err"], transforms[name]
            )
            cells.append(
                f"{m['scatter']:.4f}, {100 * m['outlier_frac']:.2f}%, {100 * np.mean(np.abs(z) < 1):.0f}%"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary(metrics: dict, chi: np.ndarray | None, mag: np.ndarray) -> str:
    """Scatter and 68% coverage per magnitude bin and label, plus the renderer difference."""
    labels = metrics["labels"]
    head = "| mag | " + " | ".join(f"{k}: scatter, in 68%" for k in labels) + " |"
    if chi is not None:
        head += " median imfit-GalSim chi |"
    lines = [head, "| --- " * (head.count("|") - 1) + "|"]
    for k, b in enumerate(next(iter(labels.values()))["mag_bins"]):
        cells = [f"{b['lo']:g}-{b['hi']:g}"]
        for name in labels:
            row = labels[name]["mag_bins"][k]
            cover = f"{100 * row['cover68']:.0f}%" if "cover68" in row else "-"
            cells.append(f"{row['scatter']:.4f}, {cover}")
        if chi is not None:
            cells.append(f"{np.median(chi[(mag >= b['lo']) & (mag < b['hi'])]):.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    from fitnet.evaluate import run as run_evaluate

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=4000, help="galaxies per renderer")
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--renderers", nargs="+", default=["galsim", "imfit"])
    parser.add_argument("--ckpt", default=None, help="default: the shipped model")
    parser.add_argument("--out", default="outputs/other_renderers")
    parser.add_argument(
        "--fits", type=int, default=1000, help="also predict on this many as FITS cutouts (galsim)"
    )
    parser.add_argument("--workers", type=int, default=max(1, mp.cpu_count()))
    args = parser.parse_args()
    for renderer in args.renderers:
        if renderer not in ("galsim", "imfit"):
            parser.error(f"--renderers: {renderer!r} is not one of galsim, imfit")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        sim_cfg = compose("simulate")
        eval_cfg = compose("evaluate", overrides=[f"ckpt={args.ckpt or 'null'}", "progress=false"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for renderer in args.renderers:
        path = out / f"{renderer}.h5"
        cutouts = args.fits if renderer == "galsim" else 0
        seconds = write_set(path, renderer, sim_cfg, args.n, args.seed, args.workers, cutouts)
        print(f"{renderer}: {args.n} galaxies rendered in {seconds:.0f} s -> {path}")
        eval_cfg.data = str(path)
        metrics = run_evaluate(eval_cfg, out / renderer)
        with h5py.File(path, "r") as f:
            mag = f["params/mag"][()]
            chi = f["params/renderer_chi"][()] if "params/renderer_chi" in f else None
        print(f"\n{renderer} ({out / renderer / 'metrics.md'}):\n")
        print(summary(metrics, chi, mag) + "\n")
        if cutouts:
            print(f"{renderer}, the first {cutouts} as FITS cutouts at their rendered size:\n")
            print(score_cutouts(out, renderer, args.ckpt) + "\n")


if __name__ == "__main__":
    main()
