"""Training a network on the HDF5 splits that ``python -m simulate`` writes (``python -m fitnet.train``).

The command, its options and what it writes: ``fitnet/train.py`` and conf/train.yaml.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from sersic_runtime.errors import UserError
from sersic_runtime.files import atomic_path
from sersic_runtime.options import positive

from . import checkpoint, crossval, distributed
from .caching import frozen_batches
from .checkpoint import split_output
from .compute import autocast, memory_layout
from .data import (
    Batches,
    DataError,
    ImageNorm,
    check_matching,
    describe_splits,
    dihedral,
    fit_image_norm,
    make_batches,
    read_labels,
    sample_images,
    split_paths,
    training_prior,
)
from .labels import LabelScaler, calibration_scale, parse_targets, validate_calibration
from .metrics import label_metrics
from .models import BoundedOutputs, FrozenRefinerHead, build_model, input_channels
from .noise import from_file as noise_from_file
from .optimizers import make_optimizer, make_scheduler
from .plots import plot_history
from .runtime import resolve_device

log = logging.getLogger(__name__)

LOSSES = ("l1", "mse", "gaussian_nll")
SYNC_EVERY = 50  # training steps between progress-bar updates (each waits for the device)
PROGRESS_UPDATES = 10  # least number of progress-bar loss updates per epoch


class TrainConfigError(UserError):
    """A training option has a value that is not allowed."""


def validate(cfg: DictConfig) -> list[str]:
    """Check the options that are not checked elsewhere; return the target list."""
    targets = parse_targets(
        OmegaConf.to_container(cfg.target) if OmegaConf.is_list(cfg.target) else cfg.target
    )
    if cfg.loss not in LOSSES:
        raise TrainConfigError(f"loss={cfg.loss!r} is not allowed: choose from {LOSSES}")
    for key in ("epochs", "batch_size"):
        if not cfg[key] >= 1:
            raise TrainConfigError(f"{key}={cfg[key]!r} is not allowed: must be >= 1")
    if not cfg.image_norm.softening > 0:
        raise TrainConfigError(f"image_norm.softening={cfg.image_norm.softening} must be > 0")
    if not 0 <= cfg.nll_beta <= 1:
        raise TrainConfigError(f"nll_beta={cfg.nll_beta} is not allowed: must be in [0, 1]")
    validate_calibration(cfg.calibration)
    if cfg.resume and cfg.init_from:
        raise TrainConfigError(
            "resume and init_from are both set: resume continues a killed run, init_from starts "
            "a new one from trained weights; give one"
        )
    if not cfg.cache_views >= 1:
        raise TrainConfigError(f"cache_views={cfg.cache_views} must be >= 1")
    if cfg.cache_seed is not None and not isinstance(cfg.cache_seed, int):
        raise TrainConfigError(f"cache_seed={cfg.cache_seed!r} must be an integer or null")
    if cfg.early_stopping_patience < 0:
        raise TrainConfigError(
            f"early_stopping_patience={cfg.early_stopping_patience} must be >= 0"
        )
    positive("max_minutes", cfg.max_minutes, allow_null=True)
    crossval.check(cfg.cv)
    resolve_device(cfg.device)
    return targets


def evaluate(model, batches, cfg):
    """Mean loss and model outputs over all batches in order: (loss, means, sigmas or None)."""
    loss = cfg.loss
    model.eval()
    means, sigmas, total, count = [], [], 0.0, 0
    with torch.no_grad(), autocast(batches.device, cfg):
        for x, y in batches.iterate(None):
            out = model(memory_layout(x, cfg)).float()
            total += loss_value(out, y, loss).item() * len(x)  # plain NLL: a proper score
            count += len(x)
            mu, log_sigma = split_output(out, loss)
            means.append(mu.cpu())
            if log_sigma is not None:
                sigmas.append(log_sigma.exp().cpu())
    sigma = torch.cat(sigmas).numpy() if sigmas else None
    return total / count, torch.cat(means).numpy(), sigma


def loss_value(
    out: torch.Tensor, y: torch.Tensor, loss: str, nll_beta: float = 0.0
) -> torch.Tensor:
    """Mean loss over a batch of standardised labels.

    ``nll_beta`` > 0 weights each Gaussian NLL term by sigma^(2 beta), held constant in the
    gradient (beta-NLL, Seitzer et al. 2022): plain NLL divides the gradient of a poorly fitted
    label by its large sigma and so learns it slowest; beta = 1 gives that label MSE's gradient.
    The optimum sigma for a given mean is unchanged.
    """
    mu, log_sigma = split_output(out.float(), loss)
    if loss == "l1":
        return (mu - y).abs().mean()
    if loss == "mse":
        return ((mu - y) ** 2).mean()
    nll = log_sigma + 0.5 * ((y - mu) * torch.exp(-log_sigma)) ** 2
    if nll_beta > 0:
        nll = nll * torch.exp(2 * nll_beta * log_sigma).detach()
    return nll.mean()


def write_csv(path: Path, history: list[dict]) -> None:
    if not history:
        return
    buf = io.StringIO()
    # Columns in order of first appearance: a resumed run may log more than its first epochs did.
    fields = list(dict.fromkeys(key for row in history for key in row))
    writer = csv.DictWriter(buf, fieldnames=fields, restval="")
    writer.writeheader()
    writer.writerows(history)
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


@dataclass
class Start:
    """Where a run starts: ``new`` (fitted label scaler and image norm, fresh weights),
    ``resume`` (a killed run's last.pt, everything restored), ``init`` (another run's weights,
    with their scaler, norm and architecture) or ``refine`` (``init`` whose network goes inside
    this run's refiner)."""

    kind: str
    scaler: LabelScaler
    norm: ImageNorm
    model_cfg: dict
    checkpoint: dict | None = None


def starting_point(cfg, targets, train_paths, train_attrs, stamp_size: int) -> Start:
    """The ``Start`` of this run, from ``resume``, ``init_from`` or the training split."""
    if not (cfg.resume or cfg.init_from):
        scaler = LabelScaler.fit(targets, cfg.labels, read_labels(train_paths, targets))
        norm = fit_image_norm(
            train_paths[0],
            train_attrs["background_rms_e_per_s"],
            cfg.image_norm.softening,
            cfg.image_norm.stats_images,
        )
        return Start("new", scaler, norm, OmegaConf.to_container(cfg.model, resolve=True))
    key = "resume" if cfg.resume else "init_from"
    source = checkpoint.load(cfg[key])
    # The weights only mean something with the label scaler, image norm and architecture
    # they were trained with, so those come from the checkpoint too.
    _check_compatible(source, key, targets, cfg, stamp_size)
    kind, model_cfg = ("resume" if cfg.resume else "init"), source["model"]["config"]
    if kind == "init" and wraps_network(cfg.model, model_cfg):
        kind = "refine"  # the checkpoint's network goes inside the refiner
        model_cfg = {**OmegaConf.to_container(cfg.model, resolve=True), "network": model_cfg}
    scaler = LabelScaler.from_state(source["label_scaler"])
    return Start(kind, scaler, ImageNorm.from_state(source["image_norm"]), model_cfg, source)


@dataclass
class Run:
    """Everything the epochs of one training run share."""

    cfg: DictConfig
    targets: list[str]
    device: torch.device
    output_dir: Path
    start: Start
    stamp_size: int  # pixel
    train_attrs: dict
    prior: dict  # label -> [min, max] of the training galaxies (from their file's /config)
    output_bounds: list | None  # a bounded head's standardised [low, high, below, above], or None
    model: torch.nn.Module
    step_model: torch.nn.Module  # the model the steps run (compiled, or the refiner's head)
    optimizer: torch.optim.Optimizer
    scheduler: object
    generator: torch.Generator  # shuffling and augmentation
    noise_generator: torch.Generator  # fresh noise
    train_batches: Batches
    val_batches: Batches
    val_true: dict
    val_z: np.ndarray  # the validation labels, standardised (for the sigma calibration)
    augment: bool
    world: distributed.World = distributed.World()
    history: list = field(default_factory=list)
    best: float = math.inf
    since_best: int = 0
    first_epoch: int = 1


def setup(cfg: DictConfig, output_dir: Path) -> Run:
    """Check the options and data, and build the model, optimiser and batches of a run."""
    targets = validate(cfg)
    world, device = distributed.init(resolve_device(cfg.device))
    distributed.check_batch_size(cfg.batch_size, world)
    output_dir = distributed.from_main(world, output_dir)  # rank 0's folder (a Hydra run's differ)
    if world.main:
        output_dir.mkdir(parents=True, exist_ok=True)
    # data_dir: a folder, or a list of folders whose splits are used one after the other
    paths = {split: split_paths(cfg.data_dir, split) for split in ("train", "val")}
    attrs = {split: describe_splits(paths[split], targets) for split in paths}
    distributed.same_everywhere(world, _data_identity(paths, attrs), "data files")
    check_matching(paths["train"][0], attrs["train"], paths["val"][0], attrs["val"])
    stamp_size = attrs["train"]["stamp_size"]
    start = starting_point(cfg, targets, paths["train"], attrs["train"], stamp_size)

    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    noise = fresh_noise(cfg, paths["train"][0], attrs["train"])
    noise_generator = torch.Generator(device=device).manual_seed(cfg.seed + world.rank)
    num_outputs = len(targets) * checkpoint.outputs_per_label(cfg.loss)
    chans = input_channels(start.model_cfg)  # 2: the stamp and its PSF (PSFConditioned)
    if chans == 2:
        attrs["train"]["psf_fwhm_range_px"] = psf_fwhm_range(paths["train"])
    model = build_model(start.model_cfg, chans, num_outputs, stamp_size).to(device)
    if hasattr(model, "prepare") and start.kind in ("new", "refine"):
        # data-derived state (PhotometricRefiner's feature statistics) that no checkpoint brings
        images = sample_images(paths["train"][0], start.norm, cfg.image_norm.stats_images)
        model.prepare(start.norm, images)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(cfg.optim, [p for p in model.parameters() if p.requires_grad])
    scheduler = make_scheduler(cfg.scheduler, optimizer)
    load_weights(model, start, cfg)
    step_model = torch.compile(model) if cfg.compile else model

    def batches_of(split: str, noise_generator, files=None, training=None) -> Batches:
        """Batches of ``split`` (or of its ``files`` only); for training (the training split,
        unless ``training`` says otherwise) with fresh noise from ``noise_generator``."""
        training = split == "train" if training is None else training
        fresh = noise if training else None  # validation keeps its stored noise
        files = paths[split] if files is None else files
        return make_batches(
            files,
            attrs[split] if files == paths[split] else describe_splits(files),
            start.norm,
            start.scaler,
            cfg.batch_size if training else cfg.data.eval_batch_size,
            device,
            cfg.data,
            fresh,
            noise_generator,
            psf=chans == 2,
        )

    augment, frozen = cfg.augment, cfg.cache_frozen and getattr(model, "freeze_network", False)
    fold = None
    if cfg.cv.folds:
        if frozen:
            raise TrainConfigError("cv.folds is not for a refiner on a cached frozen network: "
                                   "give cache_frozen=false")  # fmt: skip
        fold = crossval.fold_rows(cfg.cv.fold, cfg.cv.folds, attrs["train"]["n_images"])
    if frozen:
        train_batches, val_batches = frozen_batches(
            model, start.model_cfg, start.scaler, paths, batches_of, cfg, device
        )
        step_model, augment = FrozenRefinerHead(model), False
    elif fold is not None:  # validation on the held-out fold of the training split
        train_batches = batches_of("train", noise_generator).subset(fold.train)
        val_batches = batches_of("train", noise_generator, training=False).subset(fold.held)
    else:
        train_batches = batches_of("train", noise_generator)
        val_batches = batches_of("val", noise_generator)
    if fold is None:
        val_true = read_labels(paths["val"], targets)
    else:
        val_true = {k: v[fold.held] for k, v in read_labels(paths["train"], targets).items()}
    prior = training_prior(paths["train"][0], targets)
    train_batches.shard(world.rank, world.size)
    step_model = distributed.wrap(step_model, world, device)
    bounds = None
    if cfg.bounded_head:  # the means cannot leave the prior (models.BoundedOutputs)
        bounds = start.scaler.bounds(prior, positive("head_margin", cfg.head_margin))
        step_model = BoundedOutputs(step_model, *bounds).to(device)
    run = Run(
        cfg, targets, device, output_dir, start, stamp_size, attrs["train"], prior, bounds,
        model, step_model, optimizer, scheduler, generator, noise_generator, train_batches,
        val_batches, val_true, start.scaler.encode(val_true), augment, world,
    )  # fmt: skip
    if start.kind == "resume":
        restore(run, start.checkpoint)
    if not world.main:  # only rank 0 speaks
        log.setLevel(logging.WARNING)
    log.info(
        "training %s for %s on %s%s: %d train / %d val stamps of %d px, %d parameters, seed %d -> %s",
        type(model).__name__,
        targets,
        device,
        f" x {world.size} DDP processes" if world.distributed else "",
        attrs["train"]["n_images"],
        attrs["val"]["n_images"],
        stamp_size,
        sum(p.numel() for p in model.parameters()),
        cfg.seed,
        output_dir,
    )
    return run


def _data_identity(paths: dict, attrs: dict) -> dict:
    """What DDP ranks must agree on: each split's files (resolved) and their sizes."""
    return {split: ([str(p.resolve()) for p in paths[split]], attrs[split]["n_images"])
            for split in paths}  # fmt: skip


def fresh_noise(cfg, path: Path, attrs: dict):
    """With ``fresh_noise``, the noise model of the training files (their root attributes and
    /noise arrays, ``noise.from_file``)."""
    if not cfg.fresh_noise:
        return None
    try:
        return noise_from_file(path, attrs)
    except KeyError as err:
        raise DataError(f"{path}: fresh_noise=true, but {err.args[0]}") from err


def psf_fwhm_range(paths: list[Path]) -> list[float]:
    """[min, max] of the training stamps' PSF FWHM (pixel, /params/psf_fwhm), which a
    PSF-conditioned model records: prediction flags PSFs outside it (``psf_range``)."""
    try:
        fwhm = read_labels(paths, ["psf_fwhm"])["psf_fwhm"]
    except KeyError as err:
        raise DataError(
            f"{paths[0]} has no /params/psf_fwhm: a PSF-conditioned model needs a PSF per stamp "
            "(python -m simulate instrument=generalist psf_family=generalist)"
        ) from err
    # files written before simulate.psf.profile_fwhm may hold a NaN FWHM for a rare PSF
    return [float(np.nanmin(fwhm)), float(np.nanmax(fwhm))]


def load_weights(model, start: Start, cfg) -> None:
    """The weights a resumed, initialised or refining run starts from (a new run has its own)."""
    if start.kind in ("resume", "init"):
        model.load_state_dict(start.checkpoint["model"]["state_dict"])
    elif start.kind == "refine":
        model.network.load_state_dict(start.checkpoint["model"]["state_dict"])
    if start.kind == "refine":
        log.info("refining the network of %s with photometry", cfg.init_from)
    elif start.kind == "init":
        log.info("starting from the weights of %s", cfg.init_from)


def restore(run: Run, resumed: dict) -> None:
    """Continue a killed run exactly: optimiser, schedule, random states, history."""
    run.optimizer.load_state_dict(resumed["optimizer"])
    run.scheduler.load_state_dict(resumed["scheduler"])
    run.generator.set_state(resumed["rng"]["generator"])
    if resumed["rng"].get("noise") is not None:
        run.noise_generator.set_state(resumed["rng"]["noise"])
    torch.set_rng_state(resumed["rng"]["torch"])
    if run.device.type == "cuda" and resumed["rng"].get("cuda") is not None:
        torch.cuda.set_rng_state(resumed["rng"]["cuda"])
    run.first_epoch = resumed["epoch"] + 1
    run.history, run.best = resumed["history"], resumed["best_val"]
    run.since_best = resumed["since_best"]
    if run.world.rank:  # the checkpoint holds rank 0's noise stream; the others draw anew
        run.noise_generator.manual_seed(run.cfg.seed + run.world.rank + 7919 * run.first_epoch)
    log.info("resuming %s at epoch %d", run.cfg.resume, run.first_epoch)


def fit_epoch(run: Run, epoch: int) -> tuple[dict, dict]:
    """One epoch: the optimisation steps, validation, sigma calibration and the schedule's
    step. Returns the epoch's row of metrics.csv and the per-label validation metrics."""
    cfg, scaler, t0 = run.cfg, run.start.scaler, time.perf_counter()
    train_loss = _train_epoch(
        run.step_model, run.optimizer, run.train_batches, run.generator, cfg, epoch, run.augment,
        run.world,
    )  # fmt: skip
    val_loss, mean, sigma_z = evaluate(run.step_model, run.val_batches, cfg)
    pred, _ = scaler.decode(mean)
    if sigma_z is not None:
        scores = (run.val_z - mean) / sigma_z
        mag_pred = pred[:, run.targets.index("mag")] if "mag" in run.targets else None
        scaler.calibrate(scores, mag_pred, cfg.calibration.mag_edges, cfg.calibration.min_count)
    metrics = label_metrics({name: pred[:, j] for j, name in enumerate(run.targets)}, run.val_true)
    lr = run.optimizer.param_groups[0]["lr"]
    if isinstance(run.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        run.scheduler.step(val_loss)
    else:
        run.scheduler.step()
    row = {
        "epoch": epoch,
        "lr": lr,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "seconds": time.perf_counter() - t0,
    }
    for name, m in metrics.items():
        for key in ("bias", "scatter", "outlier_frac"):
            row[f"{name}_{key}"] = m[key]
    if sigma_z is not None:  # the overall factor; per-bin ones are in the checkpoint
        overall = calibration_scale(scores)
        row.update({f"{n}_sigma_scale": s for n, s in zip(run.targets, overall, strict=True)})
    return row, metrics


def log_epoch(run: Run, row: dict, metrics: dict) -> None:
    """Record an epoch: metrics.csv, last.pt (and best.pt when it improved), the log line."""
    run.history.append(row)
    improved = row["val_loss"] < run.best
    run.best, run.since_best = (row["val_loss"], 0) if improved else (run.best, run.since_best + 1)
    if not run.world.main:
        return
    write_csv(run.output_dir / "metrics.csv", run.history)
    state = payload(run, row["epoch"])
    checkpoint.save(run.output_dir / "last.pt", state)
    if improved:
        checkpoint.save(run.output_dir / "best.pt", state)
    log.info(
        "epoch %d/%d: train %.4f val %.4f (best %.4f) lr %.2e %.1fs | %s",
        row["epoch"],
        run.cfg.epochs,
        row["train_loss"],
        row["val_loss"],
        run.best,
        row["lr"],
        row["seconds"],
        " ".join(
            f"{n}: bias {m['bias']:+.3f} scatter {m['scatter']:.3f}" for n, m in metrics.items()
        ),
    )


def payload(run: Run, epoch: int) -> dict:
    """The checkpoint of ``run`` after ``epoch``: what predict needs, and what resume needs."""
    state = {
        "epoch": epoch,
        "history": run.history,
        "best_val": run.best,
        "since_best": run.since_best,
        "ddp_processes": run.world.size,
        "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict(),
        "rng": {
            "generator": run.generator.get_state(),
            "noise": run.noise_generator.get_state(),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state() if run.device.type == "cuda" else None,
        },
    }
    return checkpoint.make_payload(
        model=run.model,
        model_cfg=run.start.model_cfg,
        stamp_size=run.stamp_size,
        targets=run.targets,
        loss=run.cfg.loss,
        scaler=run.start.scaler,
        norm=run.start.norm,
        instrument=run.train_attrs,
        prior=run.prior,
        cfg=run.cfg,
        state=state,
        output_bounds=run.output_bounds,
    )


def train(cfg: DictConfig, output_dir: str | Path | None = None) -> float:
    """Train per ``cfg``; return the best validation loss (the sweep objective).

    ``output_dir``: where checkpoints and logs go; default ``cfg.output_dir``, else the Hydra
    run folder."""
    if output_dir is None:
        output_dir = cfg.output_dir or HydraConfig.get().runtime.output_dir
    try:
        if cfg.cv.folds:
            return crossval.run_folds(cfg, Path(output_dir), train_fold)
        return train_model(cfg, Path(output_dir)).best
    finally:
        distributed.close()  # the process group (of a torchrun) serves every fold


def train_fold(cfg: DictConfig, output_dir: Path) -> float:
    """Train fold ``cfg.cv.fold`` into ``output_dir`` and mark it finished."""
    state = train_model(cfg, output_dir)
    if state.world.main:
        crossval.finish_fold(output_dir, state.history)
    return state.best


def train_model(cfg: DictConfig, output_dir: Path) -> Run:
    """Train one model per ``cfg`` into ``output_dir``; return the finished run."""
    state, started = setup(cfg, output_dir), time.monotonic()
    for epoch in range(state.first_epoch, cfg.epochs + 1):
        log_epoch(state, *fit_epoch(state, epoch))
        if distributed.from_main(state.world, stop_reason(state, epoch, started)):
            break
    if state.world.main:
        plot_history(state.history, state.output_dir / "loss_curve.png", state.cfg.loss)
    log.info("best validation loss %.4f; checkpoints in %s", state.best, state.output_dir)
    return state


def stop_reason(run: Run, epoch: int, started: float) -> bool:
    """Whether training stops after ``epoch`` (early stopping, or ``max_minutes``); logged."""
    cfg = run.cfg
    if cfg.early_stopping_patience and run.since_best >= cfg.early_stopping_patience:
        log.info("early stopping: no improvement for %d epochs", run.since_best)
        return True
    if epoch < cfg.epochs and out_of_time(cfg.max_minutes, started, run.history[-1]):
        log.info("stopping after epoch %d: another would pass max_minutes=%s", epoch,
                 cfg.max_minutes)  # fmt: skip
        return True
    return False


def out_of_time(max_minutes: float | None, started: float, last_epoch: dict) -> bool:
    """Whether one more epoch as long as ``last_epoch`` (its metrics.csv row) would end past
    ``max_minutes`` of wall time since ``started`` (``time.monotonic``); None = no limit."""
    if max_minutes is None:
        return False
    return time.monotonic() - started + last_epoch["seconds"] > 60 * max_minutes


def wraps_network(run_model: DictConfig, ckpt_model: dict) -> bool:
    """Whether the run's model has a ``network`` slot and the checkpoint's model has none: then
    ``init_from`` puts the checkpoint's network (architecture and weights) in that slot."""
    return "network" in run_model and "network" not in ckpt_model


def _check_compatible(ckpt: dict, key: str, targets, cfg, stamp_size) -> None:
    """A checkpoint given as ``resume`` or ``init_from`` must match the run's targets and data."""
    if ckpt["targets"] != targets:
        raise TrainConfigError(
            f"{key}: checkpoint has targets {ckpt['targets']}, this run asks for {targets}"
        )
    if checkpoint.outputs_per_label(ckpt["loss"]) != checkpoint.outputs_per_label(cfg.loss) or (
        key == "resume" and ckpt["loss"] != cfg.loss
    ):
        raise TrainConfigError(
            f"{key}: checkpoint was trained with loss={ckpt['loss']}, not {cfg.loss}"
        )
    if ckpt["model"]["stamp_size"] != stamp_size:
        raise DataError(
            f"{key}: checkpoint expects {ckpt['model']['stamp_size']} px stamps, the data has {stamp_size}"
        )


def train_step(model, optimizer, x, y, cfg, generator, augment: bool, world=None) -> torch.Tensor:
    """One optimisation step on a batch (a DDP rank's share of one); returns the loss on the
    device (no synchronisation)."""
    world = world or distributed.World()
    if augment:
        x = dihedral(x, generator, world.rank, world.size)
    with autocast(x.device, cfg):
        out = model(memory_layout(x, cfg))
    loss = loss_value(out, y, cfg.loss, cfg.nll_beta)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def _train_epoch(model, optimizer, batches, generator, cfg, epoch, augment: bool, world=None):
    """The epoch's steps; the mean training loss per stamp (over every rank's stamps)."""
    world = world or distributed.World()
    model.train()
    total, count = torch.zeros((), device=batches.device), 0
    bar = tqdm(
        batches.iterate(generator),
        total=len(batches),
        desc=f"epoch {epoch}",
        unit="batch",
        disable=not cfg.progress,
        leave=False,
    )
    # .item() waits for the GPU: the bar's running mean is updated only now and then, but at
    # least PROGRESS_UPDATES times an epoch and at its last step
    every = max(1, min(SYNC_EVERY, len(batches) // PROGRESS_UPDATES))
    for step, (x, y) in enumerate(bar, start=1):
        total += train_step(model, optimizer, x, y, cfg, generator, augment, world) * len(x)
        count += len(x)
        if step % every == 0 or step == len(batches):
            _check_finite(total.item() / count, epoch)
            bar.set_postfix(loss=f"{total.item() / count:.4f}")
    total, stamps = distributed.sum_all(
        world, total, torch.tensor(float(count), device=total.device)
    )
    return _check_finite(total.item() / stamps.item(), epoch)


def _check_finite(value: float, epoch: int) -> float:
    if not math.isfinite(value):
        raise FloatingPointError(f"epoch {epoch}: the training loss became {value}; lower optim.lr")
    return value
