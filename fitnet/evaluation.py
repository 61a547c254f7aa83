"""Accuracy against the GalSim truth (``python -m fitnet.evaluate``).

The command, its options and what it writes: ``fitnet/evaluate.py`` and conf/evaluate.yaml.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import h5py
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from sersic_runtime.files import atomic_path

from .catalogue import write_table
from .data import DataError, describe_split, read_labels
from .inference import Predictor
from .labels import spec_error
from .measure import measure_file
from .metrics import markdown, report, summarize
from .plots import plot_gallery, plot_history, plot_residuals
from .runtime import checkpoint_paths, resolve_device, set_threads

log = logging.getLogger(__name__)


def default_data(predictor: Predictor, data_dir: str | None = None) -> Path:
    """``test.h5`` in ``data_dir``, or by default in the (first) data folder the (first)
    checkpoint was trained on."""
    if data_dir is None:
        if not predictor.payload["data_dirs"]:
            raise DataError("the checkpoint records no training data folder: pass data=PATH")
        data_dir = predictor.payload["data_dirs"][0]
    path = Path(str(data_dir)) / "test.h5"
    if not path.exists():
        raise DataError(
            f"the test split {path} does not exist; pass data=PATH to a HDF5 file in the data layout"
        )
    return path


def evaluate(cfg: DictConfig, output_dir: str | Path | None = None) -> dict:
    """Evaluate the checkpoint(s) on an HDF5 file with true labels; return the metrics.

    ``output_dir``: default ``cfg.output_dir``, else the Hydra run folder."""
    if output_dir is None:
        output_dir = cfg.output_dir or HydraConfig.get().runtime.output_dir
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    set_threads(cfg.threads)
    predictor = Predictor(
        checkpoint_paths(cfg.ckpt), resolve_device(cfg.device), cfg.amp, cfg.ensemble, cfg.backend
    )
    # The shipped model was trained on folders a user does not have: it uses this install's
    # default data set instead (data/sersic, what `python -m simulate` writes).
    shipped_dir = None if cfg.ckpt else cfg.paths.data_dir
    data = Path(cfg.data) if cfg.data else default_data(predictor, shipped_dir)
    # Only /images and the true labels are needed: files from other simulators need not carry
    # this project's attributes (the pixel scale is still checked where the file gives one).
    describe_split(data, predictor.labels, required=())
    with h5py.File(data, "r") as f:
        crb_names = [f"crb_{name}" for name in predictor.labels if f"params/crb_{name}" in f]
        extra = [name for name in ("mag", "snr") if f"params/{name}" in f] + crb_names
    if "mag" not in extra:
        raise DataError(
            f"{data} has no /params/mag: the true magnitude is needed for the magnitude bins"
        )
    true = read_labels(data, sorted(set(predictor.labels) | set(extra)))
    # a file without the noiseless S/N still gets every magnitude bin; its S/N bins stay empty
    true.setdefault("snr", np.full(len(true["mag"]), np.nan))
    batch_size = cfg.batch_size[predictor.device.type]
    table = measure_file(
        predictor, data, cfg.fit, cfg.quality, batch_size, cfg.progress, "evaluate"
    )
    good = np.asarray(table["flag"]) == 0
    if not good.any():
        raise DataError(f"every image of {data} was flagged; see the warnings above")
    pred = {name: np.asarray(table[name])[good] for name in predictor.labels}
    truth = {name: true[name][good] for name in predictor.labels}
    mag = true["mag"][good]
    snr = true["snr"][good]
    sigma = {
        n: np.asarray(table[f"{n}_err"])[good] for n in predictor.labels if predictor.has_sigma[n]
    }
    crb = {n: true[f"crb_{n}"][good] for n in predictor.labels if f"crb_{n}" in true} or None
    bins = (list(cfg.mag_bins), list(cfg.snr_bins))
    metrics = report(
        pred, truth, mag, snr, *bins, sigma=sigma or None, transforms=predictor.transforms, crb=crb
    )
    summary = {
        "data": str(data),
        "checkpoints": predictor.paths,
        "evaluated": int(good.sum()),
        "flagged": int((~good).sum()),
        "labels": metrics,
    }
    fitter = _compare_baseline(cfg, table, good, true, predictor, bins) if cfg.baseline else None
    if fitter:
        summary["baseline"] = fitter
    _write_text(output_dir / "metrics.json", json.dumps(summary, indent=2))
    header = (
        f"# Evaluation of {', '.join(predictor.paths)}\n\non `{data}`: {good.sum()} galaxies "
        f"({(~good).sum()} flagged). Bias = median error, scatter = half the 16-84 percentile range.\n\n"
    )
    text = header + markdown(metrics)
    if fitter:
        text += (
            f"\n## Side by side with the fitter on the {fitter['fitted']} galaxies it fitted\n\n"
            f"{fitter['catalogue']}: {fitter['failed']} fits did not converge "
            f"({100 * fitter['failure_rate']:.1f}%), {fitter['seconds_per_fit']:.2f} s per fit on one core.\n\n"
            + markdown(fitter["network"], title="network, ")
            + markdown(fitter["fitter"], title="pyimfit, ")
        )
    _write_text(output_dir / "metrics.md", text)
    for name in predictor.labels:
        table[f"true_{name}"] = true[name]
    write_table(table, output_dir / "predictions.csv")

    edges = np.arange(cfg.mag_bins[0], cfg.mag_bins[-1] + 1e-9, cfg.running_bin_width)
    for name in predictor.labels:
        errors = spec_error(name, pred[name], truth[name])
        plot_residuals(
            name,
            truth[name],
            pred[name],
            errors,
            mag,
            edges,
            output_dir / f"residuals_{name}.png",
            title=f"{data.name}: {good.sum()} galaxies",
        )
    _gallery(cfg, data, table, predictor, true, output_dir)
    for k, payload in enumerate(predictor.payloads):
        suffix = "" if len(predictor.payloads) == 1 else f"_{k}"
        history = payload.get("history", [])
        plot_history(history, output_dir / f"loss_curve{suffix}.png", payload.get("loss"))
    log.info("evaluated %d galaxies of %s; wrote %s", good.sum(), data, output_dir)
    for name, parts in metrics.items():
        m = parts["all"]
        log.info(
            "  %-3s bias %+.4f scatter %.4f outliers %.2f%%",
            name,
            m["bias"],
            m["scatter"],
            100 * m["outlier_frac"],
        )
    return summary


def _compare_baseline(cfg, table, good, true, predictor: Predictor, bins) -> dict:
    """Metrics of network and fitter on the galaxies the fitter fitted (converged or not)."""
    from astropy.table import Table

    fits = Table.read(cfg.baseline)
    rows = np.asarray(fits["row"], dtype=int)
    if rows.max(initial=-1) >= len(table):
        raise DataError(
            f"baseline {cfg.baseline} has rows beyond the {len(table)} images of the data"
        )
    usable = good[rows] & np.all(
        [np.isfinite(np.asarray(fits[n], dtype=float)) for n in predictor.labels], axis=0
    )
    rows, fits = rows[usable], fits[usable]
    mag, snr = true["mag"][rows], true["snr"][rows]
    truth = {n: true[n][rows] for n in predictor.labels}
    values = {n: np.asarray(fits[n], dtype=float) for n in predictor.labels}
    network = {n: np.asarray(table[n], dtype=float)[rows] for n in predictor.labels}
    failed = int((np.asarray(fits["flag"]) != 0).sum())
    return {
        "catalogue": str(cfg.baseline),
        "fitted": int(len(rows)),
        "failed": failed,
        "failure_rate": failed / max(len(rows), 1),
        "seconds_per_fit": float(np.mean(fits["seconds"]))
        if "seconds" in fits.colnames
        else float("nan"),
        "network": report(network, truth, mag, snr, *bins),
        "fitter": report(values, truth, mag, snr, *bins),
    }


def _write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def _gallery(cfg, data: Path, table, predictor: Predictor, true: dict, output_dir: Path) -> None:
    """Half the worst cases, half random galaxies. The worst are the largest errors in units of
    the row's own sigma (where the model gives one; else of the label's scatter): the galaxies
    the network is surest of and most wrong about, bright ones as often as faint ones."""
    if cfg.gallery <= 0:
        return
    good = np.flatnonzero(np.asarray(table["flag"]) == 0)
    score = np.zeros(len(good))
    for name in predictor.labels:
        errors = spec_error(name, np.asarray(table[name])[good], true[name][good])
        if f"{name}_err" in table.colnames:
            value = np.asarray(table[name], dtype=float)[good]
            scale = error_sigma(name, value, np.asarray(table[f"{name}_err"], dtype=float)[good])
        else:
            scale = summarize(errors)["scatter"] or 1.0
        score = np.maximum(score, np.abs(errors) / scale)
    worst = good[np.argsort(score)[::-1][: cfg.gallery // 2]]
    rng = np.random.default_rng(cfg.seed)
    rest = np.setdiff1d(good, worst)
    random = rng.choice(rest, size=min(len(rest), cfg.gallery - len(worst)), replace=False)
    picks = np.concatenate([worst, np.sort(random)])
    with h5py.File(data, "r") as f:
        order = np.argsort(picks)
        images = np.empty((len(picks),) + f["images"].shape[1:], dtype=np.float32)
        images[order] = f["images"][np.sort(picks)]
        snr = f["params/snr"][()] if "snr" in f["params"] else np.full(len(table), np.nan)
    captions = [
        f"#{i} ({'worst' if k < len(worst) else 'random'}), S/N {snr[i]:.0f}\n"
        f"true {_labels_text(true, i, predictor.labels)}\npred {_labels_text(table, i, predictor.labels)}"
        for k, i in enumerate(picks)
    ]
    plot_gallery(
        images,
        captions,
        predictor.noise_rms,
        output_dir / "gallery.png",
        title=f"{data.name}: {len(worst)} worst cases (largest error / own sigma), then random "
        "galaxies; re in arcsec",
    )


def error_sigma(name: str, value, sigma):
    """A label's 1-sigma ``sigma`` in the units of its error (docs/contract.md, section 7):
    mag and q as they are, re relative, n in dex."""
    if name == "re":
        return sigma / np.abs(value)
    if name == "n":
        return sigma / (np.abs(value) * math.log(10))
    return sigma


def _labels_text(values, i: int, labels) -> str:
    """``mag=21.3 n=2.1 re=0.45" q=0.61`` of row ``i``."""
    units = {"re": '"'}
    return " ".join(f"{n}={float(values[n][i]):.3g}{units.get(n, '')}" for n in labels)
