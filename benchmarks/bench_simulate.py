"""Speed, fidelity and memory of the simulator against plain GalSim, in one run.

    python benchmarks/bench_simulate.py                     # defaults below
    python benchmarks/bench_simulate.py --speed 300 --fidelity 200 --pipeline 5000

1. Speed, per core: galaxies drawn from the default prior, rendered by
   (a) the naive loop: one process, default GSParams, the continuous n of every galaxy,
       ``drawImage(nx=size, ny=size)``, CCD noise, pad/crop; and
   (b) the project's renderer in one process, in the n-sorted block order the pipeline uses.
   The naive loop runs on the first ``--speed`` galaxies; the project renderer on those alone
   (cold: one Sersic table built per distinct n for few galaxies) and on ``--speed-project``
   galaxies that include them, as in a real run. Prints the rates and ratios (target >= 15x).
2. Fidelity: on a fixed set of galaxies, the project's noiseless stamps against GalSim
   ``drawImage`` at tight accuracy for the same drawn parameters (grid n included): total
   stamp flux (target within 0.2%) and the largest pixel difference in units of the stamp's
   peak (target < 1%).
3. The whole pipeline (``run_simulation``) on ``--pipeline`` galaxies with all cores: rate and
   peak resident memory of the main process and of the largest worker (target < 2 GB).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import galsim
import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from simulate.noise import CCDModel, add_noise
from simulate.pipeline import render_block, resolve_workers
from simulate.priors import draw_parameters
from simulate.render import StampRenderer, flux_from_mag, make_psf, sersic_profile
from simulate.stamps import pad_or_crop

CONF = Path(__file__).resolve().parents[1] / "conf"
TIGHT = galsim.GSParams(
    folding_threshold=1e-3,
    maxk_threshold=1e-4,
    kvalue_accuracy=1e-6,
    xvalue_accuracy=1e-6,
    maximum_fft_size=32768,
)


def load_config(overrides=()):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("simulate", overrides=list(overrides))


def galsim_stamp(cfg, p: dict, gsparams=None) -> np.ndarray:
    """Noiseless stamp from plain GalSim drawImage on the size x size stamp, then pad/crop."""
    ins = cfg.instrument
    gal = sersic_profile(
        p["n"], p["re"], p["q"], p["pa"], float(flux_from_mag(p["mag"], ins.zero_point))
    )
    psf = make_psf(ins)
    if gsparams is not None:
        gal, psf = gal.withGSParams(gsparams), psf.withGSParams(gsparams)
    size = int(p["size"])
    image = galsim.Convolve(gal, psf).drawImage(
        nx=size, ny=size, scale=ins.pixel_scale, offset=(p["dx"], p["dy"])
    )
    return pad_or_crop(image.array, cfg.render.stamp_size)


def row(params: dict, k: int) -> dict:
    return {name: values[k] for name, values in params.items()}


def naive_loop(cfg, params: dict) -> float:
    """Seconds for the naive loop over every galaxy (continuous n, default GSParams)."""
    start = time.perf_counter()
    for k in range(len(params["index"])):
        p = row(params, k)
        stamp = galsim_stamp(cfg, p)
        add_noise(stamp, cfg.instrument, p["noise_seed"])
    return time.perf_counter() - start


def project_loop(cfg, params: dict) -> float:
    """Seconds for the project's renderer over the same galaxies, in pipeline order."""
    renderer = StampRenderer(cfg.instrument, cfg.render)
    order = np.argsort(params["n"], kind="stable")
    start = time.perf_counter()
    for lo in range(0, len(order), cfg.render.block_size):
        pos = order[lo : lo + cfg.render.block_size]
        render_block(renderer, CCDModel(cfg.instrument), {k: v[pos] for k, v in params.items()})
    return time.perf_counter() - start


def _reference(args):
    cfg_dict, p = args
    return galsim_stamp(OmegaConf.create(cfg_dict), p, TIGHT)


def fidelity(cfg, params: dict, workers: int) -> dict:
    renderer = StampRenderer(cfg.instrument, cfg.render)
    rows = [row(params, k) for k in range(len(params["index"]))]
    ours = [
        renderer.render(**{k: p[k] for k in ("n", "re", "q", "pa", "mag", "dx", "dy", "size")})
        for p in rows
    ]
    cfg_dict = OmegaConf.to_container(cfg, resolve=True)
    with mp.get_context().Pool(workers) as pool:
        refs = pool.map(_reference, [(cfg_dict, p) for p in rows], chunksize=1)
    dflux = np.array([o.sum() / r.sum() - 1 for o, r in zip(ours, refs, strict=True)])
    dpeak = np.array([np.abs(o - r).max() / r.max() for o, r in zip(ours, refs, strict=True)])
    worst = int(np.argmax(np.abs(dflux)))
    return {"dflux": dflux, "dpeak": dpeak, "worst": rows[worst]}


def tree_rss_mb(pid: int) -> float:
    """Resident memory (MB) of process ``pid`` and all its descendants, from /proc (Linux)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, ValueError, IndexError):
            continue
    tree, frontier = {pid}, [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, parent in parents.items() if parent == p and c not in tree]
        tree.update(kids)
        frontier.extend(kids)
    total = 0
    for p in tree:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024.0


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--speed", type=int, default=300, help="galaxies timed with the naive loop")
    parser.add_argument(
        "--speed-project",
        type=int,
        default=10000,
        help="galaxies timed with the project renderer (the first --speed are shared)",
    )
    parser.add_argument("--fidelity", type=int, default=200, help="galaxies in the fidelity check")
    parser.add_argument(
        "--pipeline", type=int, default=5000, help="galaxies in the full pipeline run (0 = skip)"
    )
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument(
        "--workers", type=int, default=0, help="processes for the reference and pipeline"
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/simulate.yaml")
    args = parser.parse_args()
    cfg = load_config(args.overrides)
    workers = resolve_workers(args.workers)

    # 1. speed per core (one GalSim thread each, as in the pipeline's workers)
    galsim.set_omp_threads(1)
    idx = np.arange(max(args.speed, args.speed_project))
    continuous = draw_parameters(args.seed, idx[: args.speed], cfg.prior, 0)
    gridded = draw_parameters(args.seed, idx, cfg.prior, cfg.render.n_grid_points)
    first = {k: v[: args.speed] for k, v in gridded.items()}
    t_naive = naive_loop(cfg, continuous)
    t_cold = project_loop(cfg, first)
    t_ours = project_loop(cfg, gridded)
    rate_naive, rate_cold, rate_ours = args.speed / t_naive, args.speed / t_cold, len(idx) / t_ours
    print(
        f"speed per core (one process, one GalSim thread); galaxies 0..{args.speed - 1} are in both runs:"
    )
    print(
        f"  naive GalSim loop, {args.speed} galaxies            : {rate_naive:7.1f} galaxies/s ({1e3 / rate_naive:.1f} ms each)"
    )
    print(
        f"  project renderer, same {args.speed} (cold tables)   : {rate_cold:7.1f} galaxies/s ({1e3 / rate_cold:.1f} ms each)"
    )
    print(
        f"  project renderer, {len(idx)} incl. those (a run) : {rate_ours:7.1f} galaxies/s ({1e3 / rate_ours:.1f} ms each)"
    )
    print(
        f"  speed-up per core: {rate_ours / rate_naive:.1f}x in a run (target >= 15x); "
        f"{rate_cold / rate_naive:.1f}x on {args.speed} galaxies alone, where one Sersic table per n "
        "is built for few galaxies"
    )

    # 2. fidelity against tight GalSim, same (gridded) parameters
    fid_params = draw_parameters(
        args.seed + 1, np.arange(args.fidelity), cfg.prior, cfg.render.n_grid_points
    )
    t0 = time.perf_counter()
    fid = fidelity(cfg, fid_params, workers)
    adf = np.abs(fid["dflux"])
    print(
        f"fidelity on {args.fidelity} galaxies vs GalSim drawImage with {TIGHT!r} ({time.perf_counter() - t0:.0f} s):"
    )
    print(
        f"  |stamp flux error| : median {np.median(adf):.2e}  99% {np.quantile(adf, 0.99):.2e}  max {adf.max():.2e}  (target < 2e-3)"
    )
    print(
        f"  max|diff| / peak   : median {np.median(fid['dpeak']):.2e}  99% {np.quantile(fid['dpeak'], 0.99):.2e}  max {fid['dpeak'].max():.2e}  (target < 1e-2)"
    )
    w = fid["worst"]
    print(
        "  worst flux case   : "
        + " ".join(f"{k}={float(w[k]):.3g}" for k in ("mag", "n", "re", "q", "size"))
    )
    ok = adf.max() < 2e-3 and fid["dpeak"].max() < 1e-2
    print(f"  fidelity targets  : {'met' if ok else 'NOT met'}")

    # 3. the whole pipeline, as a user runs it, in a subprocess whose process tree is sampled;
    # then without the test split's bounds, to give their share
    for title, extra in (("", []), (" without bounds (bounds.splits=[])", ["bounds.splits=[]"])):
        if not args.pipeline:
            break
        seconds, peak = pipeline(args, workers, extra)
        rate = args.pipeline / seconds
        print(f"pipeline, python -m simulate n={args.pipeline} on {workers} processes{title}:")
        print(f"  {seconds:.1f} s wall including start-up and assembly: {rate:.1f} galaxies/s")
        print(f"  end to end per core against the naive loop: {rate / workers / rate_naive:.1f}x "
              "(target >= 15x)")  # fmt: skip
        print(f"  -> n=50000 would take about {50000 / rate / 60:.1f} min")
        print(f"  peak resident memory of the whole process tree: {peak:.0f} MB (target < 2048 MB)")


def pipeline(args, workers: int, extra: list[str]) -> tuple[float, float]:
    """Wall seconds and peak resident memory (MB, the whole process tree) of one
    ``python -m simulate n=<--pipeline>`` run with ``extra`` overrides."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "simulate", *args.overrides, *extra,
                   f"n={args.pipeline}", f"workers={workers}", "montage=0",
                   f"out_dir={tmp}/data", f"hydra.run.dir={tmp}/run"]  # fmt: skip
        t0 = time.perf_counter()
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        peak = 0.0
        while proc.poll() is None:
            peak = max(peak, tree_rss_mb(proc.pid))
            time.sleep(0.2)
        seconds = time.perf_counter() - t0
        if proc.returncode:
            raise SystemExit(f"pipeline run failed: {' '.join(command)}")
    return seconds, peak


if __name__ == "__main__":
    main()
