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
from pathlib import Path

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata.utils import overlap_slices
from astropy.table import Table, hstack
from astropy.wcs import WCS
from scipy import ndimage
from tqdm import tqdm

from sersic_runtime.errors import UserError
from sersic_runtime.options import as_list

from .flags import BITS
from .inference import checker_for, predict_table
from .inputs import InputError, Stamp, StampMaker, fits_pixel_scale, scale_mismatch

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
        """(data, masked, padding, rms) of the ``size`` square about pixel (x, y): data in the
        mosaic's units (NaN beyond its edge, which is padding, and where there are no data: NaN
        or zero weight), the pixels of the user's mask, the pixels
        beyond the edge, and the noise rms per pixel from the weight or rms map (or None)."""
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
        return data, masked, padding, rms

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


def to_model_depth(data, rms, model_rms: float, input_scale: float, rng) -> np.ndarray:
    """``data`` (input units) with Gaussian noise added where its ``rms`` (input units, NaN =
    unknown) is below ``model_rms`` (e-/s per pixel: the model's, or the least of the depths it
    was trained on), so that every pixel is within the model's depths; shallower pixels are left
    as they are."""
    target = model_rms / input_scale  # in input units
    extra = np.sqrt(np.clip(target**2 - np.nan_to_num(rms, nan=target) ** 2, 0, None))
    return (data + extra * rng.standard_normal(data.shape)).astype(np.float32)


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


def stamps(mosaics: list[Mosaic], which, x, y, maker: StampMaker, input_scale: float, seed: int,
           quality=None, ids=None):  # fmt: skip
    """The Stamp of every catalogue row, cut from mosaic ``mosaics[which[k]]`` at (x, y): a
    flagged row without a measurement for one outside every mosaic, a padded one flagged
    ``off_image`` for a cutout over an edge. With a segmentation map, the pixels of other
    segments become noise before the checks (the target's segment: ``ids``, the catalogue's
    labels, else the label at its position)."""
    rng = np.random.default_rng(seed)
    for k, (m, px, py) in enumerate(zip(which, x, y, strict=True)):
        if m < 0:
            yield Stamp(
                f"row {k}", None, BITS["off_image"],
                f"off_image: ({px:.1f}, {py:.1f}) px is outside every mosaic",
            )  # fmt: skip
            continue
        mosaic = mosaics[m]
        source = f"{mosaic.path.name}[{k}]"  # the k-th catalogue row
        data, masked, padding, rms = mosaic.cutout(px, py, maker.stamp_size)
        # padding: background noise of the model's rms, as for any small cutout
        data[padding] = rng.normal(0.0, maker.noise_rms / input_scale, int(padding.sum()))
        if rms is not None:
            data = to_model_depth(data, rms, maker.depth_rms or maker.noise_rms, input_scale, rng)
        if mosaic.segmap is None:
            stamp = maker(source, data, masked, padding)
        else:
            stamp = segmented_stamp(mosaic, maker, source, data, masked, padding, (px, py),
                                    None if ids is None else ids[k], quality, rng)  # fmt: skip
        if padding.any():
            stamp.flag |= BITS["off_image"]
            detail = f"off_image: the cutout runs {int(padding.sum())} px off the image's edge"
            stamp.problem = "; ".join(p for p in (stamp.problem, detail) if p)
        yield stamp


def segmented_stamp(mosaic, maker, source, data, masked, padding, position, own, quality, rng):
    """The Stamp of a cutout whose neighbours, per the segmentation map, are replaced by noise
    first (left out of the residual as padding is); a bright one touching the target sets
    ``neighbours``, and n_neighbours and masked_fraction count them."""
    size = maker.stamp_size
    labels = mosaic.segments(*position, size)
    if own is None:
        own = int(labels[size // 2, size // 2])  # overlap_slices puts the position there
    mask, count, ratio = segmap_neighbours(data, labels, int(own), quality)
    data = data.copy()
    data[mask] = rng.normal(0.0, maker.noise_rms / maker.input_scale, int(mask.sum()))
    stamp = maker(source, data, masked, padding | mask)
    if stamp.image is None:
        return stamp
    stamp.columns["n_neighbours"] = stamp.columns.get("n_neighbours", 0) + count
    stamp.columns["masked_fraction"] = stamp.columns.get("masked_fraction", 0.0) + mask.mean()
    if ratio >= quality.neighbour_flux_ratio and quality.checks.get("neighbours", True):
        stamp.flag |= BITS["neighbours"]
        detail = f"neighbours: a segment of {ratio:.2g} x its flux touches it (segmap)"
        stamp.problem = "; ".join(p for p in (stamp.problem, detail) if p)
    return stamp


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


def survey_catalogue(
    predictor,
    mosaics: list[Mosaic],
    sources: Table,
    columns,
    batch_size: int,
    *,
    quality,
    input_scale: float,
    pad_seed: int,
    pixel_scale: float | None,
    allow_mismatch: bool,
    progress: bool,
) -> Table:
    """The catalogue of every row of ``sources`` measured on the mosaic it lies deepest in
    (module docstring); ``pixel_scale`` (arcsec / pixel) for mosaics whose header states none."""
    for mosaic in mosaics:
        check_scale(mosaic, predictor, pixel_scale, allow_mismatch)
    which, x, y = assign(mosaics, sources, columns)
    ids = None
    if columns.get("id") is not None and any(m.segmap is not None for m in mosaics):
        if columns.id not in sources.colnames:
            raise InputError(f"columns.id={columns.id}: the catalogue has no such column")
        ids = np.asarray(sources[columns.id], dtype=np.int64)
    maker = StampMaker(
        predictor.stamp_size,
        predictor.noise_rms,
        input_scale,
        pad_seed,
        checker_for(predictor, quality),
        depth_rms=predictor.noise_range[0],
    )
    rows = stamps(mosaics, which, x, y, maker, input_scale, pad_seed, quality, ids)
    with tqdm(total=len(sources), unit="src", desc="predict", disable=not progress) as bar:
        table = predict_table(predictor, rows, batch_size, bar.update, quality)
    names = np.array([mosaics[m].path.name if m >= 0 else "" for m in which])
    return survey_table(sources, table, x, y, names if len(mosaics) > 1 else None)


def check_scale(mosaic: Mosaic, predictor, pixel_scale, allow_mismatch: bool) -> None:
    """InputError unless the mosaic's pixel scale (its header's, else ``pixel_scale``) is the
    model's (or ``allow_mismatch``)."""
    scale = fits_pixel_scale(mosaic.header)
    if scale is None:
        if pixel_scale is None:
            raise InputError(
                f"{mosaic.path} states no pixel scale (no celestial WCS or PIXSCALE keyword); "
                "pass pixel_scale="
            )
        scale = pixel_scale
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
