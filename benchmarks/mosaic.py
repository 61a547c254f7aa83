"""A simulated survey mosaic through ``python -m fitnet.predict catalog=...``, in one run.

    python -m simulate n=1500 seed=424242 out_dir=data/quality noiseless=true bounds.splits=[] \\
        montage=0 splits.train=0.1 splits.val=0.1 splits.test=0.8
    python benchmarks/mosaic.py --data data/quality/test.h5 --sources 10000 --out data/mosaic

The noiseless test galaxies of the simulated file (reused in turn) are placed on a grid of
``--cell`` pixels of one mosaic with a TAN WCS at the model's pixel scale; a fraction
``--pairs`` of them gets a companion (another galaxy, 0.5-2 mag fainter to 1 mag brighter)
10-20 px away. The noise rms varies across the field from ``--depth`` times the model's to
the model's (a deeper survey), and the weight map (inverse variance) says so. The catalogue
gives each target's RA/Dec. With ``--psf-per-row`` the generalist measures it instead
(``ckpt=generalist``, every row fitted) with a PSF per row: a FITS cube of one plane per
catalogue row (the file's PSF, its width varied by up to 5% from row to row). The prediction runs as a separate ``python -m fitnet.predict``
process (its peak memory is read from the operating system) and is scored against the truth:
isolated bright galaxies (mag < 22) against the same galaxies measured as isolated stamps at
the model's noise (the scatter ratio, target <= 1.2), the close pairs on their own, and the
throughput in sources per second.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

import fitnet
from fitnet.labels import spec_error

RIGHT_MAG, RIGHT_RE = 0.1, 0.15  # |dmag| and |dre/re| of a row measured right (bad_inputs.py)


def read(path):
    with h5py.File(path) as f:
        truth = {k: f["params"][k][()] for k in ("mag", "re", "n", "q", "x_center", "y_center")}
        return f["noiseless"][()].astype(np.float32), truth, float(f.attrs["background_rms_e_per_s"]), float(f.attrs["pixel_scale_arcsec"])  # fmt: skip


def tan_wcs(shape, scale_arcsec: float) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.crpix = [shape[1] / 2, shape[0] / 2]
    wcs.wcs.cdelt = [-scale_arcsec / 3600, scale_arcsec / 3600]
    return wcs


def make(args) -> dict:
    """Write the mosaic, its weight map and catalogue; return the targets' truth."""
    stamps, truth, rms, scale = read(args.data)
    side = int(np.ceil(np.sqrt(args.sources)))
    shape = (side * args.cell, side * args.cell)
    rng = np.random.default_rng(args.seed)
    image = np.zeros(shape, dtype=np.float32)
    s = stamps.shape[1]
    which = np.arange(args.sources) % len(stamps)
    paired = rng.random(args.sources) < args.pairs
    x, y = np.empty(args.sources), np.empty(args.sources)
    for k in range(args.sources):
        row, col = divmod(k, side)
        y0, x0 = row * args.cell + (args.cell - s) // 2, col * args.cell + (args.cell - s) // 2
        image[y0 : y0 + s, x0 : x0 + s] += stamps[which[k]]
        x[k], y[k] = x0 + truth["x_center"][which[k]], y0 + truth["y_center"][which[k]]
        if paired[k]:
            other = stamps[rng.integers(len(stamps))]
            flux = stamps[which[k]].sum() / max(other.sum(), 1e-9)
            factor = flux * 10 ** (-0.4 * rng.uniform(-1.0, 2.0))  # 1 mag brighter to 2 fainter
            r, a = rng.uniform(10, 20), rng.uniform(0, 2 * np.pi)
            dy, dx = int(round(r * np.sin(a))), int(round(r * np.cos(a)))
            if min(y0 + dy, x0 + dx) < 0 or max(y0 + dy, x0 + dx) + s > shape[0]:
                paired[k] = False  # it would leave the mosaic
                continue
            image[y0 + dy : y0 + dy + s, x0 + dx : x0 + dx + s] += factor * other
    # the noise rms: depth x the model's at the left edge, the model's at the right
    ramp = np.linspace(args.depth, 1.0, shape[1], dtype=np.float32) * rms
    image += rng.standard_normal(shape, dtype=np.float32) * ramp[None, :]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    header = tan_wcs(shape, scale).to_header()
    fits.PrimaryHDU(image, header).writeto(out / "mosaic.fits", overwrite=True)
    del image
    weight = np.broadcast_to((1 / ramp**2)[None, :], shape).astype(np.float32)
    fits.PrimaryHDU(weight, header).writeto(out / "ivar.fits", overwrite=True)
    del weight
    sky = tan_wcs(shape, scale).pixel_to_world(x, y)
    Table({"id": np.arange(args.sources), "ra": sky.ra.deg, "dec": sky.dec.deg}).write(
        out / "sources.fits", overwrite=True
    )
    return {k: v[which] for k, v in truth.items()} | {"paired": paired, "which": which}


def psf_cube(data, count: int, out: Path) -> Path:
    """A FITS cube of ``count`` effective PSF images (33 x 33) at the file's sampling: its PSF
    dilated by 1-1.05, a different width per row."""
    from simulate.psf_record import from_record

    with h5py.File(data) as f:
        psf, scale = from_record(f.attrs["psf"]), float(f.attrs["pixel_scale_arcsec"])
    widths = np.random.default_rng(1).uniform(1.0, 1.05, count)
    planes = np.stack([psf.dilate(w).drawImage(nx=33, ny=33, scale=scale).array for w in widths])
    path = out / "psf_cube.fits"
    fits.writeto(path, (planes / planes.sum((1, 2), keepdims=True)).astype(np.float32),
                 overwrite=True)  # fmt: skip
    return path


def zero_point(data) -> float:
    with h5py.File(data) as f:
        return float(f.attrs["zero_point_mag"])


def exposure(data) -> float:
    with h5py.File(data) as f:
        return float(f.attrs["exposure_time_s"])


def run_watched(command) -> tuple[float, float]:
    """Run ``command``; the peaks (MiB) of its anonymous and file-backed resident memory, read
    from /proc twice a second (Linux)."""
    child = subprocess.Popen(command)
    peaks = {"RssAnon:": 0.0, "RssFile:": 0.0}
    while child.poll() is None:
        try:
            for line in Path(f"/proc/{child.pid}/status").read_text().splitlines():
                key, *value = line.split()
                if key in peaks:
                    peaks[key] = max(peaks[key], float(value[0]) / 1024)
        except OSError:
            pass
        time.sleep(0.5)
    if child.returncode:
        raise SystemExit(f"fitnet.predict failed with status {child.returncode}")
    return peaks["RssAnon:"], peaks["RssFile:"]


def score(table, truth, rows) -> dict:
    flag = np.asarray(table["flag"])[rows]
    dmag = np.asarray(table["mag"], float)[rows] - truth["mag"][rows]
    dre = spec_error("re", np.asarray(table["re"], float)[rows], truth["re"][rows])
    right = (np.abs(dmag) < RIGHT_MAG) & (np.abs(dre) < RIGHT_RE)
    ok = flag == 0

    def half(v):  # half the 16-84% range; NaN for no rows
        return 0.5 * float(np.subtract(*np.percentile(v, [84, 16]))) if len(v) else float("nan")

    return {
        "N": int(rows.sum()),
        "flagged": float(np.mean(~ok)),
        "flagged or right": float(np.mean(~ok | right)),
        "scatter mag": half(dmag[ok]),
        "scatter re": half(dre[ok]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--data", required=True, help="HDF5 file with /noiseless")
    parser.add_argument("--sources", type=int, default=10000, help="targets in the mosaic")
    parser.add_argument("--cell", type=int, default=160, help="pixel, grid spacing")
    parser.add_argument("--pairs", type=float, default=0.1, help="fraction with a companion")
    parser.add_argument(
        "--depth", type=float, default=0.5, help="noise rms at the deep edge / the model's"
    )
    parser.add_argument("--out", default="data/mosaic", help="folder of the mosaic and catalogue")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--psf-per-row", action="store_true",
                        help="the generalist, with a PSF cube of one plane per row")  # fmt: skip
    args = parser.parse_args()
    t0 = time.perf_counter()
    truth = make(args)
    print(
        f"mosaic of {args.sources} targets written in {time.perf_counter() - t0:.0f} s to {args.out}"
    )
    out = Path(args.out)
    command = [sys.executable, "-m", "fitnet.predict", f"input={out / 'mosaic.fits'}",
               f"catalog={out / 'sources.fits'}", f"weight={out / 'ivar.fits'}",
               f"output={out / 'out.fits'}", "progress=false", f"hydra.run.dir={out / 'run'}"]  # fmt: skip
    if args.psf_per_row:
        command += ["ckpt=generalist", f"psf={psf_cube(args.data, args.sources, out)}",
                    f"zero_point={zero_point(args.data)}", f"gain={exposure(args.data)}"]  # fmt: skip
    t0 = time.perf_counter()
    anon, mapped = run_watched(command)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # MiB (Linux: KiB)
    size = (out / "mosaic.fits").stat().st_size / 2**20
    print(f"predict: {args.sources / seconds:.0f} sources/s ({seconds:.0f} s, start-up included); "
          f"peak resident memory {peak:.0f} MiB, of which at most {anon:.0f} MiB its own (anonymous) "
          f"and {mapped:.0f} MiB pages of the files read (reclaimable), for a {size:.0f} MiB "
          f"mosaic and its {size:.0f} MiB weight map")  # fmt: skip
    table = Table.read(out / "out.fits")
    # the same galaxies as isolated stamps at the model's noise, read as the simulator stores them
    model = fitnet.load(device="cpu")
    stamps = model.predict(args.data, checks=True)
    bright = truth["mag"] < 22
    isolated = bright & ~truth["paired"]
    first = np.unique(truth["which"][isolated], return_index=True)[1]
    rows = np.zeros(len(table), bool)
    rows[np.flatnonzero(isolated)[first]] = True  # each galaxy once
    own = {k: v[truth["which"][rows]] for k, v in truth.items() if k not in ("paired", "which")}
    reference = score(stamps[truth["which"][rows]], own, np.ones(rows.sum(), bool))
    results = {
        "isolated, mag < 22, in the mosaic": score(table, truth, rows),
        "the same galaxies as isolated stamps": reference,
        "close pairs, mag < 22": score(table, truth, bright & truth["paired"]),
        "close pairs, all": score(table, truth, truth["paired"]),
        "all targets": score(table, truth, np.ones(len(table), bool)),
    }
    keys = ["N", "flagged", "flagged or right", "scatter mag", "scatter re"]
    print("\n| set | " + " | ".join(keys) + " |\n" + "| --- " * (len(keys) + 1) + "|")
    for name, row in results.items():
        cells = [f"{row[k]:.1%}" if k in ("flagged", "flagged or right") else (f"{row[k]:.3f}" if isinstance(row[k], float) else str(row[k])) for k in keys]  # fmt: skip
        print(f"| {name} | " + " | ".join(cells) + " |")
    a, b = results["isolated, mag < 22, in the mosaic"], reference
    print(f"\nscatter ratio, mosaic / isolated stamps (mag < 22): mag {a['scatter mag'] / b['scatter mag']:.2f}, re {a['scatter re'] / b['scatter re']:.2f} (target <= 1.2)")  # fmt: skip


if __name__ == "__main__":
    main()
