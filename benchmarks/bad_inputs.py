"""How honest the catalogue is: the checks of conf/quality on sets of bad inputs, in one run.

    python -m simulate n=1500 seed=424242 out_dir=data/quality noiseless=true bounds.splits=[] \\
        montage=0 splits.train=0.1 splits.val=0.1 splits.test=0.8
    python benchmarks/bad_inputs.py --data data/quality/test.h5 [--ckpt best.pt] [--count 400]
    # and the simulator's own companions, scored by their number:
    python -m simulate n=500 companions.mean_count=1 bounds.splits=[] splits.train=0.1 \\
        splits.val=0.1 splits.test=0.8 out_dir=data/companions montage=0
    python benchmarks/bad_inputs.py --data data/quality/test.h5 --companions data/companions/test.h5

From the noiseless test stamps of a simulated file (new noise drawn here, with the file's own
noise model) it makes one set per kind: clean galaxies; zeros; pure noise; the sky left in; e-
instead of e-/s; a shallower image (twice the noise); galaxies 6-14 and 15-20 px off-centre in
a stamp-sized cutout; a brighter companion 12-25 px away; 5% and 30% invalid (NaN) pixels; bulge+disk galaxies
(B/T 0.3-0.7, 18-22 mag); a 1000 x 1000 field holding three galaxies. Each set goes through ``fitnet.load().predict`` (the
checks on). Per kind it prints the fraction flagged, by bit, and for the unflagged rows the
fraction measured right (|dmag| < 0.1 and |dre/re| < 0.15, against the target galaxy's truth)
and the scatter of the errors; "flagged or right" is the honest-catalogue figure. Then the
speed of prediction with the checks on and off, side by side on the clean set.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import h5py
import numpy as np
import torch

import fitnet
from fitnet.flags import BITS, names
from fitnet.labels import spec_error
from fitnet.noise import NOISE_ATTRS, CCDNoise
from sersic_runtime.configs import CONFIG_MODULE
from simulate.stamps import placement

RIGHT_MAG = 0.1  # mag, |dmag| below which a row counts as measured right
RIGHT_RE = 0.15  # |dre / re| below which a row counts as measured right


def read(path, count):
    with h5py.File(path) as f:
        if "noiseless" not in f:
            raise SystemExit(f"{path} has no /noiseless: simulate it with noiseless=true")
        keys = (*NOISE_ATTRS, "background_rms_e_per_s", "pixel_scale_arcsec")
        attrs = {k: float(f.attrs[k]) for k in keys}
        truth = {k: f["params"][k][:count] for k in ("mag", "re", "n", "q", "size")}
        return f["noiseless"][:count].astype(np.float64), truth, attrs


def native(image, size):
    """The stored stamp ``image`` cut back to the ``size`` it was rendered on (when smaller):
    a cutout as a survey gives it, whose padding the checks then know."""
    if size >= min(image.shape):
        return image
    (_, rows), (_, cols) = placement(size, image.shape[0]), placement(size, image.shape[1])
    return image[rows, cols]


def noisy(noiseless, attrs, rng, depth=1.0):
    """New CCD noise on a noiseless stamp, the simulator's model (``fitnet.noise.CCDNoise``, from
    the file's noise attributes), e-/s per pixel; ``depth`` > 1 multiplies the noise rms (a
    shallower image)."""
    generator = torch.Generator().manual_seed(int(rng.integers(2**63)))
    noise = CCDNoise.from_attrs(attrs)
    image = noise(torch.from_numpy(np.asarray(noiseless, dtype=np.float64)), generator).numpy()
    if depth != 1.0:
        rms = attrs["background_rms_e_per_s"]
        image = image + np.sqrt(depth**2 - 1) * rms * rng.standard_normal(image.shape)
    return image.astype(np.float32)


def shifted(stamp, dy, dx):
    """``stamp`` moved by (dy, dx) pixels; the pixels it uncovers are zero (before noise)."""
    out = np.zeros_like(stamp)
    h, w = stamp.shape
    ys, yd = slice(max(0, -dy), min(h, h - dy)), slice(max(0, dy), min(h, h + dy))
    xs, xd = slice(max(0, -dx), min(w, w - dx)), slice(max(0, dx), min(w, w + dx))
    out[yd, xd] = stamp[ys, xs]
    return out


def stored(images, sizes, attrs) -> str:
    """A temporary HDF5 file of 128-pixel stamps as the simulator stores them (/images, and
    /params/size, so that the reader knows each stamp's noise padding); its path."""
    path = os.path.join(tempfile.mkdtemp(prefix="bad_inputs_"), "clean.h5")
    with h5py.File(path, "w") as f:
        f["images"] = np.stack(images).astype(np.float32)
        f["params/size"] = np.asarray(sizes)
        f.attrs["pixel_scale_arcsec"] = attrs["pixel_scale_arcsec"]
    return path


def offsets(rng, count, lo, hi):
    r = rng.uniform(lo, hi, count)
    a = rng.uniform(0, 2 * np.pi, count)
    return np.rint(r * np.sin(a)).astype(int), np.rint(r * np.cos(a)).astype(int)


def make_sets(noiseless, truth, attrs, rng):
    """kind -> (images, index of each image's target galaxy or -1)."""
    n = len(noiseless)
    idx = np.arange(n)
    sizes = truth["size"]
    clean = [noisy(s, attrs, rng) for s in noiseless]
    sets = {"clean": (stored(clean, sizes, attrs), idx)}
    cutouts = [native(image, z) for image, z in zip(clean, sizes, strict=True)]
    sets["cutouts as rendered (64-256 px)"] = (cutouts, idx)
    blank = np.zeros_like(noiseless[0])
    sets["zeros"] = ([blank.astype(np.float32) for _ in range(n)], -np.ones(n, int))
    sets["pure noise"] = ([noisy(blank, attrs, rng) for _ in range(n)], -np.ones(n, int))
    sky = attrs["sky_level_e_per_s_per_pixel"]
    sets["sky left in"] = ([noisy(s, attrs, rng) + sky for s in noiseless], idx)
    t = attrs["exposure_time_s"]
    sets["e- not e-/s"] = ([noisy(s, attrs, rng) * t for s in noiseless], idx)
    sets["2x the noise"] = ([noisy(s, attrs, rng, depth=2.0) for s in noiseless], idx)
    for lo, hi in ((6, 14), (15, 20)):
        dy, dx = offsets(rng, n, lo, hi)
        images = [
            noisy(shifted(s, a, b), attrs, rng) for s, a, b in zip(noiseless, dy, dx, strict=True)
        ]
        sets[f"{lo}-{hi} px off-centre"] = (images, idx)
    dy, dx = offsets(rng, n, 12, 25)
    partner = rng.permutation(n)
    images = []
    for k, s in enumerate(noiseless):
        other = noiseless[partner[k]]
        scale = max(1.0, 1.5 * s.sum() / max(other.sum(), 1e-9))  # brighter than the target
        images.append(noisy(s + scale * shifted(other, dy[k], dx[k]), attrs, rng))
    sets["brighter companion 12-25 px"] = (images, idx)
    for frac in (0.05, 0.3):
        images = []
        for s in noiseless:
            image = noisy(s, attrs, rng)
            image[rng.random(image.shape) < frac] = np.nan
            images.append(image)
        sets[f"{int(100 * frac)}% NaN pixels"] = (images, idx)
    sets["bulge+disk, B/T 0.3-0.7"] = (bulge_disk(rng, n, attrs), -np.ones(n, int))
    field = np.zeros((1000, 1000))
    for k, (y, x) in enumerate(((200, 300), (700, 650), (450, 820))):
        field[y - 64 : y + 64, x - 64 : x + 64] += noiseless[k]
    sets["1000x1000 field"] = ([noisy(field, attrs, rng)], -np.ones(1, int))
    return sets


def bulge_disk(rng, count, attrs):
    """Noisy stamps of a de Vaucouleurs bulge (n = 4) plus an exponential disk (n = 1), B/T
    0.3-0.7, rendered by the project's renderer with the default instrument: not one Sersic."""
    from hydra import compose, initialize_config_module

    from simulate.render import StampRenderer

    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        cfg = compose("simulate")
    renderer = StampRenderer(cfg.instrument, cfg.render)
    images = []
    for _ in range(count):
        mag, bt = rng.uniform(18, 22), rng.uniform(0.3, 0.7)
        re_disk = np.exp(rng.uniform(np.log(0.3), np.log(1.5)))  # arcsec
        pa, size = rng.uniform(0, 180), renderer.stamp_size
        bulge = renderer.render(
            4.0, 0.3 * re_disk, rng.uniform(0.7, 1.0), pa, mag - 2.5 * np.log10(bt), 0, 0, size
        )
        disk = renderer.render(
            1.0, re_disk, rng.uniform(0.2, 0.9), pa, mag - 2.5 * np.log10(1 - bt), 0, 0, size
        )
        images.append(noisy(bulge + disk, attrs, rng))
    return images


def score(table, target, truth) -> dict:
    flag = np.asarray(table["flag"])
    out = {"N": len(table), "flagged": float(np.mean(flag != 0))}
    bits = {}
    for f in flag[flag != 0]:
        for name in names(int(f)):
            bits[name] = bits.get(name, 0) + 1
    out["bits"] = ", ".join(f"{k} {v / len(table):.0%}" for k, v in sorted(bits.items()))
    has = (target >= 0) & np.isfinite(np.asarray(table["mag"], dtype=float))
    if not has.any():
        return out
    t = target[has]
    dmag = np.asarray(table["mag"], float)[has] - truth["mag"][t]
    dre = spec_error("re", np.asarray(table["re"], float)[has], truth["re"][t])
    right = np.zeros(len(table), dtype=bool)
    right[np.flatnonzero(has)] = (np.abs(dmag) < RIGHT_MAG) & (np.abs(dre) < RIGHT_RE)
    clean = flag == 0
    out["unflagged right"] = float(right[clean].mean()) if clean.any() else float("nan")
    out["flagged or right"] = float(np.mean((flag != 0) | right))
    out["right, all rows"] = float(right.mean())
    ok = clean[has]
    if ok.any():
        out["scatter mag / re (unflagged)"] = (
            f"{0.5 * np.subtract(*np.percentile(dmag[ok], [84, 16])):.3f} / "
            f"{0.5 * np.subtract(*np.percentile(dre[ok], [84, 16])):.3f}"
        )
    return out


def fit_rules(clean, bulge_disk) -> None:
    """The residual's excess over the noise on clean and bulge+disk galaxies, and the share
    each bad_fit rule flags (the default: 5 sigma and a reduced chi-square above 1.1)."""
    excess = {}
    for name, table in (("clean", clean), ("bulge+disk", bulge_disk)):
        chi2, pixels = np.asarray(table["chi2"], float), np.asarray(table["chi2_pixels"], float)
        excess[name] = (chi2, (chi2 - 1) * np.sqrt(pixels / 2))
        p = np.nanpercentile(excess[name][1], [50, 90, 99, 100])
        print(f"\n{name}: residual excess over the noise, sigma, median / 90% / 99% / max: "
              + " / ".join(f"{v:.1f}" for v in p)
              + f"; reduced chi2 median {np.nanmedian(chi2):.2f}")  # fmt: skip
    print("\n| rule | clean flagged | bulge+disk flagged |\n| --- | --- | --- |")
    for sigma in (3, 5, 8):
        rates = [np.mean((z > sigma) & (c > 1.1)) for c, z in excess.values()]
        print(f"| excess > {sigma} sigma and chi2 > 1.1 | {rates[0]:.1%} | {rates[1]:.1%} |")


def companions(model, path) -> None:
    """The simulator's own companions: a file's rows scored by their number of companions."""
    with h5py.File(path) as f:
        truth = {k: f["params"][k][()] for k in ("mag", "re", "n_companions")}
    table = model.predict(path)
    target = np.arange(len(table))
    print(f"\n{path}: the simulator's companions\n")
    print("| companions in the stamp | N | flagged | flagged or right | unflagged right | bits |")
    print("| --- | --- | --- | --- | --- | --- |")
    count = truth["n_companions"]
    for label, rows in (("0", count == 0), ("1", count == 1), ("2 or more", count >= 2)):
        part = table[rows]
        row = score(part, target[: len(part)], {k: v[rows] for k, v in truth.items()})
        cells = [
            row.get(k, "") for k in ("N", "flagged", "flagged or right", "unflagged right", "bits")
        ]
        cells = [f"{c:.1%}" if isinstance(c, float) else str(c) for c in cells]
        print(f"| {label} | " + " | ".join(cells) + " |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="HDF5 file with /noiseless (see above)")
    parser.add_argument("--ckpt", default=None, help="checkpoint (default: the shipped model)")
    parser.add_argument("--count", type=int, default=400, help="galaxies per set")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise and the sets")
    parser.add_argument(
        "--companions",
        default=None,
        help="an HDF5 file simulated with companions.mean_count > 0: scored by companion count",
    )
    args = parser.parse_args()
    model = fitnet.load(args.ckpt, device="cpu")
    noiseless, truth, attrs = read(args.data, args.count)
    rng = np.random.default_rng(args.seed)
    sets = make_sets(noiseless, truth, attrs, rng)
    print(f"{model}; {len(noiseless)} galaxies of {args.data} per set\n")
    keys = [
        "N",
        "flagged",
        "unflagged right",
        "flagged or right",
        "right, all rows",
        "scatter mag / re (unflagged)",
        "bits",
    ]
    tables = {}
    print("| kind | " + " | ".join(keys) + " |")
    print("| --- " * (len(keys) + 1) + "|")
    for kind, (images, target) in sets.items():
        try:
            table = model.predict(images, pixel_scale=model.pixel_scale)
        except fitnet.runtime.UserError as err:  # refused as a whole: every image flagged
            print(f"| {kind} | {len(target)} | refused: {err} |" + " |" * (len(keys) - 2))
            continue
        tables[kind] = table
        row = score(table, target, truth)
        cells = [row.get(k, "") for k in keys]
        cells = [f"{c:.1%}" if isinstance(c, float) else str(c) for c in cells]
        print(f"| {kind} | " + " | ".join(cells) + " |")
    fit_rules(tables["clean"], tables["bulge+disk, B/T 0.3-0.7"])
    if args.companions:
        companions(model, args.companions)
    path, count = sets["clean"][0], len(sets["clean"][1])
    rates = {False: [], True: []}
    for _repeat in range(4):  # side by side, alternating; the first pass warms up
        for checks in (False, True):
            start = time.perf_counter()
            model.predict(path, checks=checks)
            rates[checks].append(count / (time.perf_counter() - start))
    best = {checks: max(r[1:]) for checks, r in rates.items()}  # the least disturbed run
    print(
        f"\nspeed on the clean set (best of 3): {best[False]:.0f} images/s with the checks off, "
        f"{best[True]:.0f} with them on ({best[True] / best[False]:.2f}x)"
    )
    print("flag bits: " + ", ".join(f"{k}={v}" for k, v in BITS.items()))


if __name__ == "__main__":
    main()
