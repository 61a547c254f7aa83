"""Is the ensemble of k cross-validation folds better than one model? Both on one test split.

    python benchmarks/kfold_ensemble.py --out data/kfold-adamw --folds 3 --small --galaxies 8000 --epochs 12

1. ``python -m simulate`` a set (``--galaxies``; ``--small`` for 64 px stamps of smaller
   galaxies, four times cheaper to train).
2. ``python -m fitnet.train`` one model on the training split, validated on the validation split.
3. ``python -m fitnet.train cv.folds=K``: K models, each on K - 1 folds of the same training
   split, validated on its own fold (``cv_metrics.csv``, ``cv_loss_curves.png``).
4. ``python -m fitnet.evaluate`` on the test split: the one model, each fold's model, and the
   folds' ensemble (``ensemble=true``). Printed per label: scatter, outlier fraction and the
   fractions inside the 68% and 95% intervals.

Every model has the same options (``--epochs``, beta-NLL, AdamW as the shipped model); each
step is skipped when its output exists. Writes ``results.json`` and ``results.md`` in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

LABELS = ("mag", "n", "re", "q")
SMALL = ["render.stamp_size=64", "render.fft_size=128", "prior.re.max=0.6", "prior.size.max=90",
         "prior.size.min=40"]  # fmt: skip


def command(args: list[str], log: Path) -> None:
    with open(log, "w") as fh:
        subprocess.run([sys.executable, "-m", *args], check=True, stdout=fh,
                       stderr=subprocess.STDOUT)  # fmt: skip


def evaluate(out: Path, name: str, ckpts: list[Path], data: Path) -> dict:
    folder = out / f"eval-{name}"
    if not (folder / "metrics.json").exists():
        ckpt = str(ckpts[0]) if len(ckpts) == 1 else f"[{','.join(map(str, ckpts))}]"
        command(["fitnet.evaluate", f"ckpt={ckpt}", f"data={data}", f"output_dir={folder}",
                 f"ensemble={len(ckpts) > 1}", "progress=false", "gallery=0"],
                out / f"evaluate-{name}.log")  # fmt: skip
    labels = json.loads((folder / "metrics.json").read_text())["labels"]
    return {k: {m: labels[k]["all"][m] for m in ("scatter", "outlier_frac", "cover68", "cover95")}
            for k in LABELS}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--galaxies", type=int, default=6000)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=5150)
    parser.add_argument("--small", action="store_true", help="64 px stamps")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = out / "data"
    if not (data / "test.h5").exists():
        command(["simulate", f"n={args.galaxies}", f"seed={args.seed}", f"out_dir={data}",
                 "montage=0", *(SMALL if args.small else [])], out / "simulate.log")  # fmt: skip
    common = ["fitnet.train", f"data_dir={data}", f"epochs={args.epochs}", "loss=gaussian_nll",
              "nll_beta=0.5", "optim=adamw", "progress=false"]  # fmt: skip
    if not (out / "one" / "best.pt").exists():
        command([*common, f"output_dir={out / 'one'}"], out / "train-one.log")
    if not (out / "cv" / "cv_metrics.csv").exists():
        command([*common, f"cv.folds={args.folds}", f"output_dir={out / 'cv'}"],
                out / "train-cv.log")  # fmt: skip
    folds = [out / "cv" / f"fold{k}" / "best.pt" for k in range(args.folds)]
    results = {"one model": evaluate(out, "one", [out / "one" / "best.pt"], data / "test.h5")}
    for k, ckpt in enumerate(folds):
        results[f"fold {k}"] = evaluate(out, f"fold{k}", [ckpt], data / "test.h5")
    results[f"ensemble of {args.folds} folds"] = evaluate(out, "ensemble", folds, data / "test.h5")
    (out / "results.json").write_text(json.dumps(results, indent=1))
    lines = ["| model | " + " | ".join(f"{k}: scatter, outliers, in 68% / 95%" for k in LABELS)
             + " |", "| --- |" + " --- |" * len(LABELS)]  # fmt: skip
    for name, labels in results.items():
        cells = [f"{v['scatter']:.4f}, {100 * v['outlier_frac']:.1f}%, {100 * v['cover68']:.1f}% / "
                 f"{100 * v['cover95']:.1f}%" for v in labels.values()]  # fmt: skip
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
