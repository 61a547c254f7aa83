"""The GPU figures in one prepared run: training and prediction throughput, and a short DDP run.

    python benchmarks/gpu.py --out gpu-figures            # on a machine with a GPU
    python benchmarks/gpu.py --out cpu-figures --reduced  # anywhere: a small CPU-only form

Steps (each a command of the project or a script beside this one, its output kept in ``--out``):

1. ``python -m simulate`` a training set (``--galaxies``; 64 px stamps when reduced).
2. ``benchmarks/bench_train.py``: images/s of training steps on every device, synthetic batch
   against the in-memory (GPU-resident) and streamed pipelines, bf16 against float32, with
   channels-last (the training default).
3. ``benchmarks/bench_predict.py``: the default predict command's images/s, with every check
   and the fit, on this machine's device (skipped when reduced: the shipped model takes 128 px
   stamps), and ``benchmarks/bench_fit.py``: fits per second of the batched Sersic fit on the
   CPU and the GPU (goal: 5,000 a second on one GPU).
4. ``python -m fitnet.train`` for ``--epochs`` on the GPU (``device=auto``): seconds per epoch.
5. ``torchrun`` DDP: ``--ddp`` processes (NCCL, one per GPU, when there are that many GPUs;
   else gloo on the CPU) for one epoch, its seconds and loss beside one process.

Writes ``gpu.json`` (every figure) and ``gpu.md`` (the tables and the raw outputs).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
SMALL = ["render.stamp_size=64", "render.fft_size=128", "prior.re.max=0.6", "prior.size.max=90",
         "prior.size.min=40", "montage=0"]  # fmt: skip


def command(args: list[str], log: Path, timeout: float) -> tuple[str, float]:
    """Run ``python args...``; its output (also written to ``log``) and its seconds."""
    start = time.perf_counter()
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True,
                            timeout=timeout)  # fmt: skip
    seconds = time.perf_counter() - start
    log.write_text(result.stdout + result.stderr)
    if result.returncode:
        raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}); see {log}")
    return result.stdout + result.stderr, seconds


def epochs_of(folder: Path) -> list[dict]:
    with open(folder / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def rates(text: str) -> dict[str, float]:
    """'<label> : <number> images/s' (or galaxies/s, fits/s) lines of a benchmark's output."""
    found = {}
    for line in text.splitlines():
        m = re.match(r"\s*(.+?)\s*:\s*([\d.]+)\s*(images|galaxies|fits)/s", line)
        if m:
            found[m.group(1)] = float(m.group(2))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--reduced", action="store_true", help="small, CPU-only, minutes")
    parser.add_argument("--galaxies", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--ddp", type=int, default=2, help="DDP processes")
    parser.add_argument("--timeout", type=float, default=480, help="seconds per step")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available() and not args.reduced
    galaxies = args.galaxies or (400 if args.reduced else 20000)
    epochs = args.epochs or (1 if args.reduced else 3)
    figures = {"device": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
               "torch": torch.__version__, "reduced": args.reduced, "galaxies": galaxies}  # fmt: skip
    data = out / "data"
    _, figures["simulate_s"] = command(
        ["-m", "simulate", f"n={galaxies}", f"out_dir={data}", "bounds.splits=[]",
         *(SMALL if args.reduced else ["montage=0"])], out / "simulate.log", args.timeout)  # fmt: skip
    steps = ["--steps", "5", "--rounds", "1"] if args.reduced else ["--steps", "50"]
    text, _ = command([str(HERE / "bench_train.py"), "--data-dir", str(data), *steps],
                      out / "bench_train.log", args.timeout)  # fmt: skip
    figures["train_images_per_s"] = rates(text)
    if not args.reduced:
        command([str(HERE / "bench_predict.py"), "--out", str(out / "predict"), "--stamps",
                 "2000", "--fits", "5"], out / "bench_predict.log", args.timeout)  # fmt: skip
        runs = json.loads((out / "predict" / "results.json").read_text())["runs"]
        figures["predict_galaxies_per_s"] = {k: v["loop_rate"] for k, v in runs.items()}
    text, _ = command([str(HERE / "bench_fit.py"), "--galaxies", "200" if args.reduced else "20000"],
                      out / "bench_fit.log", args.timeout)  # fmt: skip
    figures["fits_per_s"] = rates(text)
    common = ["-m", "fitnet.train", f"data_dir={data}", "progress=false", "loss=gaussian_nll"]
    one = out / "train-1"
    _, seconds = command([*common, f"epochs={epochs}", f"output_dir={one}",
                          f"device={'cuda' if cuda else 'cpu'}"], out / "train.log", args.timeout)  # fmt: skip
    figures["train_seconds_per_epoch"] = [float(r["seconds"]) for r in epochs_of(one)]
    figures["train_loss_1_process"] = float(epochs_of(one)[0]["train_loss"])
    nccl = cuda and torch.cuda.device_count() >= args.ddp
    ddp = out / "train-ddp"
    _, seconds = command(["-m", "torch.distributed.run", "--standalone",
                          f"--nproc_per_node={args.ddp}", *common, "epochs=1",
                          f"output_dir={ddp}", f"device={'cuda' if nccl else 'cpu'}"],
                         out / "ddp.log", args.timeout)  # fmt: skip
    figures["ddp"] = {"processes": args.ddp, "backend": "nccl" if nccl else "gloo",
                      "seconds_per_epoch": float(epochs_of(ddp)[0]["seconds"]),
                      "train_loss": float(epochs_of(ddp)[0]["train_loss"]),
                      "wall_s": seconds}  # fmt: skip
    (out / "gpu.json").write_text(json.dumps(figures, indent=1))
    (out / "gpu.md").write_text(markdown(figures, out))
    print(markdown(figures, out))


def markdown(figures: dict, out: Path) -> str:
    lines = [f"# {figures['device']} (torch {figures['torch']}, reduced={figures['reduced']})",
             "", "| figure | value |", "| --- | --- |"]  # fmt: skip
    for group in ("train_images_per_s", "predict_galaxies_per_s", "fits_per_s"):
        for key, value in figures.get(group, {}).items():
            lines.append(f"| {group}: {key} | {value:,.1f} |")
    lines.append(f"| simulate {figures['galaxies']} galaxies | {figures['simulate_s']:.1f} s |")
    lines.append(
        f"| train, s per epoch | {', '.join(f'{s:.1f}' for s in figures['train_seconds_per_epoch'])} |"
    )
    d = figures["ddp"]
    lines.append(f"| DDP {d['processes']} x {d['backend']}: s per epoch, train loss (1 process: "
                 f"{figures['train_loss_1_process']:.4f}) | {d['seconds_per_epoch']:.1f}, {d['train_loss']:.4f} |")  # fmt: skip
    for log in ("bench_train.log", "bench_predict.log", "bench_fit.log"):
        if (out / log).exists():
            lines += ["", f"## {log}", "", "```", (out / log).read_text().strip(), "```"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
