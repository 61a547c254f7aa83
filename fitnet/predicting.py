"""``run_predict(cfg)``: the plain function behind ``python -m fitnet.predict``."""

from __future__ import annotations

import logging
import time

from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from .inputs import StampMaker, count_images, iter_stamps
from .prediction import Predictor, predict_table, write_table
from .training import resolve_device

log = logging.getLogger(__name__)


def as_list(value) -> list:
    if OmegaConf.is_list(value):
        return list(OmegaConf.to_container(value))
    return [value]


def checkpoints(ckpt) -> list:
    """The ``ckpt`` option as a list of paths; null means the shipped pretrained model."""
    if ckpt is None:
        from .pretrained import default_checkpoint

        return [default_checkpoint()]
    return as_list(ckpt)


def run_predict(cfg: DictConfig):
    """Predict every image of ``cfg.input`` and write the catalogue(s); return the table."""
    outputs = as_list(cfg.output)
    predictor = Predictor(checkpoints(cfg.ckpt), resolve_device(cfg.device), cfg.amp)
    maker = StampMaker(predictor.image_size, predictor.noise_rms, cfg.input_scale, cfg.pad_seed)
    stamps = iter_stamps(cfg.input, maker, predictor.pixel_scale, cfg.allow_pixel_scale_mismatch)
    start = time.perf_counter()
    with tqdm(
        total=count_images(cfg.input), unit="img", desc="predict", disable=not cfg.progress
    ) as bar:
        table = predict_table(
            predictor, stamps, cfg.batch_size[predictor.device.type], progress=bar.update
        )
    seconds = time.perf_counter() - start
    for path in outputs:
        write_table(table, path)
    flagged = int((table["flag"] != 0).sum())
    log.info(
        "predicted %s for %d images (%d flagged and skipped) in %.1f s (%.0f images/s); wrote %s",
        predictor.labels,
        len(table),
        flagged,
        seconds,
        len(table) / max(seconds, 1e-9),
        ", ".join(map(str, outputs)),
    )
    return table
