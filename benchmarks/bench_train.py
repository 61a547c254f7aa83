"""Training throughput: the real data pipeline against a synthetic in-memory batch, in one run.

    python benchmarks/bench_train.py                         # data/sersic, default model, CPU (+ GPU)
    python benchmarks/bench_train.py --steps 50 model=resnet

For every device available (CPU always, CUDA when present) it times optimisation steps of the
configured model (default: DeepLeGATo, batch 64, bf16 autocast on CUDA, and on the CPU with
amp_cpu=true, when a float32 synthetic row is added as the baseline):
  - synthetic: one random batch already on the device, reused every step (no data cost);
  - memory:    the training split in memory (on the device), shuffled, with augmentation;
  - stream:    the training split streamed from HDF5 by DataLoader workers;
  - fresh:     when the split has /noiseless stamps (simulate noiseless=true), the memory path
               with new CCD noise drawn for every batch (train fresh_noise=true).
It prints the median images/s over alternating rounds and the share of the step time that the pipeline costs (target < 10% for the
path training uses: memory when the split fits).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from fitnet.compute import amp_enabled
from fitnet.data import (
    describe_split,
    fit_image_norm,
    make_batches,
    read_labels,
    split_path,
)
from fitnet.labels import LabelScaler, parse_targets
from fitnet.models import build_model
from fitnet.noise import CCDNoise
from fitnet.optimizers import make_optimizer
from fitnet.training import train_step

CONF = Path(__file__).resolve().parents[1] / "conf"


def load_config(overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def time_steps(model, optimizer, batch_iter, steps, cfg, device, augment, generator) -> float:
    """Images per second over ``steps`` optimisation steps (after 3 warm-up steps)."""
    images, t0 = 0, None
    for i, (x, y) in enumerate(batch_iter):
        if i == 3:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0, images = time.perf_counter(), 0
        train_step(model, optimizer, x, y, cfg, generator, augment)
        images += len(x)
        if i == steps + 2:
            break
    if device.type == "cuda":
        torch.cuda.synchronize()
    return images / (time.perf_counter() - t0)


def endless(batches, generator):
    while True:
        yield from batches.iterate(generator)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=30, help="timed steps per measurement")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds; medians are reported"
    )
    parser.add_argument(
        "--data-dir", default=None, help="folder with train.h5 (default: the config's data_dir)"
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of conf/train.yaml")
    args = parser.parse_args()
    cfg = load_config(args.overrides)
    data_dir = Path(args.data_dir or cfg.data_dir)
    tmp = None
    if not (data_dir / "train.h5").exists():
        from simulate.pipeline import run_simulation

        tmp = tempfile.TemporaryDirectory()
        data_dir = Path(tmp.name)
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            sim = compose("simulate", overrides=["n=2000", "montage=0", f"out_dir={data_dir}"])
        print(f"no training data found; simulating 2000 galaxies into {data_dir}")
        run_simulation(sim, progress=False)

    targets = parse_targets(
        OmegaConf.to_container(cfg.target) if OmegaConf.is_list(cfg.target) else cfg.target
    )
    path = split_path(data_dir, "train")
    attrs = describe_split(path, targets)
    scaler = LabelScaler.fit(targets, cfg.labels, read_labels(path, targets))
    norm = fit_image_norm(
        path, attrs["background_rms_e_per_s"], cfg.image_norm.softening, cfg.image_norm.stats_images
    )
    devices = [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available() else [])
    print(
        f"model {cfg.model.name}, batch {cfg.batch_size}, targets {targets}, "
        f"{attrs['n_images']} training stamps of {attrs['stamp_size']} px, torch {torch.__version__}, "
        f"{torch.get_num_threads()} CPU threads"
    )
    for device in devices:
        torch.manual_seed(0)
        generator = torch.Generator().manual_seed(0)
        model = build_model(
            OmegaConf.to_container(cfg.model), 1, len(targets), attrs["stamp_size"]
        ).to(device)
        if cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if cfg.compile:
            model = torch.compile(model)
        model.train()
        optimizer = make_optimizer(cfg.optim, model.parameters())
        name = device.type + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else "")
        x = torch.randn(cfg.batch_size, 1, attrs["stamp_size"], attrs["stamp_size"], device=device)
        y = torch.randn(cfg.batch_size, len(targets), device=device)
        # the same split held in memory (on the device) and streamed from HDF5 by workers
        paths = {
            "memory": (float("inf"), 0),
            "stream": (0, cfg.data.num_workers),
        }  # GB limit, workers
        sources = {"synthetic": None}
        for key, (max_gb, workers) in paths.items():
            data_cfg = OmegaConf.create({"max_memory_gb": max_gb, "num_workers": workers})
            sources[key] = make_batches(
                [path], attrs, norm, scaler, cfg.batch_size, device, data_cfg
            )
        with h5py.File(path, "r") as f:
            noiseless = "noiseless" in f
        if noiseless:
            data_cfg = OmegaConf.create({"max_memory_gb": float("inf"), "num_workers": 0})
            draws = torch.Generator(device=device).manual_seed(0)
            sources["fresh"] = make_batches(
                [path], attrs, norm, scaler, cfg.batch_size, device, data_cfg,
                CCDNoise.from_attrs(attrs), draws,
            )  # fmt: skip
        batch = (x, y)
        # with bf16 autocast on this device, float32 steps on the same batch are the baseline
        bf16 = amp_enabled(cfg, device)
        step_cfg = {key: cfg for key in sources}
        if bf16:
            sources["synthetic-fp32"] = None
            step_cfg["synthetic-fp32"] = OmegaConf.merge(cfg, {"amp": False})
        # Alternate the sources over several rounds so drifts of the machine hit all alike.
        rates = {key: [] for key in sources}
        for _ in range(args.rounds):
            for key, batches in sources.items():
                it = (
                    iter(lambda b=batch: b, None)
                    if batches is None
                    else endless(batches, generator)
                )
                augment = cfg.augment and batches is not None
                rates[key].append(
                    time_steps(
                        model, optimizer, it, args.steps, step_cfg[key], device, augment, generator
                    )
                )
        synthetic, in_memory, streamed = (
            float(np.median(rates[k])) for k in ("synthetic", "memory", "stream")
        )
        print(f"{name}:")
        print(f"  synthetic batch on device : {synthetic:9.1f} images/s")
        print(
            f"  in-memory split + augment : {in_memory:9.1f} images/s  "
            f"(pipeline share of step time {1 - in_memory / synthetic:+.1%}; target < 10%)"
        )
        print(
            f"  streamed from HDF5        : {streamed:9.1f} images/s  "
            f"(pipeline share {1 - streamed / synthetic:+.1%}; {cfg.data.num_workers} workers)"
        )
        if noiseless:
            fresh = float(np.median(rates["fresh"]))
            print(
                f"  in memory + fresh noise   : {fresh:9.1f} images/s  "
                f"(pipeline share {1 - fresh / synthetic:+.1%}; fresh noise costs "
                f"{in_memory / fresh - 1:+.1%} of the in-memory step)"
            )
        if bf16:
            fp32 = float(np.median(rates["synthetic-fp32"]))
            print(
                f"  synthetic batch, float32  : {fp32:9.1f} images/s  "
                f"(bf16 autocast is {synthetic / fp32:.2f}x faster)"
            )
        print(f"  -> one epoch of 40,000 stamps: {40000 / in_memory / 60:.1f} min in memory")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
