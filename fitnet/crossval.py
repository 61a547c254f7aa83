"""k-fold cross-validation of a training run (``python -m fitnet.train cv.folds=K``).

The training split's stamps are dealt into K folds (stamp i into fold i mod K). Fold k's model
trains on the other K - 1 folds and validates (early stopping, best.pt, sigma calibration) on
fold k, in ``<output_dir>/fold<k>``; the validation split is not used. When every fold has
finished, ``cv_loss_curves.png`` shows the folds' loss curves with their mean and standard
deviation per epoch, and ``cv_metrics.csv`` the mean and standard deviation across folds of
every metric of each fold's best epoch. A fold that has finished is not trained again, so a
killed cross-validation resumes at its first unfinished fold, and folds may run as the jobs of
a multirun (``cv.fold=0,1,2``).
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from sersic_runtime.errors import UserError
from sersic_runtime.files import atomic_path

log = logging.getLogger(__name__)

DONE = "fold.json"  # written by a fold when it has finished: its best epoch's metrics


@dataclass(frozen=True)
class Fold:
    """Rows (0-based, over the training files one after the other) of fold ``index`` of
    ``count``: ``train`` for the optimiser, ``held`` for validation."""

    index: int
    count: int
    train: np.ndarray
    held: np.ndarray


def check(cv: DictConfig) -> None:
    """``cv.folds`` 0 (off) or >= 2; ``cv.fold`` null or in [0, folds)."""
    if cv.folds == 1 or cv.folds < 0:
        raise UserError(f"cv.folds={cv.folds} is not allowed: 0 (no cross-validation) or >= 2")
    if cv.fold is not None and not (cv.folds and 0 <= cv.fold < cv.folds):
        raise UserError(
            f"cv.fold={cv.fold} is not allowed: must lie in [0, cv.folds={cv.folds}) "
            "(and cv.folds >= 2)"
        )


def fold_rows(index: int, count: int, n_train: int) -> Fold:
    """Fold ``index`` of ``count`` over ``n_train`` training stamps."""
    if count > n_train:
        raise UserError(
            f"cv.folds={count} is not allowed: the training split holds only {n_train} stamps"
        )
    rows = np.arange(n_train)
    return Fold(index, count, rows[rows % count != index], rows[rows % count == index])


def fold_dir(output_dir: Path, index: int) -> Path:
    return Path(output_dir) / f"fold{index}"


def run_folds(cfg: DictConfig, output_dir: Path, train_one: Callable) -> float:
    """Train the folds of ``cfg.cv`` (all, or ``cv.fold``) with ``train_one(cfg, folder)``;
    summarise when all have finished. Returns the mean best validation loss of the folds
    trained here (a sweep's objective)."""
    indices = range(cfg.cv.folds) if cfg.cv.fold is None else [cfg.cv.fold]
    losses = []
    for k in indices:
        folder = fold_dir(output_dir, k)
        if (folder / DONE).exists():
            log.info("fold %d of %d has finished (%s); not trained again", k, cfg.cv.folds, folder)
            losses.append(json.loads((folder / DONE).read_text())["val_loss"])
            continue
        change = {"cv": {"fold": k}}
        if (folder / "last.pt").exists() and not (cfg.resume or cfg.init_from):
            change["resume"] = str(folder / "last.pt")  # a killed fold continues
        fold_cfg = OmegaConf.merge(cfg, change)
        losses.append(train_one(fold_cfg, folder))
    if all((fold_dir(output_dir, k) / DONE).exists() for k in range(cfg.cv.folds)):
        summarise(output_dir, cfg.cv.folds, cfg.loss)
    return float(np.mean(losses))


def finish_fold(folder: Path, history: list[dict]) -> None:
    """Mark a fold finished, with the row of its best epoch (the one best.pt holds)."""
    best = min(history, key=lambda row: row["val_loss"])
    with atomic_path(folder / DONE) as tmp:
        tmp.write_text(json.dumps(best))


def read_history(folder: Path) -> list[dict]:
    with open(folder / "metrics.csv") as fh:
        return [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]


def summarise(output_dir: Path, count: int, loss: str | None = None) -> tuple[Path, Path]:
    """``cv_metrics.csv`` (mean, std and each fold's value of every metric of the folds' best
    epochs) and ``cv_loss_curves.png``; returns their paths."""
    from .plots import plot_folds

    best = [json.loads((fold_dir(output_dir, k) / DONE).read_text()) for k in range(count)]
    keys = [k for k in best[0] if k not in ("lr", "seconds") and all(k in b for b in best)]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(["metric", "mean", "std", *[f"fold{k}" for k in range(count)]])
    for key in keys:
        values = np.array([b[key] for b in best], dtype=float)
        writer.writerow([key, f"{values.mean():.6g}", f"{values.std(ddof=1):.6g}",
                         *[f"{v:.6g}" for v in values]])  # fmt: skip
    table = Path(output_dir) / "cv_metrics.csv"
    with atomic_path(table) as tmp:
        tmp.write_text(buf.getvalue())
    figure = plot_folds(
        [read_history(fold_dir(output_dir, k)) for k in range(count)],
        Path(output_dir) / "cv_loss_curves.png",
        loss,
    )
    log.info("cross-validation of %d folds: %s, %s", count, table, figure)
    return table, figure
