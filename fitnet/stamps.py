"""The prepare stage: each row as read (``inputs.Cutout``) becomes a ``Stamp``, the network's
input in its own system, with what the fit and the catalogue need to come back to the row's
own pixels and units.

``StampMaker`` (a network of one instrument: the specialist) multiplies the pixels by
``input_scale`` to the model's e-/s per pixel, brings a cutout deeper than the model's data to
its noise (a weight or rms map), and pads (with noise) or crops it to the model's stamp with
the simulator's rule (``simulate.stamps.pad_or_crop``); with a ``quality.Checker`` every image
is also checked, recentred and cleaned of neighbours. ``GeneralistMaker`` (the PSF-conditioned
generalist) first sums a cutout larger than the stamp in b x b blocks, brings its noise to the
model's rms, and attaches the row's PSF at that sampling (``psfs``).

Every stamp records how its pixels map back to the cutout's (``factor``, ``offset``: the
cutout pixel of stamp pixel (i, j) is ``offset + factor * (i, j)``), and its positions
(``x_centroid``, ``y_centroid``, ``shift_x``, ``shift_y``) are in the input image's pixels,
whatever the binning.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np

from simulate.stamps import pad_or_crop

from .flags import BITS
from .generalist import background_rms, bin_image, effective_psf
from .inputs import Cutout, InputError
from .psfs import ProfileCache
from .quality import Checker

log = logging.getLogger(__name__)


@dataclass
class Stamp:
    """One row, ready for the network. ``image`` is None when the row has no measurement;
    ``flag`` may be set with an image (a warning the row carries)."""

    source: str  # file name (and HDU / plane), HDF5 index or mosaic row
    image: np.ndarray | None  # the network's stamp, in its units
    flag: int = 0
    problem: str = ""
    columns: dict = field(default_factory=dict)  # what the checks measured (quality.COLUMNS)
    footprint: np.ndarray | None = None  # the target's pixels of ``image`` (bool), if found
    replaced: np.ndarray | None = None  # pixels of ``image`` replaced by noise (bool), if any
    masked: np.ndarray | None = None  # pixels of ``image`` in the user's mask (bool), if any
    psf: np.ndarray | None = None  # the PSF input of a PSF-conditioned model (unit sum), if any
    cutout: Cutout | None = None  # the row as read, for the fit
    factor: int = 1  # cutout pixels per stamp pixel (the generalist's binning)
    top: tuple[int, int] = (0, 0)  # cutout (row, column) of the binned grid's first pixel's first
    offset: tuple[int, int] = (0, 0)  # (binned) image (row, column) of stamp pixel (0, 0)
    to_model: float = 1.0  # input units times this are the network's units
    neighbours: np.ndarray | None = None  # cutout pixels of other sources (bool), if any
    profile: object = None  # the row's PSF (GalSim, arcsec, without the pixel), for the fit
    rms: float = math.nan  # the cutout's background rms, input units

    def image_to_cutout(self, row, column):
        """Cutout (row, column) of (binned) image pixel (``row``, ``column``), the pixel
        centres at integers."""
        centre = (self.factor - 1) / 2  # a binned pixel's centre, in the cutout's pixels
        return (self.top[0] + self.factor * row + centre,
                self.top[1] + self.factor * column + centre)  # fmt: skip

    def to_cutout(self, row, column):
        """Cutout (row, column) of stamp pixel (``row``, ``column``)."""
        return self.image_to_cutout(self.offset[0] + row, self.offset[1] + column)

    def to_input(self, row, column):
        """Input-image (x, y) of stamp pixel (``row``, ``column``): the cutout's pixels plus
        its ``origin`` (a mosaic's pixel of the cutout's first)."""
        y, x = self.to_cutout(row, column)
        return x + self.cutout.origin[0], y + self.cutout.origin[1]


#: Reading problems that make a single image given alone an error rather than a flagged row.
UNUSABLE = BITS["unreadable"] | BITS["not_2d"] | BITS["invalid_pixels"]


def note(stamp: Stamp) -> None:
    """Log a flagged row: skipped (no measurement) or measured with a warning."""
    if stamp.flag:
        log.warning(
            "%s %s: %s", "skipping" if stamp.image is None else "flagged", stamp.source,
            stamp.problem,
        )  # fmt: skip


def flagged(cutout: Cutout, name: str, detail: str) -> Stamp:
    """A row without a measurement, for the reason ``name`` (a fitnet.flags bit)."""
    return Stamp(cutout.source, None, cutout.flag | BITS[name],
                 "; ".join(p for p in (cutout.problem, f"{name}: {cutout.source}: {detail}") if p))  # fmt: skip


def make_stamps(cutouts: Iterable[Cutout], maker) -> Iterator[Stamp]:
    """The stamps of ``cutouts`` by ``maker``, each flagged row logged; a single image that is
    the whole input and cannot be measured is an InputError."""
    for cutout in cutouts:
        if cutout.data is None:
            stamp = Stamp(cutout.source, None, cutout.flag, cutout.problem)
        else:
            stamp = maker(cutout)
            in_input_pixels(stamp)
        if cutout.alone and stamp.image is None and stamp.flag & UNUSABLE:
            raise InputError(stamp.problem)
        note(stamp)
        yield stamp


def in_input_pixels(stamp: Stamp) -> None:
    """The checks' positions (measured in the (binned) image) in the input image's pixels."""
    columns = stamp.columns
    if stamp.cutout is None or "x_centroid" not in columns:
        return
    y, x = stamp.image_to_cutout(columns["y_centroid"], columns["x_centroid"])
    columns["x_centroid"] = x + stamp.cutout.origin[0]
    columns["y_centroid"] = y + stamp.cutout.origin[1]
    for key in ("shift_x", "shift_y"):
        if key in columns:
            columns[key] = columns[key] * stamp.factor


def add_problem(stamp: Stamp, name: str, detail: str) -> None:
    """Set bit ``name`` on ``stamp`` with ``detail``."""
    stamp.flag |= BITS[name]
    stamp.problem = "; ".join(p for p in (stamp.problem, f"{name}: {detail}") if p)


@dataclass
class StampMaker:
    """Brings images to the model's stamp (module docstring); padding gets reproducible
    background noise, drawn from the row's own random state (``seed`` and the row's index), so
    that a row's stamp does not depend on the rows before it (a resumed run is the same).
    Without a ``checker``, NaN or infinite pixels make a row without a measurement."""

    stamp_size: int  # pixel
    noise_rms: float  # e-/s per pixel
    input_scale: float = 1.0  # multiply input pixels by this to get e-/s per pixel
    seed: int = 0
    checker: Checker | None = None
    # e-/s per pixel: the least background rms the model was trained on (noise_rms when None)
    depth_rms: float | None = None
    profile: object = None  # the model's own PSF (GalSim, arcsec), for the fit

    def __call__(self, cutout: Cutout, scale: float | None = None) -> Stamp:
        """The stamp of ``cutout`` (``scale``: input units to the network's; default
        ``input_scale``)."""
        scale = self.input_scale if scale is None else scale
        self._rng = np.random.default_rng((self.seed, cutout.index))
        data = np.asarray(cutout.data, dtype=np.float32)
        if data.ndim != 2:
            return flagged(cutout, "not_2d", f"data has shape {data.shape}, expected a 2-D image")
        if data.size == 0:
            return flagged(cutout, "unreadable", "image is empty")
        # padding without pixels (beyond a mosaic's edge; a stored stamp's padding is noise
        # already) and a segmentation map's neighbours: background noise
        padding, fill = cutout.padding, None
        if padding is not None:
            fill = padding & ~np.isfinite(data)
        if cutout.others is not None:
            padding = cutout.others if padding is None else padding | cutout.others
            fill = cutout.others if fill is None else fill | cutout.others
        if fill is not None and fill.any():
            data = data.copy()
            data[fill] = self._rng.normal(0.0, self.noise_rms / scale, int(fill.sum()))
        invalid, masked = ~np.isfinite(data), None
        if cutout.mask is not None:
            mask = np.asarray(cutout.mask)
            if mask.shape != data.shape:
                return flagged(
                    cutout, "unreadable", f"mask of shape {mask.shape}, image {data.shape}"
                )
            masked = (mask != 0) & ~invalid
        if cutout.rms is not None:  # deeper than the model's data: noise up to its depth
            data = to_depth(data, cutout.rms, (self.depth_rms or self.noise_rms) / scale, self._rng)
        if self.checker is None:
            return self._unchecked(cutout, data * scale, invalid, masked, scale)
        image, check = self.checker(data * scale, invalid, self._rng, padding, masked)
        stamp = Stamp(cutout.source, image, cutout.flag | check.flag,
                      "; ".join(p for p in (cutout.problem, *check.details) if p), check.columns,
                      check.footprint, check.replaced, check.masked, cutout=cutout,
                      offset=check.offset, to_model=scale, profile=self.profile)  # fmt: skip
        ratio = check.columns.get("noise_ratio", math.nan)  # NaN: no sky, take the model's
        stamp.rms = (ratio if ratio > 0 else 1.0) * self.noise_rms / scale
        for key, value in cutout.columns.items():  # a segmentation map's neighbours, counted too
            stamp.columns[key] = stamp.columns.get(key, 0) + value
        if check.neighbours is not None:  # in the image's pixels (binned: GeneralistMaker)
            stamp.neighbours = to_cutout_mask(check.neighbours, check.offset, 1, data.shape)
        return stamp

    def _unchecked(self, cutout, data, invalid, masked, scale) -> Stamp:
        """The stamp without the checks: NaN pixels leave the row unmeasured."""
        if invalid.any():
            return flagged(cutout, "invalid_pixels", f"{int(invalid.sum())} NaN or infinite pixels")
        if masked is not None and masked.any():
            data = data.copy()
            data[masked] = self._rng.normal(0.0, self.noise_rms, int(masked.sum()))
        s, (h, w) = self.stamp_size, data.shape
        offset = (h // 2 - s // 2, w // 2 - s // 2)  # pad_or_crop's rule
        stamp = Stamp(cutout.source, data, cutout.flag, cutout.problem, cutout=cutout,
                      offset=offset, to_model=scale, profile=self.profile)  # fmt: skip
        stamp.rms = self.noise_rms / scale
        if data.shape != (s, s):
            background = None
            if h < s or w < s:
                background = self._rng.normal(0.0, self.noise_rms, (s, s)).astype(np.float32)
            stamp.image = pad_or_crop(data, s, background)
        return stamp


def to_depth(data, rms, target: float, rng) -> np.ndarray:
    """``data`` with Gaussian noise added where its ``rms`` (NaN = unknown) is below
    ``target`` (both in the data's units), so that every pixel is at least that deep's; the
    shallower pixels are left as they are."""
    extra = np.sqrt(np.clip(target**2 - np.nan_to_num(rms, nan=target) ** 2, 0, None))
    return (data + extra * rng.standard_normal(data.shape)).astype(np.float32)


def to_cutout_mask(mask: np.ndarray, offset, factor: int, shape) -> np.ndarray:
    """The stamp pixels ``mask`` (bool) as a mask of the cutout of ``shape``: stamp pixel
    (i, j) covers the cutout's ``factor`` x ``factor`` block at ``offset + factor (i, j)``."""
    out = np.zeros(shape, dtype=bool)
    rows, cols = np.nonzero(mask)
    rows, cols = offset[0] + factor * rows, offset[1] + factor * cols
    for dy in range(factor):
        for dx in range(factor):
            y, x = rows + dy, cols + dx
            inside = (y >= 0) & (y < shape[0]) & (x >= 0) & (x < shape[1])
            out[y[inside], x[inside]] = True
    return out


@dataclass
class GeneralistMaker:
    """A ``StampMaker`` for the PSF-conditioned generalist (module docstring). ``psfs`` gives
    each row's PSF (``psfs.PSFSource``), ``psf_size`` is the network's PSF input (pixel) and
    ``fwhm_range`` the PSF FWHM it was trained on (pixel)."""

    maker: StampMaker
    psfs: object
    psf_size: int
    fwhm_range: tuple[float, float]
    quality: object = None  # conf/quality: the noise measurement's source mask
    _inputs: ProfileCache = field(default_factory=ProfileCache)

    def psf_input(self, psf, scale: float) -> tuple[np.ndarray, float]:
        """The network's PSF input of ``psf`` at ``scale`` arcsec / pixel, and its FWHM
        there (pixel); kept for the PSFs shared by many rows."""
        from simulate.psf import profile_fwhm

        return self._inputs.get(psf, scale, lambda: (effective_psf(psf, scale, self.psf_size),
                                                     profile_fwhm(psf) / scale))  # fmt: skip

    def __call__(self, cutout: Cutout) -> Stamp:
        data = np.asarray(cutout.data, dtype=np.float64)
        checker = self.maker.checker
        if (
            data.ndim != 2
            or data.size == 0
            or (checker and max(data.shape) > checker.q.max_cutout_px)
        ):
            return self.maker(cutout)  # flagged: not 2-D, empty or a field
        psf, problem = self.psfs.for_row(cutout)
        if psf is None:
            return flagged(cutout, "unreadable", problem)
        factor = max(1, math.ceil(max(data.shape) / self.maker.stamp_size))
        binned, top = bin_cutout(cutout, factor)
        rms = background_rms(binned.data, binned.rms, self.quality)
        scale = self.maker.noise_rms / rms if rms > 0 else math.nan
        if not math.isfinite(scale):
            stamp = flagged(cutout, "no_source", "no noise measured")
            stamp.columns.update(bin_factor=factor, noise_rms=rms)
            return stamp
        stamp = self.maker(binned, scale)
        stamp.cutout, stamp.factor, stamp.top, stamp.profile = cutout, factor, top, psf
        stamp.rms = rms / factor  # per cutout pixel: the binned sum of b^2 pixels has b x their rms
        if stamp.neighbours is not None:  # from the binned image's pixels to the cutout's
            stamp.neighbours = to_cutout_mask(stamp.neighbours, top, factor, data.shape)
        stamp.psf, fwhm = self.psf_input(psf, cutout.pixel_scale * factor)
        stamp.columns.update(bin_factor=factor, noise_rms=rms, input_scale=scale, psf_fwhm_px=fwhm)
        lo, hi = self.fwhm_range
        if not lo <= fwhm <= hi:
            add_problem(
                stamp,
                "psf_range",
                f"PSF FWHM {fwhm:.2f} px outside the trained {lo:.2f}-{hi:.2f} px"
                " (cleared where the fit measures every label)",
            )
        return stamp


def bin_cutout(cutout: Cutout, factor: int) -> tuple[Cutout, tuple[int, int]]:
    """``cutout`` summed in ``factor`` x ``factor`` blocks about its centre (a binned pixel is
    masked or not data if any of its pixels is), and the cutout (row, column) of the first
    binned pixel's first pixel."""
    if factor == 1:
        return cutout, (0, 0)
    h, w = cutout.data.shape
    top = ((h - h // factor * factor) // 2, (w - w // factor * factor) // 2)

    def any_of(mask):
        return None if mask is None else bin_image(np.asarray(mask) != 0, factor) > 0

    rms = None if cutout.rms is None else np.sqrt(bin_image(cutout.rms**2, factor))
    binned = Cutout(cutout.source, bin_image(cutout.data, factor), any_of(cutout.mask),
                    any_of(cutout.padding), rms, any_of(cutout.others), cutout.origin,
                    cutout.pixel_scale * factor, None, cutout.header, cutout.index,
                    cutout.flag, cutout.problem)  # fmt: skip
    return binned, top
