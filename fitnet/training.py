"""The training loop: ``train(cfg, output_dir) -> best validation loss``.

Plain function of a composed config, so it runs and is tested without Hydra. Writes
``last.pt`` and ``best.pt`` (see ``checkpoint``), ``metrics.csv`` (one row per epoch) and
``loss_curve.png`` into ``output_dir``.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from simulate.io import atomic_path

from . import checkpoint
from .caching import frozen_batches
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
)
from .labels import LabelScaler, calibration_scale, parse_targets
from .metrics import label_metrics
from .models import FrozenRefinerHead
from .noise import CCDNoise

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
LOSSES = ("l1", "mse", "gaussian_nll")
LOG_SIGMA_RANGE = (-7.0, 5.0)  # clamp of the predicted log-sigma (standardised units)
SYNC_EVERY = 50  # training steps between progress-bar updates (each waits for the device)


class TrainConfigError(ValueError):
    """A training option has a value that is not allowed."""


def resolve_device(name: str) -> torch.device:
    if name not in DEVICES:
        raise TrainConfigError(f"device={name!r} is not allowed: choose from {DEVICES}")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainConfigError("device=cuda but PyTorch sees no CUDA GPU; use device=auto or cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def validate_calibration(calibration: DictConfig) -> None:
    """Check the ``calibration`` group (conf/calibration) shared by train and calibrate."""
    edges = list(calibration.mag_edges)
    if edges != sorted(set(edges)):
        raise TrainConfigError(
            f"calibration.mag_edges={edges} must be strictly increasing magnitudes (or [])"
        )
    if not calibration.min_count >= 1:
        raise TrainConfigError(f"calibration.min_count={calibration.min_count} must be >= 1")


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


def split_output(out: torch.Tensor, loss: str):
    if loss != "gaussian_nll":
        return out, None
    t = out.shape[1] // 2
    return out[:, :t], out[:, t:].clamp(*LOG_SIGMA_RANGE)


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


def train(cfg: DictConfig, output_dir: str | Path) -> float:
    """Train per ``cfg``; return the best validation loss (the sweep objective)."""
    targets = validate(cfg)
    device = resolve_device(cfg.device)
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    # data_dir: a folder, or a list of folders whose splits are used one after the other
    train_paths, val_paths = split_paths(cfg.data_dir, "train"), split_paths(cfg.data_dir, "val")
    train_attrs = describe_splits(train_paths, targets)
    val_attrs = describe_splits(val_paths, targets)
    check_matching(train_paths[0], train_attrs, val_paths[0], val_attrs)
    image_size = train_attrs["stamp_size"]

    resumed = checkpoint.load(cfg.resume) if cfg.resume else None
    start = checkpoint.load(cfg.init_from) if cfg.init_from else None
    if resumed is not None or start is not None:
        # The weights only mean something with the label scaler, image norm and architecture
        # they were trained with, so those come from the checkpoint too.
        source = resumed if resumed is not None else start
        _check_compatible(
            source, "resume" if resumed is not None else "init_from", targets, cfg, image_size
        )
        scaler = LabelScaler.from_state(source["label_scaler"])
        norm = ImageNorm.from_state(source["image_norm"])
        model_cfg = source["model"]["config"]
        refining = start is not None and wraps_network(cfg.model, model_cfg)
        if refining:  # the checkpoint's network goes inside the refiner
            model_cfg = {**OmegaConf.to_container(cfg.model, resolve=True), "network": model_cfg}
    else:
        refining = False
        scaler = LabelScaler.fit(targets, cfg.labels, read_labels(train_paths, targets))
        norm = fit_image_norm(
            train_paths[0],
            train_attrs["background_rms_e_per_s"],
            cfg.image_norm.softening,
            cfg.image_norm.stats_images,
        )
        model_cfg = OmegaConf.to_container(cfg.model, resolve=True)

    torch.manual_seed(cfg.seed)
    generator = torch.Generator().manual_seed(cfg.seed)
    # fresh_noise: new noise for every training stamp each time it is drawn, on the data's device
    noise = None
    if cfg.fresh_noise:
        try:
            noise = CCDNoise.from_attrs(train_attrs)
        except KeyError as err:
            raise DataError(f"{train_paths[0]}: fresh_noise=true, but {err.args[0]}") from err
    noise_generator = torch.Generator(device=device).manual_seed(cfg.seed)
    num_outputs = len(targets) * checkpoint.outputs_per_label(cfg.loss)
    model = checkpoint.build_model(model_cfg, 1, num_outputs, image_size).to(device)
    loads_whole_state = resumed is not None or (start is not None and not refining)
    if hasattr(model, "prepare") and not loads_whole_state:
        # data-derived state (PhotometricRefiner's feature statistics) that no checkpoint brings
        model.prepare(norm, sample_images(train_paths[0], norm, cfg.image_norm.stats_images))
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = instantiate(cfg.optim, [p for p in model.parameters() if p.requires_grad])
    scheduler = instantiate(cfg.scheduler, optimizer)
    start_epoch, history, best, since_best = 1, [], math.inf, 0
    if resumed is not None:
        model.load_state_dict(resumed["model"]["state_dict"])
        optimizer.load_state_dict(resumed["optimizer"])
        scheduler.load_state_dict(resumed["scheduler"])
        generator.set_state(resumed["rng"]["generator"])
        if resumed["rng"].get("noise") is not None:
            noise_generator.set_state(resumed["rng"]["noise"])
        torch.set_rng_state(resumed["rng"]["torch"])
        if device.type == "cuda" and resumed["rng"].get("cuda") is not None:
            torch.cuda.set_rng_state(resumed["rng"]["cuda"])
        start_epoch = resumed["epoch"] + 1
        history, best, since_best = resumed["history"], resumed["best_val"], resumed["since_best"]
        log.info("resuming %s at epoch %d", cfg.resume, start_epoch)
    elif refining:
        model.network.load_state_dict(start["model"]["state_dict"])
        log.info("refining the network of %s with photometry", cfg.init_from)
    elif start is not None:
        model.load_state_dict(start["model"]["state_dict"])
        log.info("starting from the weights of %s", cfg.init_from)
    step_model = torch.compile(model) if cfg.compile else model

    paths = {"train": train_paths, "val": val_paths}
    attrs = {"train": train_attrs, "val": val_attrs}
    sizes = {"train": cfg.batch_size, "val": cfg.data.eval_batch_size}

    def batches_of(split: str, generator: torch.Generator, files=None) -> Batches:
        """Batches of ``split`` (or of its ``files`` only); the training split with fresh noise
        from ``generator``."""
        fresh = noise if split == "train" else None  # validation keeps its stored noise
        files = paths[split] if files is None else files
        return make_batches(
            files,
            attrs[split] if files == paths[split] else describe_splits(files),
            norm,
            scaler,
            sizes[split],
            device,
            cfg.data,
            fresh,
            generator,
        )

    augment = cfg.augment
    if cfg.cache_frozen and getattr(model, "freeze_network", False):
        train_batches, val_batches = frozen_batches(
            model, model_cfg, scaler, paths, batches_of, cfg, device
        )
        step_model, augment = FrozenRefinerHead(model), False
    else:
        train_batches = batches_of("train", noise_generator)
        val_batches = batches_of("val", noise_generator)
    val_true = read_labels(val_paths, targets)
    val_z = scaler.encode(val_true)  # standardised, for the sigma calibration
    log.info(
        "training %s for %s on %s: %d train / %d val stamps of %d px, %d parameters, seed %d -> %s",
        type(model).__name__,
        targets,
        device,
        train_attrs["n_images"],
        val_attrs["n_images"],
        image_size,
        sum(p.numel() for p in model.parameters()),
        cfg.seed,
        output_dir,
    )

    def payload(epoch: int) -> dict:
        state = {
            "epoch": epoch,
            "history": history,
            "best_val": best,
            "since_best": since_best,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": {
                "generator": generator.get_state(),
                "noise": noise_generator.get_state(),
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state() if device.type == "cuda" else None,
            },
        }
        return checkpoint.make_payload(
            model=model,
            model_cfg=model_cfg,
            image_size=image_size,
            targets=targets,
            loss=cfg.loss,
            scaler=scaler,
            norm=norm,
            instrument=train_attrs,
            cfg=cfg,
            state=state,
        )

    for epoch in range(start_epoch, cfg.epochs + 1):
        t0 = time.perf_counter()
        train_loss = _train_epoch(
            step_model, optimizer, train_batches, generator, cfg, epoch, augment
        )
        val_loss, mean, sigma_z = evaluate(step_model, val_batches, cfg)
        pred, _ = scaler.decode(mean)
        if sigma_z is not None:
            scores = (val_z - mean) / sigma_z
            mag_pred = pred[:, targets.index("mag")] if "mag" in targets else None
            scaler.calibrate(scores, mag_pred, cfg.calibration.mag_edges, cfg.calibration.min_count)
        metrics = label_metrics({name: pred[:, j] for j, name in enumerate(targets)}, val_true)
        lr = optimizer.param_groups[0]["lr"]
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(val_loss)
        else:
            scheduler.step()
        row = {
            "epoch": epoch,
            "lr": lr,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "seconds": time.perf_counter() - t0,
        }
        for name, m in metrics.items():
            row.update(
                {
                    f"{name}_bias": m["bias"],
                    f"{name}_scatter": m["scatter"],
                    f"{name}_outlier_frac": m["outlier_frac"],
                }
            )
        if sigma_z is not None:  # the overall factor; per-bin ones are in the checkpoint
            overall = calibration_scale(scores)
            row.update({f"{n}_sigma_scale": s for n, s in zip(targets, overall, strict=True)})
        history.append(row)
        improved = val_loss < best
        best, since_best = (val_loss, 0) if improved else (best, since_best + 1)
        write_csv(output_dir / "metrics.csv", history)
        state = payload(epoch)
        checkpoint.save(output_dir / "last.pt", state)
        if improved:
            checkpoint.save(output_dir / "best.pt", state)
        log.info(
            "epoch %d/%d: train %.4f val %.4f (best %.4f) lr %.2e %.1fs | %s",
            epoch,
            cfg.epochs,
            train_loss,
            val_loss,
            best,
            lr,
            row["seconds"],
            " ".join(
                f"{n}: bias {m['bias']:+.3f} scatter {m['scatter']:.3f}" for n, m in metrics.items()
            ),
        )
        if cfg.early_stopping_patience and since_best >= cfg.early_stopping_patience:
            log.info("early stopping: no improvement for %d epochs", since_best)
            break

    from .plots import plot_history

    plot_history(history, output_dir / "loss_curve.png")
    log.info("best validation loss %.4f; checkpoints in %s", best, output_dir)
    return best


def wraps_network(run_model: DictConfig, ckpt_model: dict) -> bool:
    """Whether the run's model has a ``network`` slot and the checkpoint's model has none: then
    ``init_from`` puts the checkpoint's network (architecture and weights) in that slot."""
    return "network" in run_model and "network" not in ckpt_model


def _check_compatible(ckpt: dict, key: str, targets, cfg, image_size) -> None:
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
    if ckpt["model"]["image_size"] != image_size:
        raise DataError(
            f"{key}: checkpoint expects {ckpt['model']['image_size']} px stamps, the data has {image_size}"
        )


def train_step(model, optimizer, x, y, cfg, generator, augment: bool) -> torch.Tensor:
    """One optimisation step on a batch; returns the loss on the device (no synchronisation)."""
    if augment:
        x = dihedral(x, generator)
    with autocast(x.device, cfg):
        out = model(memory_layout(x, cfg))
    loss = loss_value(out, y, cfg.loss, cfg.nll_beta)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def _train_epoch(model, optimizer, batches, generator, cfg, epoch, augment: bool) -> float:
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
    for step, (x, y) in enumerate(bar):
        total += train_step(model, optimizer, x, y, cfg, generator, augment) * len(x)
        count += len(x)
        if step % SYNC_EVERY == 0:  # .item() waits for the GPU: only now and then
            _check_finite(total.item() / count, epoch)
            bar.set_postfix(loss=f"{total.item() / count:.4f}")
    return _check_finite(total.item() / count, epoch)


def _check_finite(value: float, epoch: int) -> float:
    if not math.isfinite(value):
        raise FloatingPointError(f"epoch {epoch}: the training loss became {value}; lower optim.lr")
    return value
