"""Prediction at scale on one machine: one job over many inputs against the same inputs split
across jobs of one core each (``shards=K shard=i``), then ``fitnet.merge``.

    python benchmarks/predict_many.py --out data/predict-many --inputs 8 --per-input 500

1. ``python -m simulate`` one set (``--inputs`` x ``--per-input`` training galaxies, no bounds), cut into
   ``--inputs`` HDF5 files of the data layout (``part<k>.h5``), as a survey's tiles would be.
2. ``python -m fitnet.predict input=part*.h5 output=one/`` as one job with every core.
3. The same with ``shards=K`` (K = ``--jobs``, default the number of cores): K jobs side by side,
   one thread each (``OMP_NUM_THREADS=1``), into ``sharded/``.
4. ``python -m fitnet.merge`` of each folder; the two merged catalogues must hold the same rows
   in the same order, and the rows whose values differ (beyond rel 1e-4) are counted.

Printed: wall time, galaxies/s and galaxies/s per core of both ways, and the merge's time.
Timings are of whole commands (start-up and model loading included), in one run side by side.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
from astropy.table import Table

from sersic_runtime.configs import compose_packaged


def command(args: list[str], log: Path, threads: int | None = None) -> subprocess.Popen:
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    fh = open(log, "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        [sys.executable, "-m", *args], stdout=fh, stderr=subprocess.STDOUT, env=env
    )


def wait(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        if proc.wait():
            raise SystemExit(f"{proc.args} failed ({proc.returncode}); see its log")


def split(source: Path, folder: Path, parts: int) -> list[Path]:
    """``parts`` files of equal size from ``source``: /images and every /params column, with
    the file's attributes (the instrument that prediction checks)."""
    paths = []
    with h5py.File(source) as f:
        n = len(f["images"]) // parts
        for k in range(parts):
            path = folder / f"part{k}.h5"
            rows = slice(k * n, (k + 1) * n)
            with h5py.File(path, "w") as out:
                out.attrs.update(f.attrs)
                out["images"] = f["images"][rows]
                for name in f["params"]:
                    out[f"params/{name}"] = f["params"][name][rows]
                    out["params"][name].attrs.update(f["params"][name].attrs)
            paths.append(path)
    return paths


def timed(jobs: list[tuple[list[str], Path, int | None]]) -> float:
    """Seconds from starting every (args, log, threads) job side by side to the last's end."""
    start = time.perf_counter()
    wait([command(*job) for job in jobs])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--inputs", type=int, default=8)
    parser.add_argument("--per-input", type=int, default=500)
    parser.add_argument("--jobs", type=int, default=os.cpu_count())
    parser.add_argument("--seed", type=int, default=2468)
    parser.add_argument("--ckpt", default=None, help="ckpt= (default: the shipped model)")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    total = args.inputs * args.per_input
    if not (data / "train.h5").exists():
        # the inputs are cut from the training split, the fraction splits.train of n
        train = float(compose_packaged("simulate").splits.train)
        wait([command(["simulate", f"n={math.ceil(total / train)}", f"seed={args.seed}", f"out_dir={data}",
                       "bounds.splits=[]", "montage=0"],
                      out / "simulate.log")])  # fmt: skip
    inputs = split(data / "train.h5", out, args.inputs)
    common = ["fitnet.predict", f"input=[{','.join(map(str, inputs))}]", "progress=false",
              *([f"ckpt={args.ckpt}"] if args.ckpt else [])]  # fmt: skip
    for name in ("one", "sharded"):
        for old in (out / name).glob("*"):
            old.unlink()
    one = timed([([*common, f"output={out / 'one'}/"], out / "predict-one.log", None)])
    sharded = timed([([*common, f"output={out / 'sharded'}/", f"shards={args.jobs}", f"shard={k}"],
                      out / f"predict-shard{k}.log", 1) for k in range(args.jobs)])  # fmt: skip
    merged = {}
    start = time.perf_counter()
    for name in ("one", "sharded"):
        wait([command(["fitnet.merge", f"input={out / name}", f"output={out / name}.fits"],
                      out / f"merge-{name}.log")])  # fmt: skip
        merged[name] = Table.read(out / f"{name}.fits")
    merge_s = (time.perf_counter() - start) / 2
    a, b = merged["one"], merged["sharded"]
    if not (len(a) == len(b) == total and list(a["input"]) == list(b["input"])):
        raise SystemExit("the one-job and sharded catalogues hold other rows")
    # the two ways run on other thread counts, so floating-point sums may differ in the last bits
    differ, worst = np.zeros(total, dtype=bool), 0.0
    for k in ("mag", "n", "re", "q"):
        x, y = np.asarray(a[k], float), np.asarray(b[k], float)
        differ |= ~np.isclose(x, y, rtol=1e-4, atol=1e-6, equal_nan=True)
        worst = max(worst, float(np.nanmax(np.abs(x - y) / np.asarray(a[f"{k}_err"], float))))
    cores = os.cpu_count()
    results = {
        "galaxies": total, "inputs": args.inputs, "cores": cores, "jobs": args.jobs,
        "one_job": {"seconds": one, "galaxies_per_s": total / one, "per_core": total / one / cores},
        "sharded": {"seconds": sharded, "galaxies_per_s": total / sharded,
                    "per_core": total / sharded / args.jobs},
        "merge_seconds": merge_s, "rows_differing": int(differ.sum()),
        "largest_difference_in_sigmas": worst, "flags_differing": int(np.sum(a["flag"] != b["flag"])),
    }  # fmt: skip
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
