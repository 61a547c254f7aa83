"""The pyimfit baseline's fits of every stamp of a data file, in parallel and resumable
(``python -m fitnet.baseline``: its options in ``fitnet/baseline.py`` and conf/baseline.yaml)."""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import shutil
import time
from pathlib import Path

import h5py
import numpy as np
from astropy.table import Table
from omegaconf import DictConfig
from tqdm import tqdm

from sersic_runtime.options import as_list
from simulate.io import instrument_attrs
from simulate.noise import background_rms
from simulate.pipeline import resolve_workers
from simulate.priors import FIT_LABELS as LABELS
from simulate.psf_record import PSFRecordError, build_psf, from_record
from simulate.stamps import placement

from .catalogue import UNITS, write_table
from .data import DataError, describe_split
from .flags import BITS
from .imfit import fit_sersic, psf_image, require_pyimfit
from .inputs import hdf5_pixel_scale, scales_differ

log = logging.getLogger(__name__)

_STATE: dict = {}


def data_psf_and_instrument(path: Path, instrument: DictConfig | None = None):
    """The true PSF image (no pixel) and the instrument attributes for fitting a file in the data layout.

    This project's files carry both (the root attributes, the PSF as a record that is read as
    data: ``simulate.psf_record``), and those are used; nothing of the file's ``/config`` is
    built. A file from elsewhere (no ``/config``) is fitted with ``instrument`` (a
    conf/instrument config), whose pixel scale must match the file's where the file gives one.
    """
    with h5py.File(path, "r") as f:
        ours = "config" in f
    if ours:
        attrs = describe_split(path)
        try:
            psf = from_record(attrs.get("psf", ""), f"{path}: root attribute psf")
        except PSFRecordError as err:
            raise DataError(str(err)) from None
        return psf_image(psf.withFlux(1.0), attrs["pixel_scale_arcsec"]), attrs
    if instrument is None:
        raise DataError(
            f"{path} has no /config, so not the true PSF and noise of its simulation: pass "
            "instrument=<name> (conf/instrument, e.g. instrument=candels_h) to fit it with "
            "that instrument's"
        )
    attrs = describe_split(path, required=())
    scale = hdf5_pixel_scale(attrs)
    if scales_differ(scale, instrument.pixel_scale):
        raise DataError(
            f"{path}: pixel scale {scale:.5g} arcsec/pixel differs from instrument "
            f"{instrument.name}'s {instrument.pixel_scale:.5g}"
        )
    psf = build_psf(instrument.psf).withFlux(1.0)
    attrs.update(instrument_attrs(instrument, psf, background_rms(instrument)))
    return psf_image(psf, attrs["pixel_scale_arcsec"]), attrs


def _init(path: str, psf: np.ndarray, attrs: dict, n_start: float) -> None:
    """Per fitting process: the data file, its PSF image and instrument attributes."""
    _STATE.update(file=h5py.File(path, "r"), psf=psf, attrs=attrs, n_start=n_start)


def _fit_chunk(task):
    part, rows = task
    f = _STATE["file"]
    images = f["images"][rows[0] : rows[-1] + 1]
    sizes = f["params/size"][rows[0] : rows[-1] + 1] if "params/size" in f else None
    depths = (
        f["params/background_rms"][rows[0] : rows[-1] + 1] if "params/background_rms" in f else None
    )
    out = {name: np.empty(len(rows)) for name in (*LABELS, "seconds")}
    out["ok"] = np.empty(len(rows), dtype=bool)
    for k, image in enumerate(images):
        if sizes is not None and sizes[k] < image.shape[0]:
            # a padded stamp: fit only the cutout as rendered, as one would fit a real small cutout
            _, keep = placement(int(sizes[k]), image.shape[0])
            image = image[keep, keep]
        rms = None if depths is None else float(depths[k])  # the stamp's own depth (noise=map)
        result = fit_sersic(image, _STATE["psf"], _STATE["attrs"], _STATE["n_start"], rms)
        for name in out:
            out[name][k] = result[name]
    tmp = part.with_name(part.name + ".partial.npz")
    np.savez(tmp, rows=rows, **out)
    os.replace(tmp, part)
    return len(rows)


def fit_file(cfg: DictConfig) -> Table:
    """Fit every stamp (or the first ``limit``) of ``cfg.data``; write and return the table."""
    require_pyimfit()
    data = Path(cfg.data)
    # read once, before any fit (fails early without a PSF); handed to every process
    psf, attrs = data_psf_and_instrument(data, cfg.get("instrument"))
    count = attrs["n_images"] if cfg.limit is None else min(int(cfg.limit), attrs["n_images"])
    outputs = [Path(p) for p in as_list(cfg.output)]
    parts = outputs[0].with_name(f".{outputs[0].name}.parts-{data.stem}-{count}")
    parts.mkdir(parents=True, exist_ok=True)
    chunks = [np.arange(lo, min(lo + cfg.chunk, count)) for lo in range(0, count, cfg.chunk)]
    todo = [
        (parts / f"{k:06d}.npz", rows)
        for k, rows in enumerate(chunks)
        if not (parts / f"{k:06d}.npz").exists()
    ]
    workers = resolve_workers(cfg.workers)
    log.info(
        "fitting %d stamps of %s with pyimfit on %d processes (%d already done)",
        count,
        data,
        workers,
        count - sum(len(r) for _, r in todo),
    )
    start = time.perf_counter()
    with tqdm(
        total=count,
        initial=count - sum(len(r) for _, r in todo),
        unit="fit",
        disable=not cfg.progress,
    ) as bar:
        if workers == 1:  # in this process: simpler to debug, and no pool to start
            _init(str(data), psf, attrs, cfg.n_start)
            for task in todo:
                bar.update(_fit_chunk(task))
        else:
            with mp.get_context().Pool(
                workers, initializer=_init, initargs=(str(data), psf, attrs, cfg.n_start)
            ) as pool:
                for done in pool.imap_unordered(_fit_chunk, todo):
                    bar.update(done)
    table = _assemble(parts, len(chunks), data, count)
    for path in outputs:
        write_table(table, path)
    shutil.rmtree(parts)
    failed = int((table["flag"] != 0).sum())
    log.info(
        "%d fits in %.0f s wall, %.2f s per fit on one core; %d did not converge; wrote %s",
        count,
        time.perf_counter() - start,
        float(np.mean(table["seconds"])),
        failed,
        ", ".join(map(str, outputs)),
    )
    return table


def _assemble(parts: Path, n_chunks: int, data: Path, count: int) -> Table:
    loaded = [np.load(parts / f"{k:06d}.npz") for k in range(n_chunks)]
    columns = {name: np.concatenate([part[name] for part in loaded]) for name in loaded[0].files}
    if not np.array_equal(columns["rows"], np.arange(count)):
        raise RuntimeError(f"baseline parts in {parts} do not cover rows 0..{count - 1}")
    table = Table()
    table["row"] = columns["rows"].astype(np.int64)
    table["source"] = [f"{data.name}[{i}]" for i in range(count)]
    for name in LABELS:
        table[name] = columns[name]
        table[name].unit = UNITS[name] or None
    table["seconds"] = columns["seconds"]
    table["seconds"].unit = "s"
    ok = columns["ok"].astype(bool)
    table["flag"] = np.where(ok, 0, BITS["fit_failed"]).astype(np.int32)
    table["problem"] = np.where(ok, "", "fit_failed: imfit did not converge")
    table.meta["fitter"] = (
        "pyimfit: one Sersic, true PSF without pixel response, moment start, known noise"
    )
    return table
