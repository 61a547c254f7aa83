"""Images to predict on: an HDF5 file (SPEC layout), a FITS image or cube, or a folder of FITS.

Every input becomes a stream of ``Stamp`` records in input order: the image brought to the
model's stamp size with the simulator's pad/crop rule (``simulate.stamps.pad_or_crop``; padded
pixels get background noise of the training data's rms), or a flag saying why it cannot be
used. Pixels must be sky-subtracted e-/s per pixel in the instrument's zero-point system, as
in training (``input_scale`` converts other units).

A problem with one image (non-finite pixels, a folder member that is unreadable, empty,
not 2-D or at another pixel scale) flags that row. A problem with the input as a whole (a
missing or unreadable path, no image data, a pixel scale that differs from the model's) is an
``InputError`` naming the file.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from simulate.stamps import pad_or_crop

from .data import open_images

log = logging.getLogger(__name__)

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz")
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
#: Header keywords read as a pixel scale in arcsec / pixel when the header has no celestial WCS.
PIXEL_SCALE_KEYWORDS = (
    "PIXSCALE",
    "PIXSCAL",
    "PIXSCAL1",
    "PIXSIZE",
    "SECPIX",
    "SECPIX1",
    "PLATESCL",
)
#: Root attributes read (case-insensitively, in this order) as an HDF5 file's pixel scale in
#: arcsec / pixel: this project's name first, then names other simulators use.
HDF5_PIXEL_SCALE_ATTRS = ("pixel_scale_arcsec", "pixel_scale", "pixscale", "pixel_size", "scale")
PIXEL_SCALE_RTOL = 0.01  # relative difference tolerated between an image's and the model's scale

# Bits of the ``flag`` column.
FLAG_UNREADABLE = 1  # file cannot be read, or holds no image data
FLAG_NOT_2D = 2  # image is not two-dimensional
FLAG_NONFINITE = 4  # NaN or infinite pixels
FLAG_PIXEL_SCALE = 8  # pixel scale differs from the model's


class InputError(ValueError):
    """The input as a whole cannot be used; the message names the file."""


@dataclass
class Stamp:
    """One input image, ready for the model (``image`` is None when ``flag`` is non-zero)."""

    source: str  # file name (and HDU / plane) or HDF5 index
    image: np.ndarray | None
    flag: int = 0
    problem: str = ""


@dataclass
class StampMaker:
    """Brings images to the model's stamp size; padding gets reproducible background noise."""

    size: int  # pixel
    noise_rms: float  # e-/s per pixel
    input_scale: float = 1.0  # multiply input pixels by this to get e-/s per pixel
    seed: int = 0

    def __post_init__(self):
        self._rng = np.random.default_rng(self.seed)

    def __call__(self, source: str, data) -> Stamp:
        data = np.asarray(data, dtype=np.float32)
        if data.ndim != 2:
            return Stamp(
                source,
                None,
                FLAG_NOT_2D,
                f"{source}: data has shape {data.shape}, expected a 2-D image",
            )
        if data.size == 0:
            return Stamp(source, None, FLAG_UNREADABLE, f"{source}: image is empty")
        bad = ~np.isfinite(data)
        if bad.any():
            return Stamp(
                source, None, FLAG_NONFINITE, f"{source}: {int(bad.sum())} NaN or infinite pixels"
            )
        data = data * self.input_scale
        if data.shape == (self.size, self.size):
            return Stamp(source, data)
        background = None
        if data.shape[0] < self.size or data.shape[1] < self.size:
            background = self._rng.normal(0.0, self.noise_rms, (self.size, self.size)).astype(
                np.float32
            )
        return Stamp(source, pad_or_crop(data, self.size, background))


def fits_pixel_scale(header) -> float | None:
    """Pixel scale in arcsec / pixel from a FITS header (celestial WCS, CDELT/CD, or keywords)."""
    try:
        wcs = WCS(header, naxis=2)
        if wcs.has_celestial:
            scales = proj_plane_pixel_scales(wcs.celestial) * 3600.0  # deg -> arcsec
            return float(np.sqrt(scales[0] * scales[1]))
    except Exception:  # noqa: BLE001 - a malformed WCS falls back to keywords
        pass
    for key in PIXEL_SCALE_KEYWORDS:
        if key in header:
            return float(header[key])
    return None


def hdf5_pixel_scale(attrs) -> float | None:
    """Pixel scale in arcsec / pixel from an HDF5 file's root attributes (HDF5_PIXEL_SCALE_ATTRS)."""
    lower = {key.lower(): value for key, value in attrs.items()}
    for key in HDF5_PIXEL_SCALE_ATTRS:
        value = lower.get(key)
        if value is not None and np.size(value) == 1:
            try:
                return float(np.asarray(value).item())
            except (TypeError, ValueError):
                continue
    return None


def scales_differ(scale: float | None, expected: float) -> bool:
    """Whether a pixel scale (arcsec / pixel; None = unknown) differs from ``expected`` by more
    than PIXEL_SCALE_RTOL."""
    return scale is not None and not math.isclose(scale, expected, rel_tol=PIXEL_SCALE_RTOL)


def scale_mismatch(source: str, scale: float | None, model_scale: float) -> str:
    """Message if ``scale`` differs from the model's by more than PIXEL_SCALE_RTOL, else ''."""
    if not scales_differ(scale, model_scale):
        return ""
    return (
        f"{source}: pixel scale {scale:.5g} arcsec/pixel differs from the model's {model_scale:.5g}; "
        "resample the image, or pass allow_pixel_scale_mismatch=true to predict anyway"
    )


def _first_image_hdu(hdul, path: Path):
    for index, hdu in enumerate(hdul):
        if hdu.data is not None and getattr(hdu, "is_image", False):
            return index, hdu
    raise InputError(f"{path} holds no image data")


def iter_stamps(
    path, maker: StampMaker, model_scale: float, allow_mismatch: bool = False
) -> Iterator[Stamp]:
    """Stamps of every image in ``path`` in input order (see module docstring)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"input {path} does not exist")
    if path.is_dir():
        yield from _iter_folder(path, maker, model_scale, allow_mismatch)
    elif path.name.lower().endswith(HDF5_SUFFIXES):
        yield from _iter_hdf5(path, maker, model_scale, allow_mismatch)
    elif path.name.lower().endswith(FITS_SUFFIXES):
        yield from _iter_fits_file(path, maker, model_scale, allow_mismatch)
    else:
        raise InputError(
            f"input {path}: unknown type; give an HDF5 file ({', '.join(HDF5_SUFFIXES)}), "
            f"a FITS file ({', '.join(FITS_SUFFIXES)}) or a folder of FITS files"
        )


def count_images(path) -> int | None:
    """Number of rows ``iter_stamps`` will yield, when cheap to know (for progress bars)."""
    path = Path(path)
    try:
        if path.is_dir():
            return len(_fits_files(path))
        if path.name.lower().endswith(HDF5_SUFFIXES):
            with h5py.File(path, "r") as f:
                return len(f["images"])
    except (OSError, KeyError):
        return None
    return None


def _iter_hdf5(path: Path, maker, model_scale, allow_mismatch) -> Iterator[Stamp]:
    with open_images(path) as f:
        ds = f["images"]
        message = scale_mismatch(str(path), hdf5_pixel_scale(f.attrs), model_scale)
        if message and not allow_mismatch:
            raise InputError(message)
        chunk = max(1, (64 * 2**20) // (ds.shape[1] * ds.shape[2] * 4))  # about 64 MB at a time
        for start in range(0, len(ds), chunk):
            block = ds[start : start + chunk]
            for k, image in enumerate(block):
                stamp = maker(f"{path.name}[{start + k}]", image)
                if stamp.flag:
                    log.warning("skipping %s", stamp.problem)
                yield stamp


def _iter_fits_file(path: Path, maker, model_scale, allow_mismatch) -> Iterator[Stamp]:
    try:
        hdul = fits.open(path, memmap=True)
    except Exception as err:  # noqa: BLE001 - astropy raises many types for bad files
        raise InputError(f"{path} is not a readable FITS file: {err}") from err
    with hdul:
        index, hdu = _first_image_hdu(hdul, path)
        message = scale_mismatch(str(path), fits_pixel_scale(hdu.header), model_scale)
        if message and not allow_mismatch:
            raise InputError(message)
        data = hdu.data
        if data.ndim == 2:
            stamp = maker(f"{path.name}[{index}]", data)
            if stamp.flag:
                raise InputError(stamp.problem)
            yield stamp
        elif data.ndim == 3:  # a cube of cutouts, one per plane
            for plane in range(data.shape[0]):
                stamp = maker(f"{path.name}[{index}][{plane}]", data[plane])
                if stamp.flag:
                    log.warning("skipping %s", stamp.problem)
                yield stamp
        else:
            raise InputError(
                f"{path}: image data has shape {data.shape}, expected 2-D or a 3-D cube"
            )


def _fits_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(FITS_SUFFIXES)
    )


def _iter_folder(folder: Path, maker, model_scale, allow_mismatch) -> Iterator[Stamp]:
    files = _fits_files(folder)
    if not files:
        raise InputError(f"folder {folder} holds no FITS files ({', '.join(FITS_SUFFIXES)})")
    for path in files:
        stamp = _read_cutout(path, maker, model_scale, allow_mismatch)
        if stamp.flag:
            log.warning("skipping %s", stamp.problem)
        yield stamp


def _read_cutout(path: Path, maker, model_scale, allow_mismatch) -> Stamp:
    try:
        with fits.open(path) as hdul:
            index, hdu = _first_image_hdu(hdul, path)
            data = np.array(hdu.data)
            header = hdu.header
    except InputError as err:
        return Stamp(path.name, None, FLAG_UNREADABLE, str(err))
    except Exception as err:  # noqa: BLE001
        return Stamp(
            path.name, None, FLAG_UNREADABLE, f"{path.name} is not a readable FITS file: {err}"
        )
    message = scale_mismatch(path.name, fits_pixel_scale(header), model_scale)
    if message and not allow_mismatch:
        return Stamp(path.name, None, FLAG_PIXEL_SCALE, message)
    return maker(path.name, data)
