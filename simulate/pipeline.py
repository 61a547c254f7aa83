"""Run a simulation end to end, resumably.

1. Galaxies are taken in windows of ``render.sort_window`` consecutive global indices; within
   a window their parameters are drawn and they are ordered by Sersic index and cut into blocks
   of ``render.block_size``. Consecutive galaxies in a block share n (GalSim builds one Sersic
   lookup table per n and caches only 100), which is most of the speed-up over a naive loop.
2. Worker processes render blocks into part files (``<out_dir>/.parts-<digest>/``), each
   written under a temporary name and renamed. A killed run leaves only finished parts; the
   same command later renders just the missing ones.
3. When every part exists the three split files are assembled in global-index order (temporary
   names, then renamed), the parts are removed and a montage PNG is written.

Every galaxy depends only on (master seed, global index), so the files are bit-identical for
any number of workers and after any interruption. Parts of one run could equally be rendered
by several jobs sharing ``out_dir``: ``shards=K shard=i`` renders every K-th block and stops;
the same command without ``shard`` renders whatever is missing and assembles.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import multiprocessing as mp
import shutil
import time
from contextlib import ExitStack
from pathlib import Path

import galsim
import h5py
import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from sersic_runtime.cores import usable_cores
from sersic_runtime.files import atomic_path

from .bounds import fisher_matrix, label_bounds
from .config import split_ranges, validate
from .io import SPLITS, create_split, instrument_attrs, read_attrs
from .noise import NOISE_DESCRIPTIONS, CCDModel, matched_filter_snr, noise_model
from .priors import (
    FIT_LABELS,
    TABLE_COLUMNS,
    ReferenceTable,
    draw_companions,
    draw_parameters,
    n_grid,
)
from .psf_family import PSF_COLUMNS, draw_psf, psf_image
from .render import StampRenderer, flux_from_mag

log = logging.getLogger(__name__)

#: Keys of the configuration that determine the data (not where or how fast it is made).
DATA_KEYS = ("instrument", "prior", "render", "n", "seed", "splits", "bounds")


def data_config(cfg: DictConfig) -> DictConfig:
    # noiseless=true adds a dataset; without it the data, and so the digest, is as it always was
    # so do companions (companions.mean_count > 0)
    optional = ["noiseless"] if cfg.get("noiseless") else []
    if companions_of(cfg) is not None:
        optional.append("companions")
    if table_file(cfg):
        optional.append("prior_table")
    if noise_file(cfg):
        optional.append("noise")
    if cfg.get("psf_family") is not None:
        optional.append("psf_family")
    return OmegaConf.masked_copy(cfg, [*DATA_KEYS, *optional])


def config_digest(cfg: DictConfig) -> str:
    """Short hash of the data-defining configuration; names the part folder, stored in files."""
    text = OmegaConf.to_yaml(data_config(cfg), resolve=True, sort_keys=True)
    for path in (cfg.instrument.psf.get("file"), table_file(cfg), noise_file(cfg)):
        if path:  # a PSF image or a reference table: its contents define the data, not its name
            text += hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def noise_file(cfg: DictConfig) -> str | None:
    """The weight map or blank patch of a noise model other than ``ccd``, or None."""
    noise = cfg.get("noise")
    return None if noise is None or noise.model == "ccd" else noise.file


def table_file(cfg: DictConfig) -> str | None:
    """The reference table of the joint prior (``prior_table.file``), or None."""
    return (cfg.get("prior_table") or {}).get("file")


@functools.lru_cache(maxsize=4)
def reference_table(file: str, stamp: float, jitter: tuple, prior_yaml: str) -> ReferenceTable:
    """The table of ``file`` (modified at ``stamp``), read once per process."""
    prior = OmegaConf.create(prior_yaml)
    return ReferenceTable.read(file, dict(zip(TABLE_COLUMNS, jitter, strict=True)), prior)


def table_of(cfg: DictConfig) -> ReferenceTable | None:
    file = table_file(cfg)
    if not file:
        return None
    jitter = tuple(float(cfg.prior_table.jitter[c]) for c in TABLE_COLUMNS)
    return reference_table(
        str(file), Path(file).stat().st_mtime, jitter, OmegaConf.to_yaml(cfg.prior)
    )


def resolve_workers(workers: int) -> int:
    """``workers``, or with 0 the cores this process may use."""
    return workers if workers > 0 else usable_cores()


def windows(n: int, sort_window: int) -> list[tuple[int, int]]:
    return [(start, min(n, start + sort_window)) for start in range(0, n, sort_window)]


def plan_window(cfg: DictConfig, start: int, stop: int) -> tuple[dict, list[np.ndarray]]:
    """Parameters of galaxies [start, stop) and their blocks (positions within the window).

    ``params["crb"]`` marks the galaxies of the splits that get Cramer-Rao bounds.
    """
    indices = np.arange(start, stop)
    params = draw_parameters(cfg.seed, indices, cfg.prior, cfg.render.n_grid_points, table_of(cfg))
    ranges = split_ranges(cfg.n, cfg.splits)
    params["crb"] = np.zeros(stop - start, dtype=bool)
    for name in cfg.bounds.splits:
        lo, hi = ranges[name]
        params["crb"] |= (params["index"] >= lo) & (params["index"] < hi)
    order = np.argsort(params["n"], kind="stable")
    size = cfg.render.block_size
    return params, [order[i : i + size] for i in range(0, len(order), size)]


def render_block(
    renderer: StampRenderer,
    noise: CCDModel,
    params: dict,
    bounds=None,
    n_grid=None,
    companions=None,
    psf_family=None,
) -> tuple[np.ndarray, np.ndarray, dict, np.ndarray | None]:
    """Noisy float32 stamps, the same without noise, the derived columns and the PSF images
    (or None) for the galaxies described by ``params``, with the noise of ``noise``
    (``noise.noise_model``).

    Galaxies with ``params["crb"]`` true also get Cramer-Rao bounds (``bounds`` holds the
    finite-difference steps, ``n_grid`` the render n grid). With ``companions`` (a dict of the
    master ``seed``, the ``prior`` and the ``companions`` config), each stamp also holds the
    galaxy's companions (``priors.draw_companions``); /noiseless and the derived columns (flux
    in the stamp, S/N, bounds) are those of the galaxy alone, and ``n_companions`` counts them.
    With ``psf_family`` (the master ``seed`` and the ``psf_family`` config), each galaxy and its
    companions are rendered with a PSF of its own (``psf_family.draw_psf``), whose image and
    columns are returned too.
    """
    m, s = len(params["index"]), renderer.stamp_size
    psfs = None
    if psf_family is not None:
        size = int(psf_family["spec"].image_size_px)
        psfs = np.empty((m, size, size), dtype=np.float32)
    images, noiseless = np.empty((2, m, s, s), dtype=np.float32)
    extra = {name: np.empty(m) for name in ("flux", "flux_stamp", "snr", "x_center", "y_center")}
    extra.update({f"crb_{label}": np.full(m, np.nan) for label in FIT_LABELS})
    if noise.name == "map":  # the stamp's own depth
        extra["background_rms"] = np.array([noise.draw_rms(s) for s in params["noise_seed"]])
    crb = params.get("crb", np.zeros(m, dtype=bool))
    for k in range(m):
        p = {name: params[name][k] for name in ("n", "re", "q", "pa", "mag", "dx", "dy", "size")}
        rms = extra["background_rms"][k] if "background_rms" in extra else noise.background_rms
        if psfs is not None:
            psf, columns = draw_psf(psf_family["seed"], params["index"][k], psf_family["spec"])
            renderer.set_psf(psf)
            psfs[k] = psf_image(psf, psfs.shape[1])
            for name, value in columns.items():
                extra.setdefault(name, np.empty(m, dtype=PSF_COLUMNS[name][0]))[k] = value
        stamp = renderer.render(**p)
        if crb[k]:
            fisher = fisher_matrix(renderer, noise, p, bounds, n_grid, base=stamp, rms=rms)
            for label, value in label_bounds(fisher, p["n"]).items():
                extra[f"crb_{label}"][k] = value
        extra["flux"][k] = flux_from_mag(p["mag"], renderer.zero_point)
        extra["flux_stamp"][k] = stamp.sum()
        extra["snr"][k] = matched_filter_snr(stamp, noise.variance(stamp, rms))
        extra["x_center"][k], extra["y_center"][k] = renderer.centre(p["dx"], p["dy"], p["size"])
        light = stamp
        if companions is not None:
            others = draw_companions(
                companions["seed"], params["index"][k], p["mag"], companions["prior"],
                companions["companions"], n_grid,
            )  # fmt: skip
            extra.setdefault("n_companions", np.zeros(m, dtype=np.int32))[k] = len(others)
            for c in others:
                light = light + renderer.render(
                    **{**c, "dx": p["dx"] + c["dx"], "dy": p["dy"] + c["dy"], "size": p["size"]}
                )
        images[k] = noise.add(light, params["noise_seed"][k], rms)
        noiseless[k] = stamp
        if not np.isfinite(images[k]).all():  # never a NaN stamp in the files
            raise RuntimeError(f"galaxy {params['index'][k]} rendered non-finite pixels: {p}")
    return images, noiseless, extra, psfs


def part_paths(part_dir: Path, window: int, block: int) -> tuple[Path, Path]:
    stem = part_dir / f"w{window:06d}-b{block:06d}"
    return stem.with_suffix(".npy"), stem.with_suffix(".npz")


def noiseless_path(image_path: Path) -> Path:
    """The part file of the noiseless stamps beside a part's image file."""
    return image_path.with_name(image_path.stem + "-noiseless.npy")


def psf_path(image_path: Path) -> Path:
    """The part file of the PSF images (``psf_family``) beside a part's image file."""
    return image_path.with_name(image_path.stem + "-psf.npy")


# Per-process state of the rendering workers (built once per process by _init_worker).
_WORKER: dict = {}


def _init_worker(
    instrument: dict,
    render: dict,
    bounds: dict,
    n_grid,
    noiseless: bool,
    companions,
    noise,
    psf_family=None,
) -> None:
    # An initializer that raises makes a Pool start new workers for ever: keep the error and
    # raise it from the first task instead, which stops the run.
    try:
        # GalSim's OpenMP threads only oversubscribe the cores that the worker processes share.
        galsim.set_omp_threads(1)
        instrument, render = OmegaConf.create(instrument), OmegaConf.create(render)
        _WORKER["noise"] = noise
        _WORKER["renderer"] = StampRenderer(instrument, render)
        _WORKER["bounds"], _WORKER["n_grid"] = OmegaConf.create(bounds), n_grid
        _WORKER["noiseless"] = noiseless
        _WORKER["companions"] = companions_state(companions)
        _WORKER["psf_family"] = psf_family and {**psf_family,
                                                "spec": OmegaConf.create(psf_family["spec"])}  # fmt: skip
    except Exception as err:  # noqa: BLE001 - re-raised by _render_part
        _WORKER["error"] = err


def companions_state(companions: dict | None) -> dict | None:
    """The worker's companion settings (seed, prior, companions) as OmegaConf objects."""
    if companions is None:
        return None
    return {**companions, "prior": OmegaConf.create(companions["prior"]),
            "companions": OmegaConf.create(companions["companions"])}  # fmt: skip


def psf_family_of(cfg: DictConfig) -> dict | None:
    """What the workers need to draw a PSF per galaxy (``psf_family``), or None."""
    if cfg.get("psf_family") is None:
        return None
    return {"seed": int(cfg.seed), "spec": OmegaConf.to_container(cfg.psf_family, resolve=True)}


def companions_of(cfg: DictConfig) -> dict | None:
    """What the workers need to draw companions, or None when there are none
    (``companions.mean_count`` 0, or a configuration from before the option)."""
    if cfg.get("companions") is None or not cfg.companions.mean_count > 0:
        return None
    return {
        "seed": int(cfg.seed),
        "prior": OmegaConf.to_container(cfg.prior, resolve=True),
        "companions": OmegaConf.to_container(cfg.companions, resolve=True),
    }


def _render_part(task) -> int:
    if "error" in _WORKER:
        raise RuntimeError(f"a rendering worker could not start: {_WORKER['error']}")
    part_dir, window, block, positions, params = task
    images, noiseless, extra, psfs = render_block(
        _WORKER["renderer"],
        _WORKER["noise"],
        params,
        _WORKER["bounds"],
        _WORKER["n_grid"],
        _WORKER["companions"],
        _WORKER.get("psf_family"),
    )
    params = {k: v for k, v in params.items() if k != "crb"}
    image_path, meta_path = part_paths(part_dir, window, block)
    with atomic_path(image_path) as tmp, open(tmp, "wb") as fh:
        np.save(fh, images)
    if _WORKER["noiseless"]:
        with atomic_path(noiseless_path(image_path)) as tmp, open(tmp, "wb") as fh:
            np.save(fh, noiseless)
    if psfs is not None:
        with atomic_path(psf_path(image_path)) as tmp, open(tmp, "wb") as fh:
            np.save(fh, psfs)
    # The metadata file is written last: its presence marks the part as finished.
    with atomic_path(meta_path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, position=positions, **params, **extra)
    return len(positions)


def _existing_dataset_digest(out_dir: Path) -> str | None:
    paths = [out_dir / f"{split}.h5" for split in SPLITS]
    if not all(p.exists() for p in paths):
        return None
    digests = {read_attrs(p).get("config_digest") for p in paths}
    return digests.pop() if len(digests) == 1 else "mixed"


def run_simulation(
    cfg: DictConfig, out_dir: str | Path | None = None, progress: bool = True
) -> dict:
    """Validate ``cfg``, render every galaxy, write the split files; return a summary dict.

    ``out_dir`` overrides ``cfg.out_dir`` (the Hydra entry point uses it for multiruns).
    """
    cfg = validate(cfg)
    out_dir = Path(out_dir if out_dir is not None else cfg.out_dir)
    digest = config_digest(cfg)
    ranges = split_ranges(cfg.n, cfg.splits)
    files = [out_dir / f"{split}.h5" for split in SPLITS]
    existing = _existing_dataset_digest(out_dir)
    if existing == digest:
        log.info(
            "%s already holds this data set (config digest %s); nothing to do", out_dir, digest
        )
        return {"galaxies": 0, "seconds": 0.0, "rate": 0.0, "files": files, "skipped": True}
    if existing is not None and not cfg.overwrite:
        raise FileExistsError(
            f"{out_dir} already holds a data set made with another configuration "
            f"(digest {existing}, this one {digest}); choose another out_dir or pass overwrite=true"
        )

    part_dir = parts_folder(cfg, out_dir, digest)
    workers = resolve_workers(cfg.workers)
    log.info(
        "simulating %d galaxies (train/val/test %s), master seed %d, %d workers%s -> %s",
        cfg.n,
        {k: v[1] - v[0] for k, v in ranges.items()},
        cfg.seed,
        workers,
        "" if cfg.shard is None else f", shard {cfg.shard} of {cfg.shards}",
        out_dir,
    )
    start_time = time.perf_counter()
    noise = noise_model(cfg)  # reads a weight map or blank patch once
    rendered = _render_missing_parts(cfg, part_dir, workers, progress, noise)
    render_seconds = time.perf_counter() - start_time
    if cfg.shard is not None:
        log.info(
            "shard %d of %d: rendered %d galaxies in %.1f s into %s; once every shard has run, "
            "the same command without shard= assembles the splits",
            cfg.shard, cfg.shards, rendered, render_seconds, part_dir,
        )  # fmt: skip
        return {"galaxies": rendered, "seconds": render_seconds, "skipped": False,
                "rate": rendered / render_seconds if render_seconds > 0 else 0.0, "files": []}  # fmt: skip
    _assemble(cfg, part_dir, out_dir, ranges, digest, noise)
    shutil.rmtree(part_dir)
    if cfg.montage:
        from .plots import save_montage

        save_montage(out_dir / "train.h5", out_dir / "montage.png", cfg.montage)
        files.append(out_dir / "montage.png")
    seconds = time.perf_counter() - start_time
    summary = {
        "galaxies": rendered,
        "seconds": seconds,
        "rate": rendered / render_seconds if render_seconds > 0 else 0.0,
        "files": files,
        "skipped": False,
    }
    log.info(
        "rendered %d galaxies in %.1f s (%.1f galaxies/s while rendering; %.1f s in total); wrote %s",
        rendered,
        render_seconds,
        summary["rate"],
        seconds,
        ", ".join(str(f) for f in files),
    )
    return summary


def parts_folder(cfg: DictConfig, out_dir: Path, digest: str) -> Path:
    """The folder of this configuration's part files, made if needed.

    Refuses parts of another configuration in ``out_dir`` (a shard run with other settings, or
    an abandoned run: removed with ``overwrite=true``) and, for a shard, parts being rendered
    with another number of shards.
    """
    part_dir = out_dir / f".parts-{digest}"
    for other in sorted(out_dir.glob(".parts-*")):
        if other == part_dir:
            continue
        if not cfg.overwrite:
            raise FileExistsError(
                f"{out_dir} holds the parts of a run with another configuration ({other.name}; "
                f"this one is .parts-{digest}): give every shard the same settings, or pass "
                "overwrite=true to remove them"
            )
        shutil.rmtree(other)
    part_dir.mkdir(parents=True, exist_ok=True)
    manifest = part_dir / "shards.json"
    if cfg.shard is not None:
        if manifest.exists():
            shards = json.loads(manifest.read_text())["shards"]
            if shards != cfg.shards:
                raise FileExistsError(
                    f"shards={cfg.shards} is not allowed: the parts in {part_dir} are being "
                    f"rendered by shards={shards} jobs; give every shard the same shards="
                )
        else:
            with atomic_path(manifest) as tmp:
                tmp.write_text(json.dumps({"shards": cfg.shards}))
    return part_dir


def _render_missing_parts(
    cfg: DictConfig, part_dir: Path, workers: int, progress: bool, noise: CCDModel
) -> int:
    """Render every block whose part file is missing; return the number of galaxies rendered."""
    plans, ordinal, share = [], 0, 0
    for window, (start, stop) in enumerate(windows(cfg.n, cfg.render.sort_window)):
        params, blocks = plan_window(cfg, start, stop)
        todo = []
        for b, pos in enumerate(blocks):
            # A shard takes every shards-th block (in plan order): an even share of each n.
            mine = cfg.shard is None or ordinal % cfg.shards == cfg.shard
            ordinal += 1
            if not mine:
                continue
            share += len(pos)
            if not part_paths(part_dir, window, b)[1].exists():
                todo.append((part_dir, window, b, pos, {k: v[pos] for k, v in params.items()}))
        plans.append(todo)
    remaining = sum(len(task[3]) for todo in plans for task in todo)
    if remaining < share:
        log.info("resuming: %d of %d galaxies already rendered", share - remaining, share)
    init_args = (
        OmegaConf.to_container(cfg.instrument, resolve=True),
        OmegaConf.to_container(cfg.render, resolve=True),
        OmegaConf.to_container(cfg.bounds, resolve=True),
        n_grid(cfg.prior.n, cfg.render.n_grid_points),
        cfg.noiseless,
        companions_of(cfg),
        noise,
        psf_family_of(cfg),
    )
    bar = tqdm(total=remaining, unit="gal", desc="render", disable=not progress, smoothing=0.05)
    with ExitStack() as stack:
        if workers == 1:
            _init_worker(*init_args)
            mapper = map
        else:
            pool = stack.enter_context(
                mp.get_context().Pool(workers, initializer=_init_worker, initargs=init_args)
            )
            mapper = pool.imap_unordered
        for todo in plans:
            for count in mapper(_render_part, todo):
                bar.update(count)
    bar.close()
    return remaining


def _assemble(
    cfg: DictConfig, part_dir: Path, out_dir: Path, ranges: dict, digest: str, noise: CCDModel
) -> None:
    """Copy the finished parts into train/val/test.h5 in global-index order."""
    renderer_attrs = instrument_attrs(
        cfg.instrument, StampRenderer(cfg.instrument, cfg.render).psf, noise.background_rms
    )
    if noise.name != "ccd":  # the files of the CCD model stay as they always were
        renderer_attrs.update(noise.attrs(), noise=NOISE_DESCRIPTIONS[noise.name])
    # Only what defines the data: where and how fast it was made must not change the bytes.
    config_yaml = OmegaConf.to_yaml(data_config(cfg), resolve=True)
    stamp = cfg.render.stamp_size
    with ExitStack() as stack:
        handles = {}
        for split, (lo, hi) in ranges.items():
            tmp = stack.enter_context(atomic_path(out_dir / f"{split}.h5"))
            attrs = dict(
                renderer_attrs,
                split=split,
                index_start=lo,
                index_stop=hi,
                n_total=cfg.n,
                master_seed=cfg.seed,
                config_digest=digest,
                n_grid_points=cfg.render.n_grid_points,
            )
            handles[split] = stack.enter_context(
                create_split(
                    tmp,
                    hi - lo,
                    stamp,
                    attrs,
                    config_yaml,
                    cfg.noiseless,
                    companions=companions_of(cfg) is not None,
                    noise=noise,
                    psf_size=cfg.psf_family.image_size_px if cfg.get("psf_family") else None,
                )  # fmt: skip
            )
        for window, (start, stop) in enumerate(windows(cfg.n, cfg.render.sort_window)):
            _assemble_window(part_dir, window, start, stop, ranges, handles)
        for f in handles.values():
            f.flush()
        # Leaving the ExitStack closes the files, then renames them in reverse order of opening.


def _assemble_window(part_dir, window, start, stop, ranges, handles: dict[str, h5py.File]) -> None:
    """Copy one window's parts, a block at a time, to their rows in the split files.

    Every image chunk was allocated when the files were created, so writing rows in block (n)
    order gives the same bytes as writing them in index order, and memory holds one block.
    """
    names = list(ranges)
    bounds = np.array([ranges[name][0] for name in names[1:]])
    m = stop - start
    seen = np.zeros(m, dtype=bool)
    columns: dict[str, np.ndarray] = {}
    for meta_path in sorted(part_dir.glob(f"w{window:06d}-b*.npz")):
        with np.load(meta_path) as meta:
            pos = meta["position"]
            for name in meta.files:
                if name != "position":
                    columns.setdefault(name, np.empty(m, dtype=meta[name].dtype))[pos] = meta[name]
        stacks = {"images": np.load(meta_path.with_suffix(".npy"))}
        if "noiseless" in next(iter(handles.values())):
            stacks["noiseless"] = np.load(noiseless_path(meta_path.with_suffix(".npy")))
        if "psf" in next(iter(handles.values())):
            stacks["psf"] = np.load(psf_path(meta_path.with_suffix(".npy")))
        for row, index in enumerate(start + pos):
            split = names[np.searchsorted(bounds, index, side="right")]
            for name, stack in stacks.items():
                handles[split][name][index - ranges[split][0]] = stack[row]
        seen[pos] = True
    if not seen.all():
        missing = start + np.flatnonzero(~seen)
        raise RuntimeError(f"parts in {part_dir} lack galaxies {missing[:10].tolist()}")
    for split, (lo, hi) in ranges.items():
        a, b = max(lo, start), min(hi, stop)
        if a < b:
            for name, values in columns.items():
                handles[split]["params"][name][a - lo : b - lo] = values[a - start : b - start]
