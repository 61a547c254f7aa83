"""Images to predict on: an HDF5 file (the data layout of docs/contract.md, section 5), a FITS
image or cube (also tile-compressed, ``.fits.fz``), a folder of FITS files, or arrays.

Every input becomes a stream of ``Stamp`` records in input order: the image brought to the
model's stamp size with the simulator's pad/crop rule (``simulate.stamps.pad_or_crop``; padded
pixels get background noise of the training data's rms), or a flag saying why it cannot be
used. Pixels must be sky-subtracted e-/s per pixel in the instrument's zero-point system, as
in training (``input_scale`` converts other units).

A problem with one image (non-finite pixels, a folder member that is unreadable, empty,
not 2-D, without a pixel scale or at another one) flags that row. A problem with the input as
a whole (a missing or unreadable path, no image data, a pixel scale that is missing or differs
from the model's) is an ``InputError`` naming the file. An image's pixel scale comes from its
header (celestial WCS, CDELT/CD or a scale keyword) or HDF5 attributes; ``pixel_scale`` gives
it for images that state none. It is never assumed silently.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from astropy.wcs.utils import proj_plane_pixel_scales

from sersic_runtime.errors import UserError
from simulate.stamps import placement

from .data import open_images
from .flags import BITS

log = logging.getLogger(__name__)

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fits.fz", ".fz")
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

# Bits of the ``flag`` column that reading sets (all bits: fitnet.flags).
FLAG_UNREADABLE = BITS["unreadable"]
FLAG_NOT_2D = BITS["not_2d"]
FLAG_NONFINITE = BITS["invalid_pixels"]
FLAG_PIXEL_SCALE = BITS["pixel_scale"]


class InputError(UserError):
    """The input as a whole cannot be used; the message names the file."""


@dataclass
class Cutout:
    """One image of the input as read, before anything is done to it: its pixels in input
    units and what is known about them (the read stage; ``fitnet.stamps`` makes the stamps)."""

    source: str  # file name (and HDU / plane), HDF5 index, or the mosaic and catalogue row
    data: np.ndarray | None  # input units; None: nothing to measure (``flag`` says why)
    mask: np.ndarray | None = None  # the user's mask (non-zero: leave the pixel out)
    padding: np.ndarray | None = None  # bool: not of the image (beyond its edge, noise padding)
    rms: np.ndarray | None = None  # noise rms per pixel (a weight or rms map), input units
    others: np.ndarray | None = None  # bool: other sources' pixels, per a segmentation map
    origin: tuple[float, float] = (0.0, 0.0)  # input-image pixel (x, y) of data[0, 0]
    pixel_scale: float | None = None  # arcsec / pixel
    psf: np.ndarray | None = None  # the row's own effective PSF image (an HDF5 file's /psf)
    header: object = None  # the FITS header, if any (zero point, gain)
    index: int = 0  # the row's number in the input
    flag: int = 0  # reading problems (fitnet.flags): unreadable, not_2d, pixel_scale, off_image
    problem: str = ""
    columns: dict = field(default_factory=dict)  # what reading measured (a segmap's neighbours)
    alone: bool = False  # the whole input (one 2-D FITS image): an unusable one is an InputError


def unread(source: str, name: str, detail: str, index: int = 0) -> Cutout:
    """A row without pixels, for the reading problem ``name`` (a fitnet.flags bit)."""
    return Cutout(source, None, flag=BITS[name], problem=f"{name}: {source}: {detail}", index=index)


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


def scale_mismatch(source: str, scale: float | None, model_scale: float, reference=None) -> str:
    """Message if ``scale`` differs from ``model_scale`` by more than PIXEL_SCALE_RTOL, else ''.
    ``reference`` says whose scale that is and what to do (default: the model's)."""
    if not scales_differ(scale, model_scale):
        return ""
    reference = reference or (
        "the model's {scale:.5g}; resample the image, or pass allow_pixel_scale_mismatch=true "
        "to predict anyway"
    )
    return (f"{source}: pixel scale {scale:.5g} arcsec/pixel differs from "
            f"{reference.format(scale=model_scale)}")  # fmt: skip


def _first_image_hdu(hdul, path: Path):
    for index, hdu in enumerate(hdul):
        if getattr(hdu, "is_image", False) and hdu.header.get("NAXIS", 0) > 0:
            return index, hdu
    raise InputError(f"{path} holds no image data")


@dataclass
class Reader:
    """Reads images into Cutouts, checking pixel scales against the model's (arcsec / pixel). ``pixel_scale`` is the scale of images that do not state one: arrays,
    and FITS headers without a celestial WCS or scale keyword; without it such images are
    refused (a single input) or flagged (a member of a folder or list), never assumed to be at
    the model's scale."""

    model_scale: float
    allow_mismatch: bool = False
    pixel_scale: float | None = None
    #: whose ``model_scale`` is, and what to do about another (``scale_mismatch``); None: the model's
    reference: str | None = None
    rows: int = 0  # rows read so far: the next row's index

    def cutout(self, source: str, data, mask=None, **known) -> Cutout:
        """The next row's Cutout (numbered in input order)."""
        self.rows += 1
        return Cutout(source, data, mask, index=self.rows - 1, **known)

    def cutouts(self, images, mask=None) -> Iterator[Cutout]:
        """``images``: a path (HDF5 file, FITS file or folder of FITS files), a 2-D array (one
        image), a 3-D array (a stack), or a list of 2-D arrays and paths. ``mask`` (non-zero
        = bad pixel): for a FITS file, a FITS mask of its shape (or of one plane of a cube);
        for a folder, a folder of masks named as its files (a file without one has none);
        for arrays, an array or a list of arrays of their shapes."""
        if isinstance(images, (str, Path)):
            yield from self._path(Path(images), mask)
            return
        if isinstance(images, np.ndarray):
            images = [images] if images.ndim == 2 else list(images)
        members = list(images)
        if not members:
            raise InputError("no images given: an empty list")
        masks = self._array_masks(mask, len(members))
        if any(not isinstance(m, (str, Path)) for m in members):
            message = _scale_problem(
                "arrays", None, self.model_scale, self.pixel_scale, "arrays carry none"
            )
            if message and not self.allow_mismatch:
                raise InputError(message)
        scale = self.pixel_scale or self.model_scale
        for k, member in enumerate(members):
            if isinstance(member, (str, Path)):
                yield from self._member(Path(member), None)
            else:
                yield self.cutout(f"[{k}]", member, masks[k], pixel_scale=scale)

    @staticmethod
    def _array_masks(mask, count: int) -> list:
        if mask is None:
            return [None] * count
        if isinstance(mask, (str, Path)):
            raise InputError(
                "mask= for arrays must be arrays too (a FITS mask goes with FITS input)"
            )
        masks = [mask] if isinstance(mask, np.ndarray) and mask.ndim == 2 else list(mask)
        if len(masks) != count:
            raise InputError(f"{len(masks)} masks for {count} images: give one per image")
        return masks

    def _path(self, path: Path, mask) -> Iterator[Cutout]:
        if not path.exists():
            raise InputError(f"input {path} does not exist")
        if mask is not None and not Path(mask).exists():
            raise InputError(f"mask {mask} does not exist")
        if path.is_dir():
            files = _fits_files(path)
            if not files:
                raise InputError(f"folder {path} holds no FITS files ({', '.join(FITS_SUFFIXES)})")
            if mask is not None and not Path(mask).is_dir():
                raise InputError(f"mask={mask}: for a folder of images give a folder of masks")
            for member in files:
                own = Path(mask) / member.name if mask is not None else None
                yield from self._member(member, own if own is not None and own.exists() else None)
        elif path.name.lower().endswith(HDF5_SUFFIXES):
            if mask is not None:
                raise InputError("mask= is for FITS input; an HDF5 file's images are used whole")
            yield from self._hdf5(path)
        elif path.name.lower().endswith(FITS_SUFFIXES):
            yield from self._fits_file(path, mask, alone=True)
        else:
            raise InputError(
                f"input {path}: unknown type; give an HDF5 file ({', '.join(HDF5_SUFFIXES)}), "
                f"a FITS file ({', '.join(FITS_SUFFIXES)}) or a folder of FITS files"
            )

    def _hdf5(self, path: Path) -> Iterator[Cutout]:
        with open_images(path) as f:
            ds = f["images"]
            scale = hdf5_pixel_scale(f.attrs)
            if scale is None and self.pixel_scale is None:
                log.warning(
                    "%s states no pixel scale: taking it as the model's %.5g arcsec/pixel "
                    "(pass pixel_scale= to check it)",
                    path,
                    self.model_scale,
                )
            else:
                message = _scale_problem(str(path), scale, self.model_scale, self.pixel_scale)
                if message and not self.allow_mismatch:
                    raise InputError(message)
            chunk = max(1, (64 * 2**20) // (ds.shape[1] * ds.shape[2] * 4))  # about 64 MB at a time
            sizes = rendered_sizes(f, len(ds))
            psfs = f["psf"] if "psf" in f else None  # a PSF per stamp (psf_family)
            scale = scale or self.pixel_scale or self.model_scale
            for start in range(0, len(ds), chunk):
                block = ds[start : start + chunk]
                psf_block = None if psfs is None else psfs[start : start + chunk]
                for k, image in enumerate(block):
                    row = start + k
                    cutout = self.cutout(f"{path.name}[{row}]", image,
                                         padding=padding_mask(image.shape, sizes[row]),
                                         pixel_scale=scale,
                                         psf=None if psf_block is None else psf_block[k])  # fmt: skip
                    yield cutout

    def _fits_file(self, path: Path, mask, alone: bool = False) -> Iterator[Cutout]:
        """The rows of one FITS file: one for a 2-D image, one per plane of a cube. A problem
        with the file as a whole is an InputError; a 2-D image that is the whole input is
        marked ``alone`` (an unusable one is an InputError too)."""
        with _open_fits(path) as hdul:
            hdu_index, hdu = _first_image_hdu(hdul, path)
            header_scale = fits_pixel_scale(hdu.header)
            message = _scale_problem(str(path), header_scale, self.model_scale, self.pixel_scale,
                                     reference=self.reference)  # fmt: skip
            if message and not self.allow_mismatch:
                raise InputError(message)
            try:
                data = hdu.data
            except Exception as err:  # noqa: BLE001
                raise InputError(f"{path}: cannot read the image data: {err}") from err
            bad = read_mask(mask, data.shape) if mask is not None else None
            scale = header_scale or self.pixel_scale or self.model_scale
            header = hdu.header.copy()
            if data.ndim == 2:
                # a folder's or list's member is named by its file, as its row's source
                name = f"{path.name}[{hdu_index}]" if alone else path.name
                yield self.cutout(name, np.array(data), bad, pixel_scale=scale, header=header,
                                  alone=alone)  # fmt: skip
            elif data.ndim == 3:  # a cube of cutouts, one per plane
                for plane in range(data.shape[0]):
                    plane_bad = None if bad is None else (bad if bad.ndim == 2 else bad[plane])
                    yield self.cutout(f"{path.name}[{hdu_index}][{plane}]",
                                      np.array(data[plane]), plane_bad, pixel_scale=scale,
                                      header=header)  # fmt: skip
            else:
                raise InputError(
                    f"{path}: image data has shape {data.shape}, expected 2-D or a 3-D cube"
                )

    def _member(self, path: Path, mask) -> Iterator[Cutout]:
        """The rows of one FITS file of a folder or list: a problem with the file flags its
        row (one row) instead of stopping the whole input."""
        start = self.rows
        try:
            cutouts = list(self._fits_file(path, mask))
        except InputError as err:
            text = str(err).replace(str(path), path.name)
            name = "unreadable"
            if "pixel scale" in text:
                name = "pixel_scale"
            elif "expected 2-D" in text:
                name = "not_2d"
            self.rows = start + 1
            cutouts = [Cutout(path.name, None, flag=BITS[name], problem=f"{name}: {text}",
                              index=start)]  # fmt: skip
        yield from cutouts


def rendered_sizes(f, count: int) -> np.ndarray:
    """Per image of an HDF5 file, the side (pixel) of the stamp it was rendered on before the
    pad/crop to the stored size (/params/size, docs/contract.md, section 4), or 0 if unknown."""
    if "params" in f and "size" in f["params"] and len(f["params"]["size"]) == count:
        return f["params"]["size"][()].astype(int)
    return np.zeros(count, dtype=int)


def padding_mask(shape, size: int) -> np.ndarray | None:
    """The pixels of a stored stamp of ``shape`` outside its centred ``size`` square (the noise
    padding of docs/contract.md, section 3); None when there are none or ``size`` is unknown."""
    if not 0 < size < min(shape):
        return None
    (_, dy), (_, dx) = placement(size, shape[0]), placement(size, shape[1])
    mask = np.ones(shape, dtype=bool)
    mask[dy, dx] = False
    return mask


def read_mask(path, shape) -> np.ndarray:
    """A FITS mask (non-zero = bad) for an image of ``shape`` (2-D, or a cube: then a mask of
    one plane serves every plane)."""
    try:
        data = fits.getdata(path)
    except Exception as err:  # noqa: BLE001
        raise InputError(f"mask {path} is not a readable FITS image: {err}") from err
    if data is None or data.shape not in (tuple(shape), tuple(shape[-2:])):
        got = None if data is None else data.shape
        raise InputError(f"mask {path} has shape {got}; the image has {tuple(shape)}")
    return np.asarray(data) != 0


def count_images(images) -> int | None:
    """Number of rows ``iter_stamps`` will yield, when cheap to know (for progress bars)."""
    if isinstance(images, np.ndarray):
        return 1 if images.ndim == 2 else len(images)
    if not isinstance(images, (str, Path)):
        members = list(images)
        return len(members) if all(not isinstance(m, (str, Path)) for m in members) else None
    path = Path(images)
    try:
        if path.is_dir():
            return None  # a folder may hold cubes: known only once their headers are read
        if path.name.lower().endswith(HDF5_SUFFIXES):
            with h5py.File(path, "r") as f:
                return len(f["images"])
    except (OSError, KeyError):
        return None
    return None


def first_fits(images) -> tuple[Path | None, object]:
    """The first FITS file of a path or folder and its first image's header ((None, None) for
    arrays, lists or HDF5); InputError when the path does not exist."""
    if not isinstance(images, (str, Path)):
        return None, None
    path = Path(images)
    if not path.exists():
        raise InputError(f"input {path} does not exist")
    if path.is_dir():
        files = _fits_files(path)
        path = files[0] if files else None
    if path is None or not path.name.lower().endswith(FITS_SUFFIXES) or not path.is_file():
        return None, None
    with _open_fits(path) as hdul:
        return path, _first_image_hdu(hdul, path)[1].header.copy()


def first_fits_header(images):
    """The header of the first image of a FITS path or folder (None for arrays or HDF5)."""
    return first_fits(images)[1]


def given_scale_clash(source: str, header_scale, given) -> str:
    """Message if the ``pixel_scale=`` option (``given``) disagrees with an image's header: the
    header wins, and the option is for images whose header states no scale; else ''."""
    if header_scale is None or given is None or not scales_differ(header_scale, given):
        return ""
    return (f"pixel_scale={given:g} disagrees with the header of {source} ({header_scale:.5g} "
            "arcsec/pixel), which wins: leave pixel_scale= out (it gives the scale of images whose "
            "header states none)")  # fmt: skip


def check_given_scale(images, given) -> None:
    """InputError up front when ``pixel_scale=`` (``given``) disagrees with the header of the
    first FITS image of ``images`` (later images with a clash are flagged ``pixel_scale``)."""
    path, header = first_fits(images) if given is not None else (None, None)
    clash = given_scale_clash(str(path), header and fits_pixel_scale(header), given)
    if clash:
        raise InputError(clash)


def _scale_problem(source: str, scale, model_scale: float, given, why: str = "",
                   reference=None) -> str:  # fmt: skip
    """Message if images of ``source`` (header scale ``scale``, else the ``given`` one) are not
    at the model's scale (or ``reference``'s, ``scale_mismatch``), have none, or disagree with
    the ``given`` one, else ''."""
    clash = given_scale_clash(source, scale, given)
    if clash:
        return clash
    if scale is None:
        scale = given
    if scale is None:
        why = why or f"no celestial WCS, CDELT or {PIXEL_SCALE_KEYWORDS[0]}-like keyword"
        return (
            f"{source}: no pixel scale ({why}); pass pixel_scale=<arcsec/pixel> "
            f"(the model's is {model_scale:.5g})"
        )
    return scale_mismatch(source, scale, model_scale, reference)


def _open_fits(path: Path):
    """``fits.open``, memory-mapped unless the image is scaled (BSCALE/BZERO/BLANK), which
    astropy cannot memory-map; InputError naming the file if it is not readable FITS."""
    try:
        hdul = fits.open(path, memmap=True)
    except Exception as err:  # noqa: BLE001 - astropy raises many types for bad files
        raise InputError(f"{path} is not a readable FITS file: {err}") from err
    try:
        _, hdu = _first_image_hdu(hdul, path)
        scaled = any(key in hdu.header for key in ("BSCALE", "BZERO", "BLANK"))
    except Exception:
        hdul.close()
        raise
    if scaled:
        hdul.close()
        hdul = fits.open(path, memmap=False)
    return hdul


def _fits_files(folder: Path) -> list[Path]:
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.name.lower().endswith(FITS_SUFFIXES)
    )


def hdf5_has_psfs(images) -> bool:
    """Whether ``images`` is an HDF5 file that carries a PSF per stamp (``/psf``)."""
    if not isinstance(images, (str, Path)) or not str(images).lower().endswith(HDF5_SUFFIXES):
        return False
    try:
        with h5py.File(images, "r") as f:
            return "psf" in f
    except OSError:
        return False
