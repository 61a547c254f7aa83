"""The PSF-conditioned generalist and the fit on instruments, against the specialist,
pyimfit and the noise limit.

    python benchmarks/generalist.py --ckpt fitnet/pretrained/generalist.pt --out data/generalist-bench --imfit 100

For each instrument a test set is simulated (``--galaxies``, 90% test with Cramer-Rao bounds)
with its own PSF and prior, the PSF is written as a FITS image (the effective PSF at the data's
sampling, as a survey gives it), and the generalist measures the stamps through
``python -m fitnet.predict ckpt=... psf=... pixel_scale=... zero_point=... gain=...``, as a
user runs it, three ways (``MODES``): the network alone (``fit=none``), the fit alone started
from the stamps' moments (``fit=all fit.start=moments``), and the default, the network then
the fit (``fit=auto``):

- ``candels_h``, the default instrument, where the shipped specialist predicts the same stamps;
- ``ground``: a Kolmogorov PSF of 0.8" FWHM at 0.2"/px (4 px), SDSS-like depth;
- ``space``: an obscured Airy (lambda 1.6 um, D 2.0 m, obscuration 0.3) with a 0.04" Gaussian
  jitter at 0.1"/px (about 1.8 px);
- ``hsc_i``: the HSC-Wide i preset, held out of the generalist's training PSFs.

Per instrument and S/N bin (the noiseless matched-filter S/N): scatter, bias and outliers per
label, scatter over the median Cramer-Rao bound, 68% coverage, for the rows with flag 0;
``--imfit N`` adds pyimfit with the true PSF on the first N test stamps (and each mode on the
same N). The seconds each command took (start-up included) and pyimfit's seconds per fit on
one core give the speed. Each step is skipped when its output exists. Writes
``results.json``, ``results.md`` and ``summary.md`` (the worst cell per model against the
targets) in ``--out``.
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
from astropy.table import Table

LABELS = ("mag", "n", "re", "q")
SNR_BINS = (10, 30, 100, 300, 1000, 1e5)
PSF_SIZE = (
    255  # pixel, side of the PSF images written (an Airy's wings beyond it: 0.3% of its flux)
)
#: instrument name -> simulate overrides
INSTRUMENTS = {
    "candels_h": [],
    "ground": ["instrument=sdss_r", "instrument.name=ground", "instrument.pixel_scale=0.2",
               "instrument.psf._target_=galsim.Kolmogorov", "instrument.psf.fwhm=0.8",
               "prior=default", "prior.re.min=0.2", "prior.re.max=4.0", "prior.mag.min=15",
               "prior.mag.max=21"],
    "space": ["instrument.name=space", "instrument.pixel_scale=0.1", "~instrument.psf",
              "+instrument.psf={_target_:galsim.Convolve,_args_:[{_target_:galsim.Airy,lam:1600,"
              "diam:2.0,obscuration:0.3,scale_unit:arcsec},{_target_:galsim.Gaussian,fwhm:0.04}]}",
              "prior.re.min=0.1", "prior.re.max=3.0"],
    "hsc_i": ["instrument=hsc_i"],
}  # fmt: skip


#: How each row is measured: name -> fitnet.predict overrides.
MODES = {"network": ["fit=none"], "fit": ["fit=all", "fit.start=moments"], "network+fit": []}


def command(args: list[str], log: Path) -> float:
    """Run ``python -m args`` (its output to ``log``); its wall time in seconds."""
    start = time.perf_counter()
    with open(log, "w") as fh:
        subprocess.run(
            [sys.executable, "-m", *args], check=True, stdout=fh, stderr=subprocess.STDOUT
        )
    return time.perf_counter() - start


def simulate(out: Path, name: str, args) -> Path:
    folder = out / name
    if not (folder / "test.h5").exists():
        command(["simulate", *INSTRUMENTS[name], f"n={args.galaxies}", f"seed={args.seed}",
                 f"out_dir={folder}", "montage=0", "splits.train=0.05", "splits.val=0.05",
                 "splits.test=0.9", f"workers={args.workers}"], out / f"simulate-{name}.log")  # fmt: skip
    return folder / "test.h5"


def write_psf(data: Path, path: Path) -> tuple[float, float, float]:
    """The file's PSF as an effective PSF image at its sampling; (pixel scale, zero point,
    exposure time: counts per e-/s, the gain of its pixels)."""
    from simulate.psf_record import from_record

    with h5py.File(data) as f:
        attrs = dict(f.attrs)
    scale = float(attrs["pixel_scale_arcsec"])
    psf = from_record(attrs["psf"])
    # large enough to hold the wings (a truncated PSF biases every fitted flux by its lost light)
    image = psf.drawImage(nx=PSF_SIZE, ny=PSF_SIZE, scale=scale).array
    fits.writeto(path, (image / image.sum()).astype(np.float32), overwrite=True)
    return scale, float(attrs["zero_point_mag"]), float(attrs["exposure_time_s"])


def predict(out: Path, name: str, data: Path, ckpt: str, psf: Path | None, known, mode: str,
            timings: dict) -> Table:  # fmt: skip
    """The catalogue of ``data`` by ``ckpt`` measured in ``mode`` (``MODES``); its wall time
    in ``timings``."""
    path = out / f"{name}-{Path(ckpt).stem}-{mode.replace('+', '_')}.ecsv"
    if not path.exists():
        scale, zp, gain = known
        extra = [] if psf is None else [f"psf={psf}", f"pixel_scale={scale}", f"zero_point={zp}",
                                        f"gain={gain}"]  # fmt: skip
        seconds = command(["fitnet.predict", f"ckpt={ckpt}", f"input={data}", f"output={path}",
                           "progress=false", *extra, *MODES[mode]],
                          out / f"predict-{path.stem}.log")  # fmt: skip
        (path.with_suffix(".seconds")).write_text(f"{seconds}\n")
    timings[f"{Path(ckpt).stem} {mode}"] = float(path.with_suffix(".seconds").read_text())
    return Table.read(path)


def imfit(out: Path, name: str, data: Path, limit: int) -> Table | None:
    if not limit:
        return None
    path = out / f"{name}-imfit.ecsv"
    if not path.exists():
        command(["fitnet.baseline", f"data={data}", f"limit={limit}", f"output={path}"],
                out / f"imfit-{name}.log")  # fmt: skip
    return Table.read(path)


def scores(table: Table, truth: dict, rows=None) -> dict:
    """Per label and S/N bin: N, scatter, bias, outliers, scatter/CRB, 68% coverage."""
    from fitnet.metrics import report

    n = len(table)
    rows = np.arange(n) if rows is None else rows
    good = np.zeros(n, dtype=bool)
    good[rows] = True
    if "flag" in table.colnames:
        good &= np.asarray(table["flag"]) == 0
    pred = {k: np.asarray(table[k], dtype=float)[good] for k in LABELS}
    true = {k: truth[k][:n][good] for k in LABELS}
    sigma = {k: np.asarray(table[f"{k}_err"], dtype=float)[good] for k in LABELS
             if f"{k}_err" in table.colnames}  # fmt: skip
    transforms = {"mag": "identity", "n": "log", "re": "log", "q": "identity"}
    crb = {k: truth[f"crb_{k}"][:n][good] for k in LABELS}
    out = report(pred, true, truth["mag"][:n][good], truth["snr"][:n][good], [0, 99],
                 SNR_BINS, sigma or None, transforms, crb)  # fmt: skip
    out["flagged"] = float(1 - good[rows].mean())
    return out


def native(out: Path, ckpt: str, data: Path) -> dict:
    """``fitnet.evaluate`` on the generalist's own test split (every PSF family), and the 68%
    coverage and scatter per PSF family of its flag-0 rows."""
    from fitnet.labels import spec_error
    from fitnet.metrics import calibration, standard_scores, summarize
    from simulate.psf_family import FAMILIES

    folder = out / "native"
    if not (folder / "metrics.json").exists():
        command(["fitnet.evaluate", f"ckpt={ckpt}", f"data={data}", f"output_dir={folder}",
                 "progress=false", "mag_bins=[16,18,20,22,24,26]"], out / "evaluate-native.log")  # fmt: skip
    table = Table.read(folder / "predictions.csv")
    with h5py.File(data) as f:
        family = f["params/psf_family"][()]
    good = np.asarray(table["flag"]) == 0
    transforms = {"mag": "identity", "n": "log", "re": "log", "q": "identity"}
    per_family = {}
    for code, name in enumerate(FAMILIES):
        rows = good & (family == code)
        per_family[name] = {
            k: {**summarize(spec_error(k, np.asarray(table[k])[rows], np.asarray(table[f"true_{k}"])[rows])),
                **calibration(standard_scores(k, np.asarray(table[k])[rows], np.asarray(table[f"true_{k}"])[rows],
                                              np.asarray(table[f"{k}_err"])[rows], transforms[k]))}
            for k in LABELS
        }  # fmt: skip
    return {"metrics": json.loads((folder / "metrics.json").read_text()), "per_family": per_family}


def shuffled_psfs(out: Path, ckpt: str, data: Path, seed: int) -> dict:
    """What the PSF input buys: the native test split with every stamp given another stamp's
    PSF (a random permutation of /psf), through ``fitnet.evaluate``."""
    import shutil

    copy, folder = out / "shuffled-psf.h5", out / "native-shuffled"
    if not (folder / "metrics.json").exists():
        shutil.copy(data, copy)
        with h5py.File(copy, "r+") as f:
            f["psf"][...] = f["psf"][()][np.random.default_rng(seed).permutation(len(f["psf"]))]
        command(["fitnet.evaluate", f"ckpt={ckpt}", f"data={copy}", f"output_dir={folder}",
                 "progress=false", "mag_bins=[16,18,20,22,24,26]"], out / "evaluate-shuffled.log")  # fmt: skip
        copy.unlink()
    return json.loads((folder / "metrics.json").read_text())


def large_galaxies(out: Path, ckpt: str, count: int, seed: int) -> dict:
    """Galaxies too large for the stamp (re 40-80 px, in 384 px cutouts at 0.1"/px, a Moffat PSF
    of 6 px FWHM, S/N of hundreds), drawn with GalSim: the generalist bins them 3 x 3 with their
    PSF; its re, n and q errors and flags."""
    import galsim

    from fitnet.labels import spec_error
    from fitnet.metrics import summarize

    folder = out / "large"
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    psf = galsim.Moffat(beta=3.0, fwhm=0.6)
    truth = {k: [] for k in ("re", "n", "q")}
    for k in range(count):
        re_px, n, q = (
            np.exp(rng.uniform(np.log(40), np.log(80))),
            rng.uniform(0.5, 4),
            rng.uniform(0.3, 1),
        )
        gal = galsim.Sersic(n=n, half_light_radius=0.1 * re_px * np.sqrt(q), flux=3e4).shear(
            q=q, beta=rng.uniform(0, np.pi) * galsim.radians)  # fmt: skip
        image = galsim.Convolve(gal, psf).drawImage(nx=384, ny=384, scale=0.1).array
        image += rng.normal(0.0, 0.5, image.shape)
        fits.writeto(folder / f"g{k:03d}.fits", image.astype(np.float32),
                     fits.Header({"PIXSCALE": 0.1}), overwrite=True)  # fmt: skip
        for name, value in (("re", 0.1 * re_px), ("n", n), ("q", q)):
            truth[name].append(value)
    psf_path = out / "large-psf.fits"
    image = psf.drawImage(nx=41, ny=41, scale=0.1).array
    fits.writeto(psf_path, (image / image.sum()).astype(np.float32), overwrite=True)
    path = out / "large.ecsv"
    command(["fitnet.predict", f"ckpt={ckpt}", f"input={folder}", f"psf={psf_path}",
             f"output={path}", "progress=false"], out / "predict-large.log")  # fmt: skip
    table = Table.read(path)
    good = np.asarray(table["flag"]) == 0
    result = {"count": count, "flagged": float(1 - good.mean()),
              "bin_factors": sorted(set(int(b) for b in table["bin_factor"]))}  # fmt: skip
    for name in ("re", "n", "q"):
        errors = spec_error(name, np.asarray(table[name])[good], np.asarray(truth[name])[good])
        result[name] = summarize(errors)
    return result


def truth_of(data: Path) -> dict:
    with h5py.File(data) as f:
        return {k: f["params"][k][()] for k in (*LABELS, "snr", *[f"crb_{k}" for k in LABELS])}


def markdown(results: dict) -> str:
    lines = []
    for name, models in results.items():
        if name == "speed":
            continue
        lines += [f"## {name}", "", "| model | S/N | N | " + " | ".join(
            f"{k} scatter (x CRB, in 68%)" for k in LABELS) + " |",
            "| --- | --- | --- |" + " --- |" * len(LABELS)]  # fmt: skip
        for model, rep in models.items():
            for b in range(len(SNR_BINS) - 1):
                row = rep["mag"]["snr_bins"][b]
                if not row["count"]:
                    continue
                cells = []
                for k in LABELS:
                    r = rep[k]["snr_bins"][b]
                    cover = f", {100 * r['cover68']:.0f}%" if "cover68" in r else ""
                    cells.append(f"{r['scatter']:.3f} ({r['scatter_over_crb']:.2f}x{cover})")
                lines.append(f"| {model} | {row['lo']:g}-{row['hi']:g} | {row['count']} | "
                             + " | ".join(cells) + " |")  # fmt: skip
            lines.append(
                f"| {model} | flagged | {100 * rep['flagged']:.1f}% |" + " |" * len(LABELS)
            )
        lines.append("")
    return "\n".join(lines)


def summary(results: dict) -> str:
    """Per instrument and model: the worst scatter over the Cramer-Rao bound and the range of
    68% coverage over every label and S/N bin above 30 (the issue's targets), the same in the
    bins below 30, and the rows flagged."""
    lines = ["| instrument | model | S/N > 30: scatter / CRB, worst | 68% coverage | "
             "S/N < 30: scatter / CRB, worst | flagged |", "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for name, models in results.items():
        if name == "speed":
            continue
        for model, rep in models.items():
            if "(first" in model:
                continue
            cells = []
            for high in (True, False):
                ratios, covers = [], []
                for k in LABELS:
                    for row in rep[k]["snr_bins"]:
                        if row["count"] >= 5 and (row["lo"] >= 30) == high:
                            ratios.append(row["scatter_over_crb"])
                            covers.append(row.get("cover68", np.nan))
                worst = f"{max(ratios):.2f}x" if ratios else "-"
                cover = (f"{100 * np.nanmin(covers):.0f}-{100 * np.nanmax(covers):.0f}%"
                         if covers and np.isfinite(covers).any() else "-")  # fmt: skip
                cells += [worst, cover] if high else [worst]
            lines.append(f"| {name} | {model} | {cells[0]} | {cells[1]} | {cells[2]} | "
                         f"{100 * rep['flagged']:.1f}% |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="the generalist checkpoint")
    parser.add_argument("--specialist", default="candels_h", help="ckpt= of the specialist")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--galaxies", type=int, default=1500)
    parser.add_argument("--seed", type=int, default=8080)
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--imfit", type=int, default=0, help="pyimfit on the first N test stamps")
    parser.add_argument("--only", nargs="*", default=list(INSTRUMENTS))
    parser.add_argument("--native", type=Path, help="the generalist's own test split (test.h5)")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    if args.native is not None:
        own = native(args.out, args.ckpt, args.native)
        own["shuffled_psf"] = shuffled_psfs(args.out, args.ckpt, args.native, args.seed)
        own["large"] = large_galaxies(args.out, args.ckpt, 40, args.seed)
        print("large", own["large"])
        (args.out / "native.json").write_text(json.dumps(own, indent=1))
        for name, labels in own["per_family"].items():
            print(
                name,
                {k: (round(v["scatter"], 4), round(v["cover68"], 3)) for k, v in labels.items()},
            )
    speed = {}
    for name in args.only:
        data = simulate(args.out, name, args)
        truth = truth_of(data)
        known = write_psf(data, args.out / f"{name}-psf.fits")
        psf = args.out / f"{name}-psf.fits"
        results[name], timings = {}, {}
        tables = {f"generalist {mode}": predict(args.out, name, data, args.ckpt, psf, known, mode, timings)
                  for mode in MODES}  # fmt: skip
        if name == "candels_h":
            for mode in ("network", "network+fit"):
                tables[f"specialist {mode}"] = predict(args.out, name, data, args.specialist, None,
                                                       known, mode, timings)  # fmt: skip
        for label, table in tables.items():
            results[name][label] = scores(table, truth)
        fitted = imfit(args.out, name, data, args.imfit)
        if fitted is not None:
            rows = np.arange(len(fitted))
            results[name]["pyimfit"] = scores(fitted, truth)
            for label, table in tables.items():
                results[name][f"{label} (first {len(rows)})"] = scores(table, truth, rows)
            timings["pyimfit seconds per fit"] = float(np.median(fitted["seconds"]))
        timings["rows"] = len(truth["mag"])
        speed[name] = timings
        print(name, timings)
    results["speed"] = speed
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    (args.out / "results.md").write_text(markdown(results))
    (args.out / "summary.md").write_text(summary(results))
    print(markdown(results))
    print(summary(results))


if __name__ == "__main__":
    main()
