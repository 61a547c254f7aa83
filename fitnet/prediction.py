"""A catalogue from new images (``python -m fitnet.predict``).

The command, its options and what it writes: ``fitnet/predict.py`` and conf/predict.yaml.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from sersic_runtime.errors import UserError
from sersic_runtime.files import atomic_path
from sersic_runtime.options import as_list, check_shards, positive

from .catalogue import MANIFEST, write_table
from .flags import BITS
from .flags import names as flag_names
from .generalist import ZERO_POINT_KEYWORDS, zero_point_of
from .inference import Predictor
from .inputs import InputError, first_fits
from .measure import Measurer, Settings, measure_cutouts, measure_mosaics
from .parts import Parts, file_stamp
from .psfs import psf_source, psfs_for
from .runtime import checkpoint_paths, resolve_device, set_threads
from .survey import expand, open_mosaics, read_sources

log = logging.getLogger(__name__)


#: the options that name one file per input in a folder run (``output=`` a folder)
PER_INPUT = ("catalog", "weight", "rms", "mask", "segmap")


def predict(cfg: DictConfig):
    """Predict every image of ``cfg.input`` and write the catalogue(s); return the table (in a
    folder run, the list of catalogues written by this job)."""
    if folder_output(cfg.output):
        return run_per_input(cfg)
    if cfg.shard is not None:
        raise UserError(f"shard={cfg.shard} is for output= a folder (one catalogue per input)")
    return predict_once(cfg)


def folder_output(output) -> bool:
    """``output=`` is a folder (``cats/``, or an existing directory): one catalogue per input."""
    return isinstance(output, str) and (output.endswith(("/", os.sep)) or Path(output).is_dir())


def per_input_jobs(cfg: DictConfig) -> list[dict]:
    """Every input of a folder run, with its own map and catalogue files and its output."""
    inputs = expand(cfg.input)
    folder, suffix = Path(cfg.output), "." + cfg.catalogue_format.lstrip(".")
    files = {}
    for key in PER_INPUT:
        if cfg[key] is not None:
            files[key] = expand(cfg[key])
            if len(files[key]) != len(inputs):
                raise UserError(
                    f"{key}= names {len(files[key])} file(s) for {len(inputs)} input(s): with "
                    "output= a folder, give one per input, in the same order"
                )
    names = [Path(p).name.split(".")[0] for p in inputs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UserError(f"inputs share the name {twice[0]!r}: each catalogue in {folder} is "
                        "named after its input; give inputs of distinct names")  # fmt: skip
    return [{"input": str(p), "output": str(folder / f"{n}{suffix}"),
             **{k: v[i] for k, v in files.items()}} for i, (p, n) in enumerate(zip(inputs, names, strict=True))]  # fmt: skip


def run_per_input(cfg: DictConfig) -> list[str]:
    """One catalogue per input of this job's share (``shard`` of ``shards``); a manifest of all."""
    check_shards(cfg.shards, cfg.shard)
    jobs = per_input_jobs(cfg)
    folder = Path(cfg.output)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / MANIFEST) as tmp:  # every job writes the same manifest
        tmp.write_text(json.dumps({"inputs": jobs}, indent=1))
    mine = jobs if cfg.shard is None else jobs[cfg.shard :: cfg.shards]
    written, predictor = [], None
    for job in mine:
        if Path(job["output"]).exists():
            log.info("%s exists: %s not measured again", job["output"], job["input"])
            continue
        predictor = predictor or load_predictor(cfg)  # loaded once for all the inputs
        predict_once(OmegaConf.merge(cfg, job), predictor)
        written.append(job["output"])
    log.info("%d of %d inputs measured by this job (%d of them already done); catalogues in %s",
             len(mine), len(jobs), len(mine) - len(written), folder)  # fmt: skip
    return written


def predict_once(cfg: DictConfig, predictor: Predictor | None = None):
    """Predict every image of ``cfg.input`` into the catalogue(s) ``cfg.output``, with
    ``predictor`` (default: the one ``cfg`` names)."""
    outputs = as_list(cfg.output)
    input_scale = positive("input_scale", cfg.input_scale)
    pixel_scale = positive("pixel_scale", cfg.pixel_scale, allow_null=True)
    predictor = predictor or load_predictor(cfg)
    if cfg.get("psf") is not None and not predictor.needs_psf:
        raise UserError(
            "psf= is for a PSF-conditioned model (ckpt=generalist); this one has its own PSF"
        )
    parts = saved_rows(cfg, predictor)
    start = time.perf_counter()
    if cfg.catalog is not None:  # a mosaic and its source catalogue
        mosaics = open_mosaics(cfg.input, cfg.weight, cfg.rms, cfg.mask, cfg.segmap)
        sources = read_sources(cfg.catalog)
        measurer = Measurer(predictor, settings(cfg, predictor, mosaics[0].header))
        table = measure_mosaics(
            measurer, mosaics, sources, cfg.columns, input_scale=input_scale,
            pad_seed=cfg.pad_seed, pixel_scale=pixel_scale,
            allow_mismatch=cfg.allow_pixel_scale_mismatch,
            psfs=psf_source(cfg.get("psf"), len(sources), cfg.psf_includes_pixel)
            if predictor.needs_psf else None, progress=cfg.progress, parts=parts,
        )  # fmt: skip
    else:
        if cfg.weight is not None or cfg.rms is not None or cfg.segmap is not None:
            raise UserError("weight=, rms= and segmap= are maps of a mosaic: give catalog= too")
        if len(as_list(cfg.input)) > 1:
            raise UserError("a list of inputs needs catalog= (mosaics); cutouts go in one folder")
        measurer = Measurer(predictor, settings(cfg, predictor, first_fits(cfg.input)[1]))
        table = measure_cutouts(
            measurer, cfg.input, input_scale=input_scale, pad_seed=cfg.pad_seed,
            pixel_scale=pixel_scale, allow_mismatch=cfg.allow_pixel_scale_mismatch,
            mask=cfg.mask, psfs=psfs_for(predictor.needs_psf, cfg.input, cfg.get("psf"),
                                         cfg.psf_includes_pixel), progress=cfg.progress,
            parts=parts,
        )  # fmt: skip
    seconds = time.perf_counter() - start
    measured = measured_rows(table, predictor.labels)
    if len(table) and not measured.any():
        raise UserError(f"no row of input={cfg.input} could be measured ({why_unmeasured(table)}); "
                        "nothing written")  # fmt: skip
    if parts is not None:
        parts.save()  # all measured: a failure to write loses nothing
    for path in outputs:
        write_table(table, path)
    if parts is not None:
        parts.remove()
    flagged = int((table["flag"] != 0).sum())
    skipped = int((~measured).sum())
    log.info(
        "predicted %s for %d images (%d flagged, %d of them not measured) in %.1f s "
        "(%.0f images/s); wrote %s",
        predictor.labels,
        len(table),
        flagged,
        skipped,
        seconds,
        len(table) / max(seconds, 1e-9),
        ", ".join(map(str, outputs)),
    )
    return table


def saved_rows(cfg: DictConfig, predictor: Predictor) -> Parts | None:
    """The rows an earlier, killed run of the same configuration measured (``fitnet.parts``),
    saved beside the first output as this run goes; None with ``resume=false``."""
    if not cfg.resume:
        return None
    run = OmegaConf.to_container(cfg, resolve=True)
    for key in ("output", "progress", "resume_rows", "shards", "shard"):  # no number changes
        run.pop(key, None)
    read = [*predictor.paths]
    for key in ("input", *PER_INPUT, "psf"):
        if cfg.get(key) is not None:
            try:
                read += expand(cfg[key])
            except InputError:  # a pattern that matches nothing: reading says so, in its words
                read += as_list(cfg[key])
    run["files"] = [file_stamp(p) for p in read]
    parts = Parts(as_list(cfg.output)[0], run, positive("resume_rows", cfg.resume_rows))
    parts.load()
    return parts


def measured_rows(table, labels) -> np.ndarray:
    """Rows (bool) with at least one label measured (a finite value)."""
    columns = [
        np.isfinite(np.asarray(table[c], dtype=float)) for c in labels if c in table.colnames
    ]
    return np.logical_or.reduce(columns) if columns else np.zeros(len(table), dtype=bool)


def why_unmeasured(table) -> str:
    """The commonest flag bit of the rows, with how many rows and the first row's problem."""
    counts = Counter(name for flag in table["flag"] for name in flag_names(int(flag)))
    if not counts:
        return "no flag set"
    name, count = counts.most_common(1)[0]
    first = next(
        str(p) for f, p in zip(table["flag"], table["problem"], strict=True) if int(f) & BITS[name]
    )
    return f"{name} on {count} of {len(table)} rows; first: {first}"


def load_predictor(cfg: DictConfig) -> Predictor:
    """The checkpoint(s) ``cfg.ckpt`` on ``cfg.device``, with ``cfg.threads`` CPU threads."""
    threads = set_threads(cfg.threads)
    log.info("%d CPU thread(s) (threads=%s)", threads, cfg.threads)
    return Predictor(
        checkpoint_paths(cfg.ckpt), resolve_device(cfg.device), cfg.amp, cfg.ensemble, cfg.backend
    )


def settings(cfg: DictConfig, predictor: Predictor, header) -> Settings:
    """The measurement's settings of ``cfg``: the fit, the checks, the batch size, and for the
    generalist the zero point and gain (given, else the first image's header)."""
    zero_point = None
    if predictor.needs_psf:
        zero_point = zero_point_of(header, cfg.get("zero_point"))
        if zero_point is None:
            log.warning("no zero point (zero_point=, or a %s header keyword): the catalogue "
                        "gives flux in the images' units, and no mag",
                        "/".join(ZERO_POINT_KEYWORDS[:3]))  # fmt: skip
    return Settings(cfg.fit, cfg.quality, zero_point, cfg.get("gain"),
                    int(cfg.batch_size[predictor.device.type]))  # fmt: skip
