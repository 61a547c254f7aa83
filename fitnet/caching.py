"""The frozen-network cache: what a ``PhotometricRefiner`` with a frozen network trains on.

With the network frozen, its outputs and the photometry of a stamp never change, so they are
computed once per stamp (``encode_views``) and the refiner trains on them. The cache is built
one data file at a time. With ``cache_dir`` set, each file's part is saved there as soon as it
is computed, under a key of everything it depends on (the network's weights, the feature
statistics, the label scaler, the file and, for a training file, the training files before it,
the views and the seed of their random draws: ``cache_seed``, or ``seed``). A later run loads
the parts it finds: a sweep of the refiner's width, learning rate, epochs or (with
``cache_seed`` fixed) seed recomputes nothing, a run killed while caching resumes at the file
it was on, and a run with one more data folder at the end of ``data_dir`` computes only that
folder's files. Computing costs about 6 ms per stamp view on two CPU cores (104 minutes for
the shipped refiner's 1,084,900 training and validation views).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch

from sersic_runtime.files import atomic_path

from .compute import amp_enabled, autocast, memory_layout
from .data import Batches, describe_split, dihedral

log = logging.getLogger(__name__)

#: Data-file attributes that identify the galaxies of a split file (with its size and mtime).
FILE_KEYS = ("config_digest", "master_seed", "index_start", "index_stop", "n_images")


def encode_views(
    model, batches: Batches, cfg, views: int = 1, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``model.encode`` of every stamp of ``batches`` (in eval mode), shape (views, stamps,
    features), and the stamps' labels. The first view of each stamp is the stamp itself; each
    further one a random flip or rotation of it (from ``generator``, one draw per stamp), whose
    network outputs differ while its photometry does not: that is measured once per stamp and
    repeated. With fresh noise (``batches.fresh_noise``) every view also has its own noise, and
    its own photometry."""
    model.eval()
    photometry, outputs, labels = [[] for _ in range(views)], [[] for _ in range(views)], []
    with torch.no_grad(), autocast(batches.device, cfg):
        for view in range(views):
            for x, y in batches.iterate(None):
                if view:
                    x = dihedral(x, generator)
                else:
                    labels.append(y)
                if view == 0 or batches.fresh_noise:
                    photometry[view].append(model.standard_photometry(x))
                outputs[view].append(model.network_outputs(memory_layout(x, cfg)).float())
    if not batches.fresh_noise:
        photometry = [photometry[0]] * views
    encoded = torch.stack(
        [
            torch.cat([torch.cat(o), torch.cat(p)], 1)
            for o, p in zip(outputs, photometry, strict=True)
        ]
    )
    return encoded, torch.cat(labels)


def common_key(model, model_cfg: dict, scaler, cfg, device) -> tuple[hashlib._Hash, dict]:
    """A hash of what every part of the cache depends on (the network's weights and the feature
    statistics, then the rest as JSON), and that rest, to be written into each part."""
    digest = hashlib.sha256()
    tensors = {**model.network.state_dict(), "image_norm": model.image_norm}
    tensors.update(feature_mean=model.feature_mean, feature_std=model.feature_std)
    for name, tensor in sorted(tensors.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    inputs = {
        "network": model_cfg.get("network"),
        "photometry": model_cfg.get("photometry"),
        "label_scaler": scaler.state(),
        "views": cfg.cache_views,
        "fresh_noise": cfg.fresh_noise,
        "seed": cache_seed(cfg),
        "bf16": amp_enabled(cfg, device),
        "channels_last": cfg.channels_last,
        "device": device.type,
    }
    return digest, inputs


def cache_seed(cfg) -> int:
    """The seed of the cache's random views and noise: ``cache_seed``, or ``seed`` when null."""
    return cfg.seed if cfg.cache_seed is None else cfg.cache_seed


def part_key(common: hashlib._Hash, inputs: dict, split: str, files: list[Path]) -> tuple[str, str]:
    """16 hex digits naming the part of ``files[-1]``, and (as JSON) what it was made of.
    ``files``: that file, after the training files whose draws come before its own."""
    inputs = {**inputs, "split": split, "files": [describe_file(path) for path in files]}
    text = json.dumps(inputs, sort_keys=True, default=str)
    digest = common.copy()
    digest.update(text.encode())
    return digest.hexdigest()[:16], text


def describe_file(path: Path) -> dict:
    """What identifies a data file's contents for the cache key: path, size, mtime, FILE_KEYS."""
    stat, attrs = path.stat(), describe_split(path)
    return {
        "path": str(path.resolve()),
        "bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        **{key: attrs.get(key) for key in FILE_KEYS},
    }


def frozen_batches(
    model, model_cfg: dict, scaler, files: dict[str, list[Path]], batches_of: Callable, cfg, device
) -> tuple[Batches, Batches]:
    """Training and validation batches of the refiner inputs of ``files`` (split -> paths),
    ``cfg.cache_views`` views of each training stamp and one of each validation stamp.
    ``batches_of(split, noise_generator, paths)`` gives the batches of some of a split's files.

    One part per file, computed in order with one generator for the views and one for fresh
    noise, so a file's draws follow those of the files before it; with ``cfg.cache_dir`` each
    part is loaded from there when saved by an earlier run (with the generators' states after
    it), else computed and saved. The parts are joined view by view: all files' first views,
    then all files' second views, ..."""
    common, inputs = common_key(model, model_cfg, scaler, cfg, device)
    # Their own generators: the cache is the same when a resumed run rebuilds it.
    generators = {
        "views": torch.Generator().manual_seed(cache_seed(cfg)),
        "noise": torch.Generator(device=device).manual_seed(cache_seed(cfg)),
    }
    joined = {}
    for split, views, size in (
        ("train", cfg.cache_views, cfg.batch_size),
        ("val", 1, cfg.data.eval_batch_size),
    ):
        parts = []
        for i, path in enumerate(files[split]):
            # validation parts draw nothing (one view, stored noise): they depend on their file only
            depends_on = files[split][: i + 1] if split == "train" else [path]
            key, text = part_key(common, inputs, split, depends_on)
            parts.append(
                cached_part(model, split, path, views, key, text, generators, batches_of, cfg)
            )
        encoded = torch.cat([part[0][view] for view in range(views) for part in parts])
        labels = torch.cat([part[1] for part in parts] * views)
        joined[split] = Batches(encoded.to(device), labels.to(device), size, device)
    return joined["train"], joined["val"]


def cached_part(model, split, path, views, key, text, generators, batches_of, cfg):
    """(encoded views, labels) of one file: loaded from ``cfg.cache_dir`` if saved there under
    ``key``, else computed (and saved when ``cfg.cache_dir`` is set). Either way ``generators``
    end in the state after this file's draws."""
    saved_path = Path(cfg.cache_dir) / f"refiner-part-{key}.pt" if cfg.cache_dir else None
    if saved_path is not None and saved_path.is_file():
        saved = torch.load(saved_path, map_location="cpu", weights_only=True)
        for name, generator in generators.items():
            generator.set_state(saved["rng"][name])
        log.info(
            "frozen network: refiner inputs of %s (%s) loaded from %s", path, split, saved_path
        )
        return saved["encoded"], saved["labels"]
    t0 = time.perf_counter()
    batches = batches_of(split, generators["noise"], [path])
    encoded, labels = encode_views(model, batches, cfg, views, generators["views"])
    encoded, labels = encoded.cpu(), labels.cpu()
    log.info(
        "frozen network: its outputs and the photometry of %d views of %s (%s) computed in %.1fs",
        encoded.shape[0] * encoded.shape[1],
        path,
        split,
        time.perf_counter() - t0,
    )
    if saved_path is not None:
        saved_path.parent.mkdir(parents=True, exist_ok=True)
        rng = {name: generator.get_state() for name, generator in generators.items()}
        with atomic_path(saved_path) as tmp:
            # `inputs`: what the key was made of, for a reader
            part = {"key": key, "inputs": text, "encoded": encoded, "labels": labels, "rng": rng}
            torch.save(part, tmp)
        log.info("saved to %s", saved_path)
    return encoded, labels
