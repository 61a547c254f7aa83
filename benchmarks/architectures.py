"""The DeepLeGATo network, the ResNet and the DenseNet-BC at equal compute, in one run.

    python -m simulate n=20000 out_dir=data/arch
    python benchmarks/architectures.py --data data/arch --out data/arch-bench

Each network is trained with the first stage of the shipped recipe (``experiment=full_cpu``:
Gaussian NLL, AdamW, cosine decay) for the epochs ``EPOCHS`` gives it, chosen so that each run
costs about the same CPU time (their training rates differ: 39, 22 and 24 img/s on the 2 cores
of the development machine). The ResNet runs with ``model.stem_stride=2``: with its default
stride of 1 it trains at 5 img/s, and a tenth of an epoch is not a comparison. Then each is
evaluated on the test split, the network alone (``fit=none``) and as predict measures
(``fit=auto``), and its forward pass timed on batches of ``batch_size.cpu`` with PyTorch
(channels-last, float32).

A run whose ``best.pt`` or ``metrics.json`` exists is not redone. Writes ``summary.md`` in
``--out``: training seconds (the epochs' own, from the checkpoint), forward img/s, and per label the scatter over the Cramer-Rao bound
in each S/N bin and over the whole split.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

#: name -> (epochs, extra overrides): about equal training compute (module docstring)
EPOCHS = {"deeplegato": (2, []), "densenet": (1, []), "resnet": (1, ["model.stem_stride=2"])}


def train(name: str, data: Path, out: Path) -> None:
    """Train ``name`` into ``out/name`` (unless its ``best.pt`` is there)."""
    if (out / name / "best.pt").is_file():
        return
    epochs, extra = EPOCHS[name]
    subprocess.run([sys.executable, "-m", "fitnet.train", "experiment=full_cpu",
                    f"data_dir={data}", f"model={name}", f"epochs={epochs}", *extra,
                    f"output_dir={out / name}", "progress=false",
                    f"hydra.run.dir={out / name / 'hydra'}"], check=True)  # fmt: skip


def evaluate(name: str, data: Path, out: Path, fit: str) -> dict:
    """The metrics on the test split (``fitnet.evaluate``'s metrics.json) of the network alone
    (``fit=none``) or as predict measures (``fit=auto``)."""
    folder = out / f"eval-{name}" if fit == "auto" else out / f"eval-{name}-fit-{fit}"
    if not (folder / "metrics.json").is_file():
        subprocess.run([sys.executable, "-m", "fitnet.evaluate", f"ckpt={out / name / 'best.pt'}",
                        f"data={data / 'test.h5'}", f"fit={fit}", f"output_dir={folder}",
                        "progress=false", f"hydra.run.dir={folder / 'hydra'}"], check=True)  # fmt: skip
    return json.loads((folder / "metrics.json").read_text())


def forward_rate(ckpt: Path, batches: int = 30) -> tuple[float, int]:
    """Images per second of the network's forward pass (PyTorch, channels-last, float32), and
    its number of parameters."""
    from fitnet import checkpoint
    from sersic_runtime.configs import load_group

    model, _, _, payload = checkpoint.load_model(ckpt, torch.device("cpu"))
    side = payload["model"]["stamp_size"]  # pixel
    model = model.eval().to(memory_format=torch.channels_last)
    size = int(load_group("inference").batch_size.cpu)
    x = torch.randn(size, 1, side, side).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        model(x)
        start = time.perf_counter()
        for _ in range(batches):
            model(x)
    rate = batches * size / (time.perf_counter() - start)
    return rate, sum(p.numel() for p in model.parameters())


def summary(rows: dict) -> str:
    """Markdown tables of the comparison."""
    names = list(rows)
    lines = ["| network | epochs | parameters | training (s) | forward (img/s) |",
             "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for name, row in rows.items():
        lines.append(f"| {name} | {EPOCHS[name][0]} | {row['parameters']:,} | "
                     f"{row['seconds']:.0f} | {row['forward']:.0f} |")  # fmt: skip
    for label in ("mag", "n", "re", "q"):
        lines += ["", f"**{label}**: scatter / Cramer-Rao bound, the network alone (`fit=none`)",
                  "", "| S/N | N | " + " | ".join(names) + " |",
                  "| --- | --- | " + " | ".join("---" for _ in names) + " |"]  # fmt: skip
        first = rows[names[0]]["none"]["labels"][label]
        for k, b in enumerate(first["snr_bins"]):
            cells = [f"{rows[n]['none']['labels'][label]['snr_bins'][k]['scatter_over_crb']:.2f}"
                     for n in names]  # fmt: skip
            lines.append(f"| {b['lo']:g}-{b['hi']:g} | {b['count']} | " + " | ".join(cells) + " |")
        for mode, title in (("none", "all"), ("auto", "all, network then `fit=auto`")):
            cells = [f"{rows[n][mode]['labels'][label]['all']['scatter_over_crb']:.2f} "
                     f"(N {rows[n][mode]['labels'][label]['all']['count']})" for n in names]  # fmt: skip
            lines.append(f"| {title} | | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of train/val/test.h5")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = {}
    for name in EPOCHS:
        train(name, args.data, args.out)
        ckpt = args.out / name / "best.pt"
        history = torch.load(ckpt, weights_only=True)["history"]
        rate, parameters = forward_rate(ckpt)
        rows[name] = {"seconds": sum(epoch["seconds"] for epoch in history), "forward": rate,
                      "parameters": parameters, "none": evaluate(name, args.data, args.out, "none"),
                      "auto": evaluate(name, args.data, args.out, "auto")}  # fmt: skip
    text = summary(rows)
    (args.out / "summary.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
