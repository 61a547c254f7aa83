"""Measuring a gaussian_nll model's sigma scale factors again on independent galaxies (``python -m fitnet.calibrate``).

The command, its options and what it writes: ``fitnet/calibrate.py`` and conf/calibrate.yaml.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from sersic_runtime.configs import load_group
from sersic_runtime.errors import UserError
from sersic_runtime.options import as_list

from . import checkpoint
from .data import DataError, describe_split, read_labels
from .inference import Predictor
from .labels import validate_calibration
from .measure import measure_file
from .metrics import calibration, standard_scores
from .runtime import checkpoint_paths, resolve_device, set_threads

log = logging.getLogger(__name__)


def check_independent(payload: dict, files: dict[Path, dict]) -> None:
    """Raise DataError if a calibration file (path -> its ``describe_split`` attributes) holds
    galaxies of the checkpoint's training split.

    Galaxy i of master seed s is the same galaxy in every file the simulator writes, so a set
    made with the training seed overlaps the training split wherever the index ranges overlap.
    """
    for data_dir in payload["data_dirs"]:
        train = Path(data_dir) / "train.h5"
        if not train.is_file():
            log.warning(
                "cannot check that the calibration galaxies are not training galaxies: the "
                "checkpoint's training split %s is not here",
                train,
            )
            continue
        t = describe_split(train)
        for path, a in files.items():
            same_seed = a.get("master_seed") == t.get("master_seed")
            if (
                same_seed
                and a.get("index_start", 0) < t["index_stop"]
                and t["index_start"] < a.get("index_stop", 0)
            ):
                raise DataError(
                    f"{path} holds galaxies {a['index_start']}..{a['index_stop'] - 1} of master "
                    f"seed {a['master_seed']}, which overlap the training split {train} (galaxies "
                    f"{t['index_start']}..{t['index_stop'] - 1}): calibrate on galaxies the model "
                    "never saw, e.g. `python -m simulate seed=<another seed> out_dir=data/calib`"
                )


def standard_scores_on(predictor: Predictor, path: Path, batch_size: int, quality, progress: bool):
    """Standard scores (N, T) of the predictions on file ``path``, and the predicted mag (N, AB
    mag; None when mag is not a label)."""
    true = read_labels(path, predictor.labels)
    desc = f"calibrate {path.name}"
    network_only = load_group("fit", "none")  # the network's own sigmas are calibrated
    table = measure_file(predictor, path, network_only, quality, batch_size, progress, desc)
    good = np.asarray(table["flag"]) == 0
    scores = np.stack(
        [
            standard_scores(
                name,
                np.asarray(table[name])[good],
                true[name][good],
                np.asarray(table[f"{name}_err"])[good],
                predictor.transforms[name],
            )
            for name in predictor.labels
        ],
        axis=1,
    )
    mag = np.asarray(table["mag"])[good] if "mag" in predictor.labels else None
    return scores, mag


def calibrate(cfg: DictConfig) -> dict:
    """Measure the sigma scale factors of ``cfg.ckpt`` on ``cfg.data``; write ``cfg.output``.

    Returns the ``calibration`` record stored in the new checkpoint.
    """
    paths = [Path(str(p)) for p in as_list(cfg.data)]
    if not paths:
        raise DataError(
            "data=[] is empty: give one or more HDF5 files in the data layout with true labels"
        )
    ckpts = checkpoint_paths(cfg.ckpt)
    if len(ckpts) != 1:
        raise checkpoint.CheckpointError(
            f"ckpt={ckpts}: calibrate one checkpoint at a time (each carries its own factors)"
        )
    output = Path(str(cfg.output))
    if output.suffix != ".pt":
        raise UserError(f"output={output} must be a .pt checkpoint path")
    validate_calibration(cfg.calibration)

    set_threads(cfg.threads)
    predictor = Predictor(ckpts, resolve_device(cfg.device), cfg.amp, backend=cfg.backend)
    payload = predictor.payload
    if payload["loss"] != "gaussian_nll":
        raise checkpoint.CheckpointError(
            f"{ckpts[0]} was trained with loss={payload['loss']}: only gaussian_nll models "
            "predict sigmas to calibrate"
        )
    # every file checked (layout, labels, galaxies) before any prediction; as in evaluate,
    # files from other simulators need only /images and the labels
    files = {p: describe_split(p, predictor.labels, required=()) for p in paths}
    check_independent(payload, files)
    scaler = predictor.label_scaler
    old = dataclasses.replace(scaler)
    scaler.sigma_scale = None  # measure against the network's raw sigmas

    batch_size = cfg.batch_size[predictor.device.type]
    parts = [standard_scores_on(predictor, p, batch_size, cfg.quality, cfg.progress) for p in files]
    scores = np.concatenate([s for s, _ in parts])
    mag = None if parts[0][1] is None else np.concatenate([m for _, m in parts])
    scaler.calibrate(scores, mag, cfg.calibration.mag_edges, cfg.calibration.min_count)

    def coverage(s) -> dict[str, float]:
        """68% coverage per label of the calibration set under the factors of scaler ``s``."""
        z = scores / s.sigma_factors(mag, len(scores))
        return {name: calibration(z[:, j])["cover68"] for j, name in enumerate(predictor.labels)}

    record = {
        "data": [str(p) for p in paths],
        "n_galaxies": int(len(scores)),
        "mag_edges": scaler.sigma_mag_edges,
        "min_count": int(cfg.calibration.min_count),
        "cover68_before": coverage(old),
        "cover68_after": coverage(scaler),
        "from_checkpoint": str(ckpts[0]),
    }
    new = {**payload, "label_scaler": scaler.state(), "calibration": record}
    checkpoint.save(output, new)
    log.info(
        "calibrated %s on %d galaxies from %s: 68%% coverage %s before, %s after; wrote %s",
        ckpts[0],
        record["n_galaxies"],
        ", ".join(record["data"]),
        {k: round(v, 4) for k, v in record["cover68_before"].items()},
        {k: round(v, 4) for k, v in record["cover68_after"].items()},
        output,
    )
    return record
