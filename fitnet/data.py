"""Reading the simulator's HDF5 splits for training: checks, normalisation, batching.

Images are normalised as ``asinh(x / (softening * rms)) `` (``rms`` is the background rms of the
data, from the file's attributes) and then standardised with a pixel mean and std measured on
the training split. Pixel values span five decades; the stretch keeps the noise and the core
of a bright galaxy in the same range.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from sersic_runtime.errors import UserError

from .labels import LabelScaler

#: Root attributes a split file must carry for the network to know what its pixels mean.
REQUIRED_ATTRS = ("pixel_scale_arcsec", "background_rms_e_per_s", "zero_point_mag")
#: Attributes in which files used together (train and val, or the folders of one data_dir list)
#: must agree: they fix what a pixel value and a stamp mean.
MATCHING_ATTRS = (
    "stamp_size",
    "pixel_scale_arcsec",
    "background_rms_e_per_s",
    "zero_point_mag",
    "psf",
    "exposure_time_s",
    "sky_level_e_per_s_per_pixel",
    "read_noise_e",
    "noise_model",
    "background_rms_min_e_per_s",
    "background_rms_max_e_per_s",
)
NORM_CHUNK = 1024  # images normalised at a time while loading


class DataError(UserError):
    """A data file is missing, malformed, or does not match the model."""


@dataclass
class ImageNorm:
    """``(asinh(x / (softening * rms)) - mean) / std``; x in e-/s per pixel."""

    rms: float  # e-/s per pixel, background rms of the training data
    softening: float  # in units of rms
    mean: float = 0.0
    std: float = 1.0

    def stretch(self, x):
        lib = torch if isinstance(x, torch.Tensor) else np
        return lib.asinh(x / (self.softening * self.rms))

    def __call__(self, x):
        return (self.stretch(x) - self.mean) / self.std

    def state(self) -> dict:
        return {"rms": self.rms, "softening": self.softening, "mean": self.mean, "std": self.std}

    @classmethod
    def from_state(cls, state: dict) -> ImageNorm:
        return cls(**state)


def data_dirs(data_dir) -> list[str]:
    """The ``data_dir`` option as a list of folders: one folder, or a list of them."""
    if isinstance(data_dir, Sequence) and not isinstance(data_dir, str):
        dirs = [str(d) for d in data_dir]
        if not dirs:
            raise DataError("data_dir=[] names no folder: give a folder or a list of folders")
        return dirs
    return [str(data_dir)]


def split_paths(data_dir, split: str) -> list[Path]:
    """The ``split`` file of each folder of ``data_dir`` (a folder or a list of folders)."""
    return [split_path(d, split) for d in data_dirs(data_dir)]


def split_path(data_dir: str | Path, split: str) -> Path:
    path = Path(data_dir) / f"{split}.h5"
    if not path.exists():
        raise DataError(
            f"{path} does not exist: data_dir={data_dir} must hold train.h5, val.h5 and test.h5 "
            "as written by `python -m simulate` (docs/guide/simulate.md)"
        )
    return path


def open_images(path: Path) -> h5py.File:
    """Open an HDF5 file whose /images is a non-empty (N, height, width) stack, or raise DataError."""
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise DataError(f"{path} is not a readable HDF5 file: {err}") from err
    shape = f["images"].shape if "images" in f else None
    if shape is None or len(shape) != 3 or shape[0] == 0:
        f.close()
        found = "has no /images dataset" if shape is None else f"has /images of shape {shape}"
        raise DataError(
            f"{path} {found}; expected (N, height, width) with N > 0 (docs/contract.md, section 5)"
        )
    return f


def describe_split(
    path: Path, targets: list[str] | None = None, required: Sequence[str] = REQUIRED_ATTRS
) -> dict:
    """Check a split file (square stamps, one ``/params`` value per image for each of
    ``targets``, the root attributes ``required``) and return its root attributes plus
    ``n_images`` and ``stamp_size``."""
    with open_images(path) as f:
        shape = f["images"].shape
        if shape[1] != shape[2]:
            raise DataError(f"{path}: /images has shape {shape}; stamps must be square")
        attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
        missing = [a for a in required if a not in attrs]
        if missing:
            raise DataError(f"{path} lacks the root attributes {missing}")
        for name in targets or []:
            if f"params/{name}" not in f:
                raise DataError(f"{path} has no /params/{name} label for target {name!r}")
            if f[f"params/{name}"].shape != (shape[0],):
                raise DataError(f"{path}: /params/{name} does not have one value per image")
    attrs["n_images"], attrs["stamp_size"] = shape[0], shape[1]
    return attrs


def describe_splits(paths: list[Path], targets: list[str] | None = None) -> dict:
    """``describe_split`` of files that together form one split: the first file's attributes
    with ``n_images`` their total; DataError where they differ in ``MATCHING_ATTRS``."""
    first, *others = [describe_split(p, targets) for p in paths]
    for path, attrs in zip(paths[1:], others, strict=True):
        check_matching(paths[0], first, path, attrs)
    return {**first, "n_images": sum(a["n_images"] for a in [first, *others])}


def check_matching(path_a: Path, attrs_a: dict, path_b: Path, attrs_b: dict) -> None:
    for key in MATCHING_ATTRS:
        if attrs_a.get(key) != attrs_b.get(key):
            raise DataError(
                f"{path_a} and {path_b} differ in {key}: {attrs_a.get(key)} vs "
                f"{attrs_b.get(key)}; files used together must come from one instrument and "
                "stamp size"
            )


def training_prior(path: Path, names: Sequence[str]) -> dict[str, list[float]]:
    """label -> [min, max] of the prior the file's galaxies were drawn from (its /config, as
    ``python -m simulate`` writes it; {} for files from elsewhere)."""
    from omegaconf import OmegaConf

    with h5py.File(path, "r") as f:
        if "config" not in f:
            return {}
        prior = OmegaConf.create(f["config"][()].decode()).get("prior") or {}
    return {n: [float(prior[n].min), float(prior[n].max)] for n in names if n in prior}


def read_labels(paths: Path | list[Path], names: list[str]) -> dict[str, np.ndarray]:
    """The labels ``names`` of one file, or of several files one after the other."""
    paths = [paths] if isinstance(paths, (str, Path)) else paths
    per_file = []
    for path in paths:
        with h5py.File(path, "r") as f:
            per_file.append({name: f["params"][name][()].astype(float) for name in names})
    return {name: np.concatenate([labels[name] for labels in per_file]) for name in names}


def fit_image_norm(path: Path, rms: float, softening: float, n_images: int) -> ImageNorm:
    """Pixel mean and std of the stretched images, from the first ``n_images`` of ``path``."""
    norm = ImageNorm(rms=rms, softening=softening)
    with h5py.File(path, "r") as f:
        sample = norm.stretch(f["images"][: max(1, n_images)].astype(np.float64))
    norm.mean, norm.std = float(sample.mean()), float(sample.std())
    return norm


def sample_images(path: Path, norm: ImageNorm, n_images: int) -> torch.Tensor:
    """The first ``n_images`` of ``path``, normalised, as a float32 tensor (N, 1, S, S)."""
    with h5py.File(path, "r") as f:
        return norm(torch.from_numpy(f["images"][: max(1, n_images)]))[:, None]


def psf_channel(psfs, stamp_size: int) -> torch.Tensor:
    """PSF images (N, P, P) as the second input channel of a PSF-conditioned model: each
    divided by its peak and centred on pixel S // 2 of an (N, S, S) float32 tensor."""
    psfs = torch.as_tensor(np.asarray(psfs, dtype=np.float32))
    n, p = psfs.shape[0], psfs.shape[-1]
    out = torch.zeros((n, stamp_size, stamp_size), dtype=torch.float32)
    lo = stamp_size // 2 - p // 2
    peak = psfs.reshape(n, -1).amax(1).clamp_min(1e-30).view(n, 1, 1)
    out[:, lo : lo + p, lo : lo + p] = psfs / peak
    return out


def load_images(
    paths: list[Path], norm: ImageNorm | None, device: torch.device, stack: str = "images",
    psf: bool = False,
) -> torch.Tensor:  # fmt: skip
    """The ``stack`` (/images, or /noiseless) of ``paths`` one after the other, normalised with
    ``norm`` (None: in e-/s per pixel), as a float32 tensor (N, 1, S, S) on ``device``; with
    ``psf``, (N, 2, S, S) with each stamp's /psf as channel 1 (``psf_channel``)."""
    norm = norm or (lambda x: x)
    shapes = []
    for path in paths:
        with h5py.File(path, "r") as f:
            shapes.append(f[stack].shape)
    size = shapes[0][1:]
    chans = 2 if psf else 1
    out = torch.empty((sum(s[0] for s in shapes), chans, *size), dtype=torch.float32, device=device)
    offset = 0
    for path in paths:
        with h5py.File(path, "r") as f:
            ds = f[stack]
            for start in range(0, ds.shape[0], NORM_CHUNK):
                chunk = torch.from_numpy(ds[start : start + NORM_CHUNK]).to(device)
                rows = slice(offset + start, offset + start + len(chunk))
                out[rows, 0] = norm(chunk)
                if psf:
                    out[rows, 1] = psf_channel(f["psf"][start : start + NORM_CHUNK], size[-1])
            offset += ds.shape[0]
    return out


def split_bytes(attrs: dict) -> int:
    return attrs["n_images"] * attrs["stamp_size"] ** 2 * 4


class H5Images(torch.utils.data.Dataset):
    """Images normalised with ``norm`` (None: in e-/s per pixel) and standardised labels
    streamed from the ``stack`` (/images, or /noiseless) of a split file.

    Each DataLoader worker opens its own file handle on first use (h5py handles must not cross
    process boundaries).
    """

    def __init__(
        self, path: Path, norm: ImageNorm | None, labels: np.ndarray, stack="images", psf=False
    ):
        self.path, self.norm, self.labels, self.stack = Path(path), norm, labels, stack
        self.psf = psf  # add /psf as channel 1 (a PSF-conditioned model)
        self._file = None

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        if self._file is None:
            self._file = h5py.File(self.path, "r")
        image = torch.from_numpy(self._file[self.stack][i])[None]
        image = self.norm(image) if self.norm else image
        if self.psf:
            psf = psf_channel(self._file["psf"][i : i + 1], image.shape[-1])
            image = torch.cat([image, psf], 0)
        return image, torch.from_numpy(self.labels[i])

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_file"] = None
        return state


class Batches:
    """Training or evaluation batches from memory or from HDF5, with a seeded generator.

    In memory, a permutation drawn from ``generator`` indexes the (device) tensors directly;
    streamed, a DataLoader does the same with worker processes. Either way the order depends
    only on the generator state, so a resumed run sees the same batches. With ``noise`` (a
    callable of a batch on the device), the stored images are noiseless and every batch gets
    new noise (and its normalisation) from it as it is yielded.
    """

    def __init__(self, images, labels, batch_size, device, dataset=None, num_workers=0, noise=None):
        self.images, self.labels = images, labels  # tensors, or None when streaming
        self.dataset, self.num_workers = dataset, num_workers
        self.batch_size, self.device, self.noise = batch_size, device, noise
        self.rank, self.ranks = 0, 1  # a DDP rank's share of every batch (``shard``)

    def subset(self, rows: np.ndarray) -> Batches:
        """These batches restricted to ``rows`` (a fold of k-fold cross-validation)."""
        if self.dataset is None:
            index = torch.as_tensor(rows, device=self.images.device)
            return Batches(self.images[index], self.labels[index], self.batch_size, self.device,
                           noise=self.noise)  # fmt: skip
        dataset = torch.utils.data.Subset(self.dataset, [int(r) for r in rows])
        return Batches(None, None, self.batch_size, self.device, dataset, self.num_workers,
                       self.noise)  # fmt: skip

    def shard(self, rank: int, ranks: int) -> Batches:
        """Yield only rank ``rank`` of ``ranks``'s share of each (global) batch: its every
        ``ranks``-th stamp. Every rank draws the same permutation, so the shares are disjoint and
        together are the one-process batch; the last ``len % ranks`` stamps of each permutation
        are left out, so that every rank takes the same number of steps."""
        self.rank, self.ranks = rank, ranks
        return self

    @property
    def fresh_noise(self) -> bool:
        return self.noise is not None

    def __len__(self) -> int:
        n = len(self.labels) if self.dataset is None else len(self.dataset)
        return math.ceil((n - n % self.ranks) / self.batch_size)

    def iterate(self, generator: torch.Generator | None):
        """Yield (images, labels) on the device; shuffled when ``generator`` is given."""
        n = len(self.labels) if self.dataset is None else len(self.dataset)
        order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
        if self.ranks > 1:  # each global batch's stamps rank, rank + ranks, ...
            order = order[: n - n % self.ranks]
            order = torch.cat([order[s : s + self.batch_size][self.rank :: self.ranks]
                               for s in range(0, len(order), self.batch_size)])  # fmt: skip
        size = self.batch_size // self.ranks
        noise = self.noise or (lambda x: x)
        if self.dataset is None:
            for start in range(0, len(order), size):
                idx = order[start : start + size].to(self.images.device)
                yield noise(self.images[idx]), self.labels[idx]
            return
        loader = torch.utils.data.DataLoader(
            self.dataset,
            batch_size=size,
            sampler=order.tolist(),
            num_workers=self.num_workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
        )
        for x, y in loader:
            yield noise(x.to(self.device, non_blocking=True)), y.to(self.device, non_blocking=True)


def dihedral(
    images: torch.Tensor, generator: torch.Generator, rank: int = 0, ranks: int = 1
) -> torch.Tensor:
    """Each image flipped and rotated by one of the 8 symmetries of the square, at random.

    The labels mag, n, re and q are invariant; pa would change, and is not a target. With
    ``ranks`` > 1, ``images`` are rank ``rank``'s share of a global batch (``Batches.shard``):
    the draws are made for the whole batch and the share's taken, so that every rank's
    generator stays in step and the global batch is augmented as in one process.
    """
    code = torch.randint(0, 8, (images.shape[0] * ranks,), generator=generator)[rank::ranks]
    code = code.to(images.device)
    out = images
    flip_x = (code & 1).bool().view(-1, 1, 1, 1)
    out = torch.where(flip_x, out.flip(-1), out)
    flip_y = (code & 2).bool().view(-1, 1, 1, 1)
    out = torch.where(flip_y, out.flip(-2), out)
    transpose = (code & 4).bool().view(-1, 1, 1, 1)
    return torch.where(transpose, out.transpose(-1, -2), out)


def make_batches(
    paths: list[Path],
    attrs,
    norm,
    scaler: LabelScaler,
    batch_size,
    device,
    data_cfg,
    noise=None,
    noise_generator: torch.Generator | None = None,
    psf: bool = False,
) -> Batches:
    """The stamps of ``paths`` (one split, ``attrs`` from ``describe_splits``) one file after the
    other: in memory (on ``device``) when they fit in ``data.max_memory_gb``, else streamed.
    With ``noise``, the files' /noiseless stamps instead, with new noise from
    ``noise_generator`` (on ``device``) every time a batch is drawn. With ``psf``, each stamp's
    /psf is a second channel (a PSF-conditioned model)."""
    labels = [scaler.encode(read_labels(path, scaler.names)) for path in paths]
    if psf:
        for path in paths:
            with h5py.File(path, "r") as f:
                if "psf" not in f:
                    raise DataError(
                        f"{path} has no /psf: a PSF-conditioned model needs a PSF per stamp "
                        "(python -m simulate instrument=generalist psf_family=generalist)"
                    )
    stack, stored_norm, fresh = "images", norm, None
    if noise is not None:
        stack, stored_norm = "noiseless", None
        fresh = lambda x: norm(noise(x, noise_generator))  # noqa: E731
        if psf:  # noise on the stamp channel only; the PSF channel passes unchanged
            fresh = lambda x: torch.cat([norm(noise(x[:, :1], noise_generator)), x[:, 1:]], 1)  # noqa: E731
        for path in paths:
            with h5py.File(path, "r") as f:
                if stack not in f:
                    raise DataError(
                        f"{path} has no /noiseless stamps: fresh_noise=true needs training files "
                        "written by `python -m simulate noiseless=true`"
                    )
    if split_bytes(attrs) * (2 if psf else 1) <= data_cfg.max_memory_gb * 1e9:
        images = load_images(paths, stored_norm, device, stack, psf)
        labels = torch.from_numpy(np.concatenate(labels)).to(device)
        return Batches(images, labels, batch_size, device, noise=fresh)
    dataset = torch.utils.data.ConcatDataset(
        [H5Images(p, stored_norm, lab, stack, psf) for p, lab in zip(paths, labels, strict=True)]
    )
    return Batches(None, None, batch_size, device, dataset, data_cfg.num_workers, noise=fresh)
