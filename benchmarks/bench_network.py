"""The network's forward pass, engine against engine, side by side in one run.

    python benchmarks/bench_network.py --batches 30

Times the shipped model's convolutional trunk (the DeepLeGATo network inside the refiner) on
batches of ``batch_size.cpu`` noise stamps, with the threads ``--threads`` (default: those
``threads=auto`` picks):

- PyTorch float32 in the default (contiguous) layout and in channels-last (what ``predict``
  uses with ``backend=torch``);
- ``torch.compile`` of it (its compile time printed apart);
- ONNX Runtime (``backend=onnx``; its export time printed apart);
- bf16 autocast, only where the CPU computes bf16 (``fitnet.backends.bf16_hardware``).

Each is given in images per second, with its largest difference from PyTorch float32 in the
network's (normalised) outputs. Writes nothing; the figures go to the docs by hand.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from fitnet import backends, checkpoint
from fitnet.runtime import checkpoint_paths, set_threads
from sersic_runtime.configs import load_group


def rate(forward, x: torch.Tensor, batches: int) -> float:
    """Images per second of ``forward(x)`` over ``batches`` calls, after one warm-up call."""
    forward(x)
    start = time.perf_counter()
    for _ in range(batches):
        forward(x)
    return batches * len(x) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=30, help="timed batches per engine")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--threads", default="auto", help="auto, or a number of CPU threads")
    args = parser.parse_args()
    threads = set_threads(args.threads if args.threads == "auto" else int(args.threads))
    batch = int(load_group("inference").batch_size.cpu)
    model, _, _, payload = checkpoint.load_model(checkpoint_paths(None)[0], torch.device("cpu"))
    side = payload["model"]["stamp_size"]  # pixel
    net = model.network.eval()
    x = torch.randn(batch, 1, side, side, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        reference = net(x)
    engines = {"torch float32, contiguous": (net, x)}
    last = copy.deepcopy(net).to(memory_format=torch.channels_last)
    engines["torch float32, channels-last"] = (
        last,
        x.contiguous(memory_format=torch.channels_last),
    )
    start = time.perf_counter()
    onnx = backends.OnnxTrunk(torch.nn.Sequential(net.features, net.head), x[:2], threads)
    print(f"ONNX export and session: {time.perf_counter() - start:.1f} s")
    engines["onnxruntime float32"] = (onnx, x)
    if args.compile:
        compiled = torch.compile(last)
        start = time.perf_counter()
        with torch.inference_mode():
            compiled(engines["torch float32, channels-last"][1])
        print(f"torch.compile: {time.perf_counter() - start:.1f} s to compile")
        engines["torch.compile, channels-last"] = (
            compiled,
            engines["torch float32, channels-last"][1],
        )
    print(f"{threads} thread(s), batches of {batch}, bf16 hardware: "
          f"{backends.bf16_hardware(torch.device('cpu'))}")  # fmt: skip
    for name, (module, inputs) in engines.items():
        with torch.inference_mode():
            diff = (module(inputs).float() - reference).abs().max().item()
            print(
                f"{name:32s} {rate(module, inputs, args.batches):7.1f} img/s  max diff {diff:.1e}"
            )
    if backends.bf16_hardware(torch.device("cpu")):
        xl = engines["torch float32, channels-last"][1]
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            diff = (last(xl).float() - reference).abs().max().item()
            print(
                f"{'torch bf16 autocast':32s} {rate(last, xl, args.batches):7.1f} img/s  max diff {diff:.1e}"
            )


if __name__ == "__main__":
    main()
