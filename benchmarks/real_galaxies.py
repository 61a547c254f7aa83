"""Real galaxies with published one-Sersic fits: the default command against the published fit
and against pyimfit with the same image, PSF, mask and noise.

    python benchmarks/real_galaxies.py --data data/real --out data/real-bench

``--data`` holds each galaxy's files as their authors distribute them (``GALAXIES``):

- IC 3478, SDSS r (imfit's tutorial; https://github.com/perwin/imfit, ``examples/``):
  ``ic3478rss_256.fits``, ``ic3478rss_256_mask.fits``, ``psf_moffat_51.fits``. Published:
  imfit's tutorial fit with that PSF and mask (data-based chi-square), and its fits with model
  errors and Poisson likelihood, whose spread is the published fitter's own.
- GALFIT's example, HST ACS (``galfit-ex.tar.gz`` from GALFIT's home page): ``gal.fits``,
  ``psf.fits``. Its feedme's numbers are not a fit to this image (its magnitude is 3 mag off
  the image's total light), so only pyimfit is compared.

Each galaxy is measured by ``python -m fitnet.predict ckpt=generalist input=... psf=... mask=...
gain=...`` as a user runs it, and by pyimfit (``fitnet.imfit.fit_sersic``, started from the
image moments, one core). Writes ``results.json`` and ``results.md`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

#: name -> files, what the user states, what imfit needs and the published fits (re in pixels,
#: pa in degrees from +x, x/y 0-based). imfit's noise: gain (e- per image unit), read noise
#: (e-), the sky subtracted before (image units).
GALAXIES = {
    "IC 3478 (SDSS r)": {
        "image": "ic3478rss_256.fits", "mask": "ic3478rss_256_mask.fits",
        "psf": "psf_moffat_51.fits", "pixel_scale": 0.396, "gain": 4.725, "read_noise": 4.3,
        "sky": 130.14, "fit_sky": False,
        "published": {  # imfit tutorial, with --psf and --mask
            "imfit (data chi2)": {"n": 2.48051, "re_px": 59.5241, "q": 1 - 0.227617,
                                  "pa": 19.0576 + 90, "x": 127.9174, "y": 128.0800},
            "imfit (model chi2)": {"n": 2.59104, "re_px": 63.6443, "q": 1 - 0.227161},
            "imfit (Poisson)": {"n": 2.55157, "re_px": 62.1518, "q": 1 - 0.227176},
        },
    },
    "GALFIT example (HST ACS)": {
        "image": "gal.fits", "mask": None, "psf": "psf.fits", "pixel_scale": 0.05, "gain": 1.0,
        "read_noise": None, "sky": 0.0, "fit_sky": True, "published": {},
    },
}  # fmt: skip
LABELS = ("n", "re_px", "q", "pa", "flux")


def predict(data: Path, out: Path, name: str, spec: dict) -> tuple[dict, float]:
    """The default command's catalogue row of one galaxy, and its wall time (seconds)."""
    path = out / f"{spec['image'].split('.')[0]}.ecsv"
    args = [sys.executable, "-m", "fitnet.predict", "ckpt=generalist",
            f"input={data / spec['image']}", f"psf={data / spec['psf']}",
            f"pixel_scale={spec['pixel_scale']}", f"gain={spec['gain']}", f"output={path}",
            f"fit.fit_sky={str(spec['fit_sky']).lower()}", "progress=false",
            f"hydra.run.dir={out / 'runs' / path.stem}"]  # fmt: skip
    if spec["mask"]:
        args.append(f"mask={data / spec['mask']}")
    start = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    row = Table.read(path)[0]
    keys = (*LABELS, *[f"{k}_err" for k in LABELS], "x", "y", "flag", "problem", "chi2")
    return {k: (str(row[k]) if k == "problem" else float(row[k])) for k in keys}, seconds


def background_rms(image: np.ndarray, mask) -> float:
    """The image's noise rms (image units): from the pixels below their median (the galaxy
    and its neighbours are above), whose distance to it is a half-Gaussian's."""
    good = image[np.asarray(mask) == 0] if mask is not None else image.ravel()
    low = good[good < np.median(good)]
    return float(1.4826 * np.median(np.abs(low - np.median(good))))


def imfit(data: Path, spec: dict) -> dict:
    """pyimfit with the galaxy's PSF, mask and noise; the labels in the row's units."""
    from fitnet.imfit import fit_sersic

    image = fits.getdata(data / spec["image"]).astype(np.float64)
    mask = fits.getdata(data / spec["mask"]) if spec["mask"] else None
    psf = fits.getdata(data / spec["psf"]).astype(np.float64)
    rms = background_rms(image, mask)
    read_noise = spec["read_noise"] if spec["read_noise"] is not None else rms * spec["gain"]
    instrument = {"exposure_time_s": spec["gain"], "read_noise_e": read_noise,
                  "sky_level_e_per_s_per_pixel": spec["sky"], "zero_point_mag": 0.0,
                  "background_rms_e_per_s": rms, "pixel_scale_arcsec": 1.0}  # fmt: skip
    result = fit_sersic(image, psf / psf.sum(), instrument, mask=mask, fit_sky=spec["fit_sky"])
    return {"n": result["n"], "re_px": result["re"], "q": result["q"], "pa": result["pa"],
            "flux": 10 ** (-0.4 * result["mag"]), "seconds": result["seconds"],
            "ok": result["ok"], "sky": result["sky"]}  # fmt: skip


def offsets(ours: dict, ref: dict) -> dict:
    """Ours minus ``ref``: mag (from flux), dex in n, fraction in re, q; pa in degrees."""
    out = {}
    if "flux" in ref:
        out["mag"] = -2.5 * math.log10(ours["flux"] / ref["flux"])
    if "n" in ref:
        out["n_dex"] = math.log10(ours["n"] / ref["n"])
    if "re_px" in ref:
        out["re_frac"] = ours["re_px"] / ref["re_px"] - 1
    if "q" in ref:
        out["q"] = ours["q"] - ref["q"]
    if "pa" in ref:
        out["pa_deg"] = (ours["pa"] - ref["pa"] + 90) % 180 - 90
    return out


def markdown(results: dict) -> str:
    lines = ["| galaxy | against | mag | n (dex) | re | q | pa (deg) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for name, result in results.items():
        for ref, off in result["offsets"].items():
            cells = [f"{off[k]:+.3f}" if k in off else "" for k in ("mag", "n_dex")]
            cells.append(f"{100 * off['re_frac']:+.1f}%" if "re_frac" in off else "")
            cells += [f"{off[k]:+.3f}" if k in off else "" for k in ("q",)]
            cells.append(f"{off['pa_deg']:+.1f}" if "pa_deg" in off else "")
            lines.append(f"| {name} | {ref} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of the galaxies' files")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    for name, spec in GALAXIES.items():
        if not (args.data / spec["image"]).exists():
            print(f"{name}: {args.data / spec['image']} not found; skipped")
            continue
        ours, seconds = predict(args.data, args.out, name, spec)
        theirs = imfit(args.data, spec)
        refs = {**spec["published"], "pyimfit (same PSF, mask)": theirs}
        results[name] = {"fitnet": ours, "fitnet_seconds": seconds, "pyimfit": theirs,
                         "offsets": {ref: offsets(ours, v) for ref, v in refs.items()}}  # fmt: skip
        print(name, json.dumps(results[name], indent=1))
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    (args.out / "results.md").write_text(markdown(results) + "\n")
    print(markdown(results))


if __name__ == "__main__":
    main()
