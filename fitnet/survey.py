"""Survey data: cutouts of a mosaic at the positions of a source catalogue.

``python -m fitnet.predict input=mosaic.fits catalog=sources.fits [weight=ivar.fits | rms=rms.fits]
[mask=bad.fits]`` measures every catalogue row: its position (``ra``, ``dec`` in degrees through
the mosaic's celestial WCS, or ``x``, ``y`` in 0-based pixels; the column names are
``columns.*``) is cut out at the model's stamp size, placed as astropy's ``Cutout2D`` places it
(``overlap_slices``) and read from the file piece by piece (``ImageHDU.section``), the pixels
beyond the mosaic's edge become noise padding (``off_image``), and, with a weight or rms map,
the cutout is brought to the model's noise level: where the map says the data are deeper than
the training data, Gaussian noise makes up the difference, pixel by pixel; shallower data are
left as they are and flagged by the noise check. Then every check of conf/quality runs as for
any cutout. Only each cutout's pixels are read (through a memory map, or tile by tile for a
tile-compressed mosaic), so the process's own memory stays flat for a large mosaic; the pages
of the file it has read count in its resident size until the system needs them back.

The output keeps every column of the catalogue, one row per catalogue row in its order, and
adds the predictions, sigmas, flags, what the checks measured, and the position ``x_image``,
``y_image`` (0-based pixels of the mosaic).
"""

from __future__ import annotations

import glob
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata.utils import overlap_slices
from astropy.table import Table, hstack
from astropy.wcs import WCS
from scipy import ndimage

from sersic_runtime.errors import UserError
from sersic_runtime.options import as_list

from .flags import BITS
from .inputs import Cutout, InputError, fits_pixel_scale, given_scale_clash, scale_mismatch, unread

log = logging.getLogger(__name__)


def read_sources(path) -> Table:
    """The source catalogue at ``path`` (FITS, CSV or ECSV, by astropy), with at least a row."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"catalog={path} does not exist")
    try:
        table = Table.read(path)
    except Exception as err:  # noqa: BLE001 - any reading failure is the user's file
        raise InputError(f"catalog={path} cannot be read as a table: {err}") from err
    if len(table) == 0:
        raise InputError(f"catalog={path} has no rows")
    return table


class Mosaic:
    """A mosaic FITS image (the first HDU with 2-D data, read piece by piece) with its WCS and,
    optionally, weight (inverse variance) or rms map and mask of the same shape."""

    def __init__(self, path, weight=None, rms=None, mask=None, segmap=None):
        self.path = Path(path)
        self.data, self.header = self._open(self.path, "input")
        self.wcs = WCS(self.header) if self.header is not None else None
        if weight is not None and rms is not None:
            raise UserError("give weight= or rms=, not both")
        self.weight = None if weight is None else self._map(weight, "weight")
        self.rms = None if rms is None else self._map(rms, "rms")
        self.mask = None if mask is None else self._map(mask, "mask")
        self.segmap = None if segmap is None else self._map(segmap, "segmap")

    @staticmethod
    def _open(path: Path, key: str):
        if not path.is_file():
            raise InputError(f"{key}={path} does not exist")
        hdul = fits.open(path, memmap=True)  # memmap=False reads 1.6x slower, row by row
        for hdu in hdul:
            if getattr(hdu, "is_image", False) and hdu.header.get("NAXIS", 0) == 2:
                return hdu.section, hdu.header  # read piece by piece, also tile-compressed
        raise InputError(f"{key}={path} holds no 2-D image")

    def _map(self, path, key: str) -> np.ndarray:
        data, header = self._open(Path(path), key)
        if data.shape != self.data.shape:
            raise InputError(
                f"{key}={path} has shape {data.shape}, the mosaic {self.path} {self.data.shape}"
            )
        if header is not None and self.wcs is not None and WCS(header).has_celestial:
            mine, theirs = self.wcs.celestial, WCS(header).celestial
            if not np.allclose(mine.wcs.crval, theirs.wcs.crval) or not np.allclose(
                mine.wcs.crpix, theirs.wcs.crpix
            ):
                raise InputError(f"{key}={path} has another WCS than the mosaic {self.path}")
        return data

    def pixels(self, sources: Table, columns) -> tuple[np.ndarray, np.ndarray]:
        """0-based (x, y) pixels of the catalogue's positions: from ``columns.ra``,
        ``columns.dec`` (deg) through the WCS, else from ``columns.x``, ``columns.y``."""
        names = sources.colnames
        if columns.ra in names and columns.dec in names:
            if self.wcs is None or not self.wcs.has_celestial:
                raise InputError(
                    f"{self.path} has no celestial WCS to place the catalogue's "
                    f"{columns.ra}/{columns.dec}; give pixel positions in columns "
                    f"{columns.x}/{columns.y}"
                )
            sky = SkyCoord(sources[columns.ra], sources[columns.dec], unit="deg")
            x, y = self.wcs.celestial.world_to_pixel(sky)
            return np.asarray(x, float), np.asarray(y, float)
        if columns.x in names and columns.y in names:
            return np.asarray(sources[columns.x], float), np.asarray(sources[columns.y], float)
        raise InputError(
            f"the catalogue has no position columns: need {columns.ra}/{columns.dec} (deg) or "
            f"{columns.x}/{columns.y} (0-based pixels) (columns.* names them); it has "
            f"{', '.join(names[:12])}"
        )

    def cutout(self, x: float, y: float, size: int):
        """(data, masked, padding, rms, origin) of the ``size`` square about pixel (x, y): data
        in the mosaic's units (NaN beyond its edge, which is padding, and where there are no
        data: NaN or zero weight), the pixels of the user's mask, the pixels beyond the edge,
        the noise rms per pixel from the weight or rms map (or None), and the mosaic pixel
        (x, y) of the cutout's first pixel."""
        # Cutout2D's own placement, reading only the overlapping pixels of the mosaic
        inside, cut = overlap_slices(self.data.shape, (size, size), (y, x), mode="partial")
        data = np.full((size, size), np.nan, dtype=np.float32)
        data[cut] = self.data[inside]
        padding = np.ones(data.shape, dtype=bool)
        padding[cut] = False
        masked = np.zeros(data.shape, dtype=bool)
        rms = None
        if self.weight is not None or self.rms is not None:
            rms = np.full(data.shape, np.nan)
            source = self.weight if self.weight is not None else self.rms
            values = np.asarray(source[inside], dtype=float)
            if self.weight is not None:
                with np.errstate(divide="ignore"):
                    values = np.where(values > 0, 1.0 / np.sqrt(values), np.nan)
            rms[cut] = values
            data[~np.isfinite(rms) & ~padding] = np.nan  # zero weight: no data
        if self.mask is not None:
            masked[cut] = np.asarray(self.mask[inside]) != 0
        origin = (inside[1].start - cut[1].start, inside[0].start - cut[0].start)
        return data, masked, padding, rms, (float(origin[0]), float(origin[1]))

    def segments(self, x: float, y: float, size: int) -> np.ndarray:
        """The segmentation map's labels (0 = sky, and beyond the edge) of the cutout about
        pixel (x, y), placed as ``cutout`` places the data."""
        inside, cut = overlap_slices(self.segmap.shape, (size, size), (y, x), mode="partial")
        labels = np.zeros((size, size), dtype=np.int64)
        labels[cut] = self.segmap[inside]
        return labels


def segmap_neighbours(data, labels, own: int, quality) -> tuple[np.ndarray, int, float]:
    """The pixels of the other sources of a cutout's segmentation ``labels`` (grown by
    ``quality.neighbour_dilate_px``, never over the target's own segment ``own``), their number,
    and the largest flux ratio to the target of one that touches it (0 when none does)."""
    others = (labels != 0) & (labels != own)
    count = len(np.unique(labels[others]))
    grow = int(quality.neighbour_dilate_px)
    mask = ndimage.binary_dilation(others, iterations=grow) if grow and count else others
    ratio = 0.0
    if own and count:
        mask &= labels != own
        touch = ndimage.binary_dilation(labels == own, iterations=max(grow, 1)) & others
        flux = np.bincount(labels.ravel(), weights=np.nan_to_num(data).ravel().astype(float))
        own_flux = flux[own] if own < len(flux) else 0.0
        for k in np.unique(labels[touch]):
            if own_flux > 0:
                ratio = max(ratio, flux[k] / own_flux)
    return mask, count, ratio


def assign(mosaics: list[Mosaic], sources: Table, columns):
    """For every catalogue row: the index of the mosaic it lies deepest inside (-1 when in
    none) and its 0-based pixel position (x, y) there (in the first mosaic when in none)."""
    margins, xs, ys = [], [], []
    for mosaic in mosaics:
        x, y = mosaic.pixels(sources, columns)
        height, width = mosaic.data.shape
        margin = np.minimum.reduce([x + 0.5, width - 0.5 - x, y + 0.5, height - 0.5 - y])
        margins.append(np.where(np.isfinite(margin), margin, -np.inf))
        xs.append(x)
        ys.append(y)
    margins = np.stack(margins)
    which = np.argmax(margins, axis=0)
    rows = np.arange(len(sources))
    x, y = np.stack(xs)[which, rows], np.stack(ys)[which, rows]
    inside = margins[which, rows] > 0
    return np.where(inside, which, -1), x, y


def mosaic_cutouts(mosaics: list[Mosaic], which, x, y, size: int, quality=None, ids=None,
                   pixel_scale: float | None = None) -> Iterator[Cutout]:  # fmt: skip
    """The Cutout of every catalogue row, ``size`` square, cut from mosaic ``mosaics[which[k]]``
    at (x, y): a row without pixels for one outside every mosaic, flagged ``off_image``, and a
    padded one, flagged too, for a cutout over an edge. With a segmentation map, the pixels of
    other segments are the cutout's ``others`` (the target's segment: ``ids``, the
    catalogue's labels, else the label at its position); a bright one touching the target sets
    ``neighbours``, and ``n_neighbours`` and ``masked_fraction`` count them."""
    for k, (m, px, py) in enumerate(zip(which, x, y, strict=True)):
        if m < 0:
            yield unread(
                f"row {k}", "off_image", f"({px:.1f}, {py:.1f}) px is outside every mosaic", k
            )
            continue
        mosaic = mosaics[m]
        data, masked, padding, rms, origin = mosaic.cutout(px, py, size)
        scale = fits_pixel_scale(mosaic.header) or pixel_scale
        cutout = Cutout(f"{mosaic.path.name}[{k}]", data, masked, padding, rms, origin=origin,
                        pixel_scale=scale, header=mosaic.header, index=k)  # fmt: skip
        if padding.any():
            add_reading_problem(
                cutout, "off_image", f"the cutout runs {int(padding.sum())} px off the image's edge"
            )
        if mosaic.segmap is not None:
            segment_neighbours(
                mosaic, cutout, (px, py), size, None if ids is None else ids[k], quality
            )
        yield cutout


def add_reading_problem(cutout: Cutout, name: str, detail: str) -> None:
    cutout.flag |= BITS[name]
    cutout.problem = "; ".join(p for p in (cutout.problem, f"{name}: {detail}") if p)


def segment_neighbours(mosaic, cutout: Cutout, position, size: int, own, quality) -> None:
    """The other segments of the segmentation map in ``cutout`` (``others``), counted; a
    bright one touching the target flags ``neighbours``."""
    labels = mosaic.segments(*position, size)
    if own is None:
        own = int(labels[size // 2, size // 2])  # overlap_slices puts the position there
    mask, count, ratio = segmap_neighbours(cutout.data, labels, int(own), quality)
    cutout.others = mask
    cutout.columns.update(n_neighbours=count, masked_fraction=float(mask.mean()))
    if (
        quality is not None
        and ratio >= quality.neighbour_flux_ratio
        and quality.checks.get("neighbours", True)
    ):
        add_reading_problem(
            cutout, "neighbours", f"a segment of {ratio:.2g} x its flux touches it (segmap)"
        )


def survey_table(sources: Table, table: Table, x, y, mosaic=None) -> Table:
    """The catalogue ``sources`` with the prediction ``table`` beside it (an input column
    with the name of one of ours is kept as ``<name>_input``), the pixel positions and, for
    several mosaics, the file each row was measured on (``mosaic``)."""
    ours = table.copy()
    ours.remove_columns([c for c in ("row", "source") if c in ours.colnames])
    if mosaic is not None:
        ours["mosaic"] = mosaic
        ours["mosaic"].description = "the mosaic the row was measured on ('' = none holds it)"
    ours["x_image"], ours["y_image"] = np.asarray(x, float), np.asarray(y, float)
    for col in ("x_image", "y_image"):
        ours[col].unit = "pix"
        ours[col].description = f"position in the mosaic, 0-based pixel ({col[0]} = column)"
    kept = sources.copy()
    for name in kept.colnames:
        if name in ours.colnames:
            log.warning("the catalogue's column %s is kept as %s_input", name, name)
            kept.rename_column(name, f"{name}_input")
    out = hstack([kept, ours], join_type="exact", metadata_conflicts="silent")
    out.meta.update(table.meta)
    return out


def survey_cutouts(predictor, mosaics: list[Mosaic], sources: Table, columns, size: int, *,
                   quality, pixel_scale: float | None, allow_mismatch: bool):  # fmt: skip
    """The cutouts of every row of ``sources``, each on the mosaic it lies deepest in (module
    docstring), and (which mosaic, x, y) of each row; ``pixel_scale`` (arcsec / pixel) for
    mosaics whose header states none."""
    for mosaic in mosaics:
        check_scale(mosaic, predictor, pixel_scale, allow_mismatch)
    which, x, y = assign(mosaics, sources, columns)
    ids = None
    if columns.get("id") is not None and any(m.segmap is not None for m in mosaics):
        if columns.id not in sources.colnames:
            raise InputError(f"columns.id={columns.id}: the catalogue has no such column")
        ids = np.asarray(sources[columns.id], dtype=np.int64)
    return mosaic_cutouts(mosaics, which, x, y, size, quality, ids, pixel_scale), (which, x, y)


def with_sources(sources: Table, table: Table, mosaics: list[Mosaic], placed) -> Table:
    """The catalogue ``sources`` with the measured ``table`` beside it (``survey_table``)."""
    which, x, y = placed
    names = np.array([mosaics[m].path.name if m >= 0 else "" for m in which])
    return survey_table(sources, table, x, y, names if len(mosaics) > 1 else None)


def check_scale(mosaic: Mosaic, predictor, pixel_scale, allow_mismatch: bool) -> None:
    """InputError unless the mosaic's pixel scale (its header's, else ``pixel_scale``) is the
    model's (or ``allow_mismatch``)."""
    scale = fits_pixel_scale(mosaic.header)
    clash = given_scale_clash(str(mosaic.path), scale, pixel_scale)
    if clash:
        raise InputError(clash)
    if scale is None:
        if pixel_scale is None:
            raise InputError(
                f"{mosaic.path} states no pixel scale (no celestial WCS or PIXSCALE keyword); "
                "pass pixel_scale="
            )
        scale = pixel_scale
    if predictor.needs_psf:
        return  # the generalist measures any pixel scale
    problem = scale_mismatch(str(mosaic.path), scale, predictor.pixel_scale)
    if problem and not allow_mismatch:
        raise InputError(problem)


def expand(value) -> list[str]:
    """A path option as a list of paths: one path, a list, and glob patterns (sorted)."""
    out = []
    for item in as_list(value):
        item = str(item)
        if any(ch in item for ch in "*?["):
            matches = sorted(glob.glob(item))
            if not matches:
                raise InputError(f"{item} matches no file")
            out.extend(matches)
        else:
            out.append(item)
    return out


def open_mosaics(inputs, weight=None, rms=None, mask=None, segmap=None) -> list[Mosaic]:
    """The mosaics of ``inputs`` (a path, a list or globs), each with its maps: every map
    option, when given, names one file per mosaic in the same order."""
    paths = expand(inputs)
    maps = {}
    for key, value in (("weight", weight), ("rms", rms), ("mask", mask), ("segmap", segmap)):
        if value is None:
            maps[key] = [None] * len(paths)
            continue
        files = expand(value)
        if len(files) != len(paths):
            raise InputError(
                f"{key}= names {len(files)} file(s) for {len(paths)} mosaic(s): give one per "
                "mosaic, in the same order"
            )
        maps[key] = files
    return [Mosaic(p, *(maps[k][i] for k in ("weight", "rms", "mask", "segmap")))
            for i, p in enumerate(paths)]  # fmt: skip
