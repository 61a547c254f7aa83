"""The PSF of each row: ``psf=`` as the user gives it, or the model's own.

``psf=`` takes

- one FITS image (an effective PSF at the data's sampling unless its header gives another
  scale or an oversampling): every row's;
- a FITS cube of such images, one plane per row in input order (the count must match);
- a folder of FITS images named as the input files (``cutouts/gal_01.fits`` -> its
  ``gal_01.fits``);
- a PSFEx model (``.psf``; GalSim's ``des.DES_PSFEx``), evaluated at each row's position in the
  image the model was made for: the mosaic's pixel of a catalogue row, or a cutout's position
  from its header (``LTV1``/``LTV2``, as IRAF and astropy's ``Cutout2D`` copies record it); a
  position outside the model's fitted range flags the row ``psf_range``;
- a PIFF model (``.piff``, the optional extra ``piff``), evaluated likewise.

An HDF5 file in the data layout with a PSF per stamp (``/psf``) brings its own. Each source
gives a GalSim profile in arcsec without the pixel (the renderer and the fit add it), or a
reason why the row has none.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Protocol

import numpy as np

from .inputs import FITS_SUFFIXES, Cutout, InputError

PSF_OFFSET_PX = 1.0  # data pixel: a PSF image centred further from its middle is refused
PSF_EDGE_FLUX = 0.02  # a PSF image whose outer 1/16 holds more of the flux is refused (too small)
INTERPOLANT = "lanczos7"  # GalSim x_interpolant between the PSF image's pixels
PSFEX_MARGIN = 0.05  # fraction of a PSFEx model's fitted range a position may lie beyond it


def image_profile(array, scale: float, data_scale: float, includes_pixel: bool, where: str):
    """The PSF of the image ``array`` (sampled at ``scale`` arcsec / pixel) for data at
    ``data_scale``, checked (InputError naming ``where`` when unusable)."""
    from sersic_runtime.errors import ConfigError
    from simulate.psf import array_psf

    try:
        return array_psf(array, scale, data_scale, PSF_OFFSET_PX, PSF_EDGE_FLUX, INTERPOLANT,
                         includes_pixel, where)  # fmt: skip
    except ConfigError as err:
        raise InputError(str(err)) from None


class PSFSource(Protocol):
    """Where each row's PSF comes from."""

    def for_row(self, cutout: Cutout):
        """(the row's PSF as a GalSim profile in arcsec without the pixel, or None; a problem:
        why there is none, or ``psf_range: ...`` when the model is extrapolated there)."""


class OneImage:
    """One PSF image for every row (its scale: the header's, else the row's data's)."""

    def __init__(self, path, includes_pixel: bool = True):
        from astropy.io import fits

        self.path, self.includes_pixel = Path(path), includes_pixel
        try:
            with fits.open(self.path) as hdul:
                self.array = np.asarray(hdul[0].data, dtype=float)
                self.header = hdul[0].header.copy()
        except (OSError, TypeError, ValueError) as err:
            raise InputError(f"psf={path} is not a readable FITS image ({err})") from None
        if self.array.ndim != 2:
            raise InputError(f"psf={path}: a PSF image is 2-D, not {self.array.shape}")
        self._profiles = {}

    def profile(self, data_scale: float):
        if data_scale not in self._profiles:
            from simulate.psf import psf_pixel_scale

            scale = psf_pixel_scale(self.header, data_scale)
            self._profiles[data_scale] = image_profile(self.array, scale, data_scale,
                                                       self.includes_pixel, f"psf={self.path}")  # fmt: skip
        return self._profiles[data_scale]

    def for_row(self, cutout: Cutout):
        return self.profile(cutout.pixel_scale), ""


class Cube:
    """A FITS cube, plane k the PSF of row k (at the data's sampling)."""

    def __init__(self, path, count: int | None, includes_pixel: bool = True):
        from astropy.io import fits

        self.path, self.includes_pixel = Path(path), includes_pixel
        self.planes = fits.getdata(self.path, memmap=True)
        if count is not None and len(self.planes) != count:
            raise InputError(f"psf={path} holds {len(self.planes)} PSF images for {count} inputs: "
                             "a cube gives one per row, in the inputs' order")  # fmt: skip

    def for_row(self, cutout: Cutout):
        if cutout.index >= len(self.planes):
            return None, f"psf={self.path} has no plane {cutout.index} (it has {len(self.planes)})"
        where = f"psf={self.path}[{cutout.index}]"
        return image_profile(self.planes[cutout.index], cutout.pixel_scale, cutout.pixel_scale,
                             self.includes_pixel, where), ""  # fmt: skip


class Folder:
    """A folder of PSF images named as the input files."""

    def __init__(self, path, includes_pixel: bool = True):
        self.path, self.includes_pixel = Path(path), includes_pixel
        self._one: dict[str, OneImage] = {}

    def for_row(self, cutout: Cutout):
        name = cutout.source.split("[")[0]
        file = self.path / name
        if not file.is_file():
            return None, f"psf={self.path} has no {name} for the input file of that name"
        if name not in self._one:
            self._one[name] = OneImage(file, self.includes_pixel)
        return self._one[name].for_row(cutout)


class RowImages:
    """The PSF images an HDF5 file carries, one per stamp (effective, at the data's sampling)."""

    def for_row(self, cutout: Cutout):
        if cutout.psf is None:
            return None, "the file has no /psf for this row"
        return image_profile(cutout.psf, cutout.pixel_scale, cutout.pixel_scale, True,
                             f"{cutout.source} /psf"), ""  # fmt: skip


class PositionModel:
    """A PSF model evaluated at each row's position in its image (PSFEx or PIFF)."""

    def position(self, cutout: Cutout):
        """(x, y), 0-based, of the row's centre in the model's image, or None."""
        h, w = cutout.data.shape
        header = cutout.header
        shift = (0.0, 0.0)
        if header is not None and "LTV1" in header and "LTV2" in header:
            shift = (-float(header["LTV1"]), -float(header["LTV2"]))  # LTV: image = parent + LTV
        elif cutout.origin == (0.0, 0.0):
            return None
        return (
            cutout.origin[0] + shift[0] + (w - 1) / 2,
            cutout.origin[1] + shift[1] + (h - 1) / 2,
        )

    def for_row(self, cutout: Cutout):
        where = self.position(cutout)
        if where is None:
            return None, (f"psf={self.path} is a model of positions in an image: measure a mosaic "
                          "with catalog=, or give cutouts whose header has LTV1/LTV2")  # fmt: skip
        problem = self.outside(*where)
        return self.at(*where, cutout.pixel_scale), problem


class PSFEx(PositionModel):
    """A PSFEx model (GalSim's ``des.DES_PSFEx``): effective PSFs in pixel units."""

    def __init__(self, path):
        import galsim.des

        self.path = Path(path)
        try:
            self.model = galsim.des.DES_PSFEx(str(self.path))
        except Exception as err:  # noqa: BLE001 - any reading failure is the user's file
            raise InputError(f"psf={path} is not a readable PSFEx model ({err})") from None

    def outside(self, x: float, y: float) -> str:
        """A problem when (x, y) lies beyond the positions the model was fitted on."""
        m = self.model
        u, v = (x + 1 - m.x_zero) / m.x_scale, (y + 1 - m.y_zero) / m.y_scale
        limit = 0.5 + PSFEX_MARGIN
        if abs(u) <= limit and abs(v) <= limit:
            return ""
        lo_x, hi_x = m.x_zero - m.x_scale / 2 - 1, m.x_zero + m.x_scale / 2 - 1
        lo_y, hi_y = m.y_zero - m.y_scale / 2 - 1, m.y_zero + m.y_scale / 2 - 1
        return (f"psf_range: ({x:.0f}, {y:.0f}) px is outside the PSFEx model's range "
                f"x {lo_x:.0f}-{hi_x:.0f}, y {lo_y:.0f}-{hi_y:.0f}")  # fmt: skip

    def at(self, x: float, y: float, data_scale: float):
        import galsim

        psf = self.model.getPSF(galsim.PositionD(x + 1, y + 1))  # FITS positions are 1-based
        # pixel units -> arcsec, and the pixel out (PSFEx models effective PSFs)
        psf = psf.dilate(data_scale)
        return galsim.Convolve(psf, galsim.Deconvolve(galsim.Pixel(data_scale))).withFlux(1.0)


class Piff(PositionModel):
    """A PIFF model (the optional extra ``piff``), drawn at each position as an effective PSF."""

    DRAW_SIZE = 41  # pixel, the image of the model drawn at each position

    def __init__(self, path):
        try:
            import piff
        except ImportError:
            raise InputError(
                f"psf={path} is a PIFF model: pip install 'sersic-fitnet[piff]'"
            ) from None
        self.path = Path(path)
        try:
            self.model = piff.read(str(self.path))
        except Exception as err:  # noqa: BLE001
            raise InputError(f"psf={path} is not a readable PIFF model ({err})") from None

    def outside(self, x: float, y: float) -> str:
        return ""

    def at(self, x: float, y: float, data_scale: float):
        image = self.model.draw(x + 1, y + 1, stamp_size=self.DRAW_SIZE, center=True)
        return image_profile(image.array, data_scale, data_scale, True, f"psf={self.path}")


def psf_source(psf, count: int | None = None, includes_pixel: bool = True) -> PSFSource | None:
    """The PSF source of option ``psf`` (module docstring); None for None. ``count``: the rows
    a cube must hold, when known."""
    if psf is None:
        return None
    path = Path(psf)
    if not path.exists():
        raise InputError(f"psf={psf} does not exist")
    if path.is_dir():
        return Folder(path, includes_pixel)
    name = path.name.lower()
    if name.endswith(".psf"):
        return PSFEx(path)
    if name.endswith(".piff"):
        return Piff(path)
    if not name.endswith(FITS_SUFFIXES):
        raise InputError(f"psf={psf}: give a FITS image or cube, a folder of them, a PSFEx .psf "
                         "or a PIFF .piff model")  # fmt: skip
    from astropy.io import fits

    shape = fits.getheader(path).get("NAXIS", 0)
    return Cube(path, count, includes_pixel) if shape == 3 else OneImage(path, includes_pixel)


def fwhm_px(profile, scale: float) -> float:
    """FWHM of ``profile`` (arcsec) in pixels of ``scale`` arcsec."""
    from simulate.psf import profile_fwhm

    value = profile_fwhm(profile) / scale
    return value if math.isfinite(value) else math.nan


def psfs_for(needs_psf: bool, images, psf, includes_pixel: bool = True):
    """A PSF-conditioned model's PSF per row: ``psf`` (``psf_source``), or, without one, the
    PSF an HDF5 input carries per stamp; None for a model with its own PSF."""
    from .inputs import count_images, hdf5_has_psfs

    if not needs_psf:
        return None
    if psf is None and hdf5_has_psfs(images):
        return RowImages()
    return psf_source(psf, count_images(images), includes_pixel)


class ProfileCache:
    """What was computed from a PSF profile (a transfer function, the network's PSF input),
    kept for the few profiles many rows share and forgotten, oldest first, beyond ``size``
    entries: a PSF per row (a cube, a PSFEx model) does not fill memory. Each entry holds its
    profile, so an entry is never mistaken for another profile's."""

    def __init__(self, size: int = 64):
        from collections import OrderedDict

        self.size, self._entries = size, OrderedDict()

    def get(self, profile, key, compute):
        """``compute()`` for ``profile`` and ``key``, or what it gave before."""
        full = (id(profile), key)
        entry = self._entries.get(full)
        if entry is not None and entry[0] is profile:
            self._entries.move_to_end(full)
            return entry[1]
        value = compute()
        self._entries[full] = (profile, value)
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return value
