"""Where the time of one ``python -m fitnet.predict`` command goes, stage by stage.

    python benchmarks/profile_predict.py --input data/bench-predict/data/test.h5 --stamps 400
    python benchmarks/profile_predict.py --input ... --stamps 400 ckpt=generalist psf=psf.fits ...

Runs the command under cProfile on the first ``--stamps`` images (``limit`` is not an option
of predict, so the HDF5 file is cut to a copy first) with any further overrides, then sums the
profile's cumulative time into the stages of the loop over images: the model's loading (and
export to ONNX Runtime), reading and cutting the
stamps, the checks of every image, the network, the fit stage (the regions, the bound at the
network's answer, the fits), the rows, writing. Prints the start-up (imports, configuration, the
model), and milliseconds per image and fractions of the loop per stage. cProfile slows Python-heavy parts more than the numerical
ones, so the fractions are a guide, not a measurement of the plain command's rate.
"""

from __future__ import annotations

import argparse
import pstats
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py

#: stage -> the functions (file:line-free names in the profile) whose cumulative time it is
STAGES = {
    "the model (loading; the ONNX export with backend=onnx)": ("prediction.py", "load_predictor"),
    "stamps (reading, cutting, padding)": ("stamps.py", "make_stamps"),
    "of which the checks of every image": ("quality.py", "__call__"),
    "network": ("measure.py", "network"),
    "fit stage": ("measure.py", "fit"),
    "of which the regions": ("fit.py", "make_region"),
    "of which the fits and bounds (FitStage.run)": ("fit.py", "run"),
    "rows (units, positions, masked light)": ("measure.py", "finish_row"),
    "writing": ("catalogue.py", "write_table"),
}


def cut(source: Path, count: int, folder: Path) -> Path:
    """The first ``count`` images of ``source`` (an HDF5 data file) with their params."""
    out = folder / "input.h5"
    with h5py.File(source) as f, h5py.File(out, "w") as g:
        for key, value in f.attrs.items():
            g.attrs[key] = value
        g["images"] = f["images"][:count]
        for name, data in f["params"].items():
            g[f"params/{name}"] = data[:count]
        if "config" in f:
            f.copy("config", g)
    return out


def cumulative(stats: pstats.Stats, filename: str, function: str) -> float:
    """Seconds of cumulative time of the functions named ``function`` in files ``filename``."""
    return sum(cum for (path, _, name), (_, _, _, cum, _) in stats.stats.items()
               if path.endswith(filename) and name == function)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True, help="HDF5 data file")
    parser.add_argument("--stamps", type=int, default=400)
    parser.add_argument("overrides", nargs="*", help="overrides of python -m fitnet.predict")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = cut(args.input, args.stamps, folder)
        profile = folder / "predict.prof"
        subprocess.run([sys.executable, "-m", "cProfile", "-o", str(profile), "-m",
                        "fitnet.predict", f"input={data}", f"output={folder / 'out.ecsv'}",
                        "progress=false", "resume=false", f"hydra.run.dir={folder / 'run'}",
                        *args.overrides], check=True)  # fmt: skip
        stats = pstats.Stats(str(profile))
    loop = cumulative(stats, "prediction.py", "predict_once")
    rows = {name: cumulative(stats, *where) for name, where in STAGES.items()}
    measured = sum(v for k, v in rows.items() if not k.startswith("of which"))
    rows["the rest of the loop"] = loop - measured
    print(f"{args.stamps} images under cProfile: {stats.total_tt:.1f} s, of which start-up "
          f"(imports, configuration, the model) {stats.total_tt - loop:.1f} s")  # fmt: skip
    print("| stage | ms per image | fraction of the loop |\n| --- | --- | --- |")
    for name, seconds in rows.items():
        print(f"| {name} | {1000 * seconds / args.stamps:.1f} | {seconds / loop:.0%} |")


if __name__ == "__main__":
    main()
