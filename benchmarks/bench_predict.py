"""Prediction speed as a user gets it, against pyimfit on the same stamps, in one run.

    python benchmarks/bench_predict.py --out data/bench-predict --stamps 2000 --fits 20

Simulates ``--stamps`` galaxies of the default instrument (98% of them in the test split that
is measured; once, kept in ``--out``), then times whole commands, each as a user runs it (start-up included in the wall time; the in-loop
rate from the command's own log line):

- ``python -m fitnet.predict input=test.h5`` with its defaults (every check on, ``fit=auto``),
  with ``quality=none``, with ``fit=none``, with ``fit=all``, with ``threads=1`` and with
  ``backend=torch`` (the network in PyTorch rather than ONNX Runtime);
- the generalist's default command on the same stamps (``psf=`` the instrument's PSF image;
  every row fitted);
- the default command on a busy node: one CPU-bound process per core spinning beside it, with
  ``threads=auto`` (the default) and with all the cores forced (``threads=<cores>``);
- pyimfit (``fitnet.baseline``, true PSF, known noise, one core) on the first ``--fits`` stamps.

Each rate is also given per core, as a ratio to pyimfit's fits per second on one core. Writes
``results.json`` and ``results.md`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from astropy.table import Table

from sersic_runtime.cores import usable_cores

RATE = re.compile(r"in ([0-9.]+) s \(([0-9.]+) images/s\)")


def command(args: list[str], log: Path) -> dict:
    """Run ``python -m args``; its wall time and the in-loop seconds and rate it logged."""
    start = time.perf_counter()
    with open(log, "w") as fh:
        subprocess.run([sys.executable, "-m", *args], check=True, stdout=fh,
                       stderr=subprocess.STDOUT)  # fmt: skip
    wall = time.perf_counter() - start
    found = RATE.findall(log.read_text())
    seconds, rate = (float(v) for v in found[-1]) if found else (float("nan"),) * 2
    return {"wall_s": wall, "loop_s": seconds, "loop_rate": rate}


def simulate(out: Path, stamps: int) -> Path:
    data = out / "data"
    if not (data / "test.h5").exists():
        command(["simulate", f"n={stamps}", "splits.train=0.01", "splits.val=0.01", "splits.test=0.98",
                 "montage=0", f"out_dir={data}", "bounds.splits=[]"],
                out / "simulate.log")  # fmt: skip
    return data / "test.h5"


def psf_file(data: Path, out: Path) -> tuple[Path, float, float]:
    """The file's PSF as an effective PSF image at its sampling, its pixel scale and its gain
    (counts per e-/s: the exposure time)."""
    import h5py
    from astropy.io import fits

    from simulate.psf_record import from_record

    with h5py.File(data) as f:
        attrs = dict(f.attrs)
    scale = float(attrs["pixel_scale_arcsec"])
    image = from_record(attrs["psf"]).drawImage(nx=63, ny=63, scale=scale).array
    path = out / "psf.fits"
    fits.writeto(path, (image / image.sum()).astype(np.float32), overwrite=True)
    return path, scale, float(attrs["exposure_time_s"])


def busy(cores: int) -> list[subprocess.Popen]:
    """One CPU-bound process per core (another job on the node)."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores)]
    time.sleep(1.0)
    return spinners


def runs(out: Path, data: Path, cores: int) -> dict:
    """Every timed command (module docstring), by name."""
    psf, scale, gain = psf_file(data, out)
    base = ["fitnet.predict", f"input={data}", "progress=false", "resume=false"]
    cases = {
        "default (checks on, fit=auto)": [],
        "quality=none": ["quality=none"],
        "fit=none (checks on)": ["fit=none"],
        "fit=all": ["fit=all"],
        "threads=1": ["threads=1"],
        "backend=torch (the network in PyTorch)": ["backend=torch"],
        "generalist default": [
            "ckpt=generalist",
            f"psf={psf}",
            f"pixel_scale={scale}",
            f"gain={gain}",
        ],
    }
    results = {}
    for k, (name, extra) in enumerate(cases.items()):
        results[name] = command([*base, f"output={out / f'run{k}.ecsv'}", *extra],
                                out / f"run{k}.log")  # fmt: skip
        print(name, results[name], flush=True)
    for name, extra in (("busy node, threads=auto", []), (f"busy node, threads={cores}",
                                                          [f"threads={cores}"])):  # fmt: skip
        spinners = busy(cores)
        try:
            results[name] = command([*base, f"output={out / 'busy.ecsv'}", *extra],
                                    out / "busy.log")  # fmt: skip
        finally:
            for p in spinners:
                p.kill()
                p.wait()
        print(name, results[name], flush=True)
    return results


def pyimfit_seconds(out: Path, data: Path, fits: int) -> float:
    path = out / "imfit.ecsv"
    if not path.exists():
        command(["fitnet.baseline", f"data={data}", f"limit={fits}", f"output={path}"],
                out / "imfit.log")  # fmt: skip
    return float(np.mean(Table.read(path)["seconds"]))


def markdown(results: dict, imfit_s: float, cores: int, stamps: int) -> str:
    lines = [f"{stamps} stamps; pyimfit {imfit_s:.2f} s per fit on one core; {cores} cores.", "",
             "| command | wall (s) | in-loop (img/s) | per core vs pyimfit (in-loop) | per core vs pyimfit (wall) |",
             "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for name, r in results.items():
        threads = 1 if "threads=1" in name else cores
        loop = r["loop_rate"] / threads * imfit_s
        wall = stamps / r["wall_s"] / threads * imfit_s
        lines.append(f"| {name} | {r['wall_s']:.1f} | {r['loop_rate']:.0f} | {loop:,.0f}x | "
                     f"{wall:,.0f}x |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--stamps", type=int, default=2000)
    parser.add_argument("--fits", type=int, default=20, help="stamps fitted with pyimfit")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    cores = usable_cores()
    data = simulate(args.out, args.stamps)
    import h5py

    with h5py.File(data) as f:
        rows = len(f["images"])
    imfit_s = pyimfit_seconds(args.out, data, args.fits)
    results = runs(args.out, data, cores)
    summary = {"cores": cores, "stamps": rows, "pyimfit_s_per_fit": imfit_s, "runs": results}
    (args.out / "results.json").write_text(json.dumps(summary, indent=1))
    text = markdown(results, imfit_s, cores, rows)
    (args.out / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
