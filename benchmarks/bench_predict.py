"""Prediction speed against the classical fitter, on the same stamps, in one run.

    python benchmarks/bench_predict.py --ckpt outputs/train/.../best.pt --data data/sersic/test.h5
    python benchmarks/bench_predict.py            # an untrained default model: speed only

1. ``fitnet`` prediction, the path ``python -m fitnet.predict`` takes (HDF5 reading, pad/crop,
   normalisation, forward pass, catalogue rows), on ``--predict`` stamps: galaxies/s on the CPU
   with all threads (without the checks, and with every check of conf/quality on, as
   ``fitnet.predict`` runs by default) and with one, and on the GPU when there is one.
2. pyimfit (``pip install -e '.[imfit]'``): one Sersic with the true PSF, moment-based start,
   known noise, one thread, on the first ``--fit`` of the same stamps: seconds per galaxy.
3. The ratio: galaxies/s of prediction times seconds of one pyimfit fit on one core
   (targets: 1,000x on the same CPU, 100,000x on one GPU).
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

from fitnet.inference import Predictor, predict_table
from fitnet.inputs import StampMaker, iter_stamps
from fitnet.models import build_model
from fitnet.quality import Checker
from simulate.priors import FIT_LABELS

CONF = Path(__file__).resolve().parents[1] / "conf"


def untrained_checkpoint(data: Path, folder: Path) -> Path:
    """A default-config checkpoint with random weights (speed does not depend on weights)."""
    from fitnet import checkpoint
    from fitnet.data import describe_split, fit_image_norm, read_labels
    from fitnet.labels import LabelScaler, parse_targets

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train")
    targets = parse_targets(cfg.target)
    attrs = describe_split(data, targets)
    model_cfg = OmegaConf.to_container(cfg.model)
    model = build_model(model_cfg, 1, len(targets), attrs["stamp_size"])
    payload = checkpoint.make_payload(
        model=model,
        model_cfg=model_cfg,
        stamp_size=attrs["stamp_size"],
        targets=targets,
        loss=cfg.loss,
        scaler=LabelScaler.fit(targets, cfg.labels, read_labels(data, targets)),
        norm=fit_image_norm(
            data,
            attrs["background_rms_e_per_s"],
            cfg.image_norm.softening,
            cfg.image_norm.stats_images,
        ),
        instrument=attrs,
        prior={},
        cfg=cfg,
        state={},
    )
    path = folder / "untrained.pt"
    checkpoint.save(path, payload)
    return path


def predict_rate(
    ckpt: Path, data: Path, count: int, device: torch.device, batch: int, amp=False, quality=None
) -> float:
    """Galaxies/s of prediction; with ``quality`` (conf/quality), every check of it on."""
    predictor = Predictor(ckpt, device, amp)
    checker = Checker(quality, predictor.stamp_size, predictor.noise_rms) if quality else None
    maker = StampMaker(predictor.stamp_size, predictor.noise_rms, checker=checker)

    def stamps():
        for k, stamp in enumerate(iter_stamps(data, maker, predictor.pixel_scale)):
            if k == count:
                return
            yield stamp

    predict_table(predictor, stamps(), batch, quality=quality)  # warm-up (allocations, kernels)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    table = predict_table(predictor, stamps(), batch, quality=quality)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(table) / (time.perf_counter() - t0)


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--ckpt", default=None, help="checkpoint (default: an untrained default model)"
    )
    parser.add_argument(
        "--data", default="data/sersic/test.h5", help="HDF5 file in the data layout"
    )
    parser.add_argument(
        "--predict", type=int, default=2000, help="stamps for the prediction timing"
    )
    parser.add_argument("--fit", type=int, default=20, help="stamps fitted with pyimfit")
    parser.add_argument(
        "--batch", type=int, default=None, help="images per batch (default: conf/predict.yaml)"
    )
    args = parser.parse_args()
    data = Path(args.data)
    with h5py.File(data) as f:
        available = len(f["images"])
    count = min(args.predict, available)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        predict_cfg = compose("predict", overrides=["ckpt=x", "input=x", "output=x"])
    batch, quality = predict_cfg.batch_size, predict_cfg.quality
    if args.batch:
        batch = OmegaConf.create({"cpu": args.batch, "cuda": args.batch})
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(args.ckpt) if args.ckpt else untrained_checkpoint(data, Path(tmp))
        threads = torch.get_num_threads()
        rates = {
            f"cpu, {threads} threads": predict_rate(
                ckpt, data, count, torch.device("cpu"), batch.cpu
            )
        }
        rates[f"cpu, {threads} threads, checks on"] = predict_rate(
            ckpt, data, count, torch.device("cpu"), batch.cpu, quality=quality
        )
        rates[f"cpu, {threads} threads, bf16"] = predict_rate(
            ckpt, data, count, torch.device("cpu"), batch.cpu, amp=True
        )
        torch.set_num_threads(1)
        rates["cpu, 1 thread"] = predict_rate(ckpt, data, count, torch.device("cpu"), batch.cpu)
        torch.set_num_threads(threads)
        if torch.cuda.is_available():
            rates[f"cuda ({torch.cuda.get_device_name()})"] = predict_rate(
                ckpt, data, count, torch.device("cuda"), batch.cuda
            )
        instrument = Predictor(ckpt, torch.device("cpu")).instrument
    print(
        f"fitnet predict on {count} stamps of {data} ({'untrained default model' if not args.ckpt else ckpt}):"
    )
    for name, rate in rates.items():
        print(f"  {name:32s}: {rate:9.1f} galaxies/s")

    if args.fit <= 0:
        return
    from fitnet.imfit import fit_sersic, psf_image
    from simulate.psf_record import build_psf

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        sim = compose("simulate")
    psf = psf_image(build_psf(sim.instrument.psf), instrument["pixel_scale_arcsec"])
    with h5py.File(data) as f:
        images = f["images"][: args.fit]
        true = {k: f["params"][k][: args.fit] for k in FIT_LABELS}
    fits = [fit_sersic(image, psf, instrument) for image in images]
    seconds = np.array([r["seconds"] for r in fits])
    ok = np.array([r["ok"] for r in fits])
    print(
        f"pyimfit, one Sersic, true PSF (no pixel), moment start, known noise, 1 thread, {len(fits)} stamps:"
    )
    print(
        f"  {seconds.mean():.2f} s per galaxy on average (median {np.median(seconds):.2f}, max {seconds.max():.2f}); "
        f"{ok.mean():.0%} converged"
    )
    for name in FIT_LABELS:
        fitted = np.array([r[name] for r in fits])
        err = (
            fitted - true[name]
            if name in ("mag", "q")
            else (
                np.log10(fitted / true[name]) if name == "n" else (fitted - true[name]) / true[name]
            )
        )
        print(
            f"  {name:3s} error: median {np.median(err):+.3f}, half 16-84 range {0.5 * np.subtract(*np.percentile(err, [84, 16])):.3f}"
        )
    print("speed-up of fitnet predict over one pyimfit fit on one core:")
    for name, rate in rates.items():
        print(f"  {name:32s}: {rate * seconds.mean():12.0f}x")
    print("  (targets: >= 1,000x on the same CPU, >= 100,000x on one GPU)")


if __name__ == "__main__":
    main()
