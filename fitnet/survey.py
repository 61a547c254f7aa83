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

import logging
from pathlib import Path

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.io import fits
from astropy.nddata.utils import overlap_slices
from astropy.table import Table, hstack
from astropy.wcs import WCS
from tqdm import tqdm

from .flags import BITS
from .inference import checker_for, predict_table
from .inputs import InputError, Stamp, StampMaker, fits_pixel_scale, scale_mismatch
from .runtime import UserError

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

    def __init__(self, path, weight=None, rms=None, mask=None):
        self.path = Path(path)
        self.data, self.header = self._open(self.path, "input")
        self.wcs = WCS(self.header) if self.header is not None else None
        if weight is not None and rms is not None:
            raise UserError("give weight= or rms=, not both")
        self.weight = None if weight is None else self._map(weight, "weight")
        self.rms = None if rms is None else self._map(rms, "rms")
        self.mask = None if mask is None else self._map(mask, "mask")

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
        """(data, bad, padding, rms) of the ``size`` square about pixel (x, y): data in the
        mosaic's units (NaN beyond its edge, which is padding), bad pixels (mask, zero weight, NaN), the pixels
        beyond the edge, and the noise rms per pixel from the weight or rms map (or None)."""
        # Cutout2D's own placement, reading only the overlapping pixels of the mosaic
        inside, cut = overlap_slices(self.data.shape, (size, size), (y, x), mode="partial")
        data = np.full((size, size), np.nan, dtype=np.float32)
        data[cut] = self.data[inside]
        padding = np.ones(data.shape, dtype=bool)
        padding[cut] = False
        bad = ~np.isfinite(data) & ~padding
        rms = None
        if self.weight is not None or self.rms is not None:
            rms = np.full(data.shape, np.nan)
            source = self.weight if self.weight is not None else self.rms
            values = np.asarray(source[inside], dtype=float)
            if self.weight is not None:
                with np.errstate(divide="ignore"):
                    values = np.where(values > 0, 1.0 / np.sqrt(values), np.nan)
            rms[cut] = values
            bad |= ~np.isfinite(rms) & ~padding
        if self.mask is not None:
            bad[cut] |= np.asarray(self.mask[inside]) != 0
        return data, bad, padding, rms


def to_model_depth(data, rms, model_rms: float, input_scale: float, rng) -> np.ndarray:
    """``data`` (input units) with Gaussian noise added where its ``rms`` (input units, NaN =
    unknown) is below the model's ``model_rms`` (e-/s per pixel), so that every pixel has the
    model's noise; shallower pixels are left as they are."""
    target = model_rms / input_scale  # in input units
    extra = np.sqrt(np.clip(target**2 - np.nan_to_num(rms, nan=target) ** 2, 0, None))
    return (data + extra * rng.standard_normal(data.shape)).astype(np.float32)


def stamps(mosaic: Mosaic, x, y, maker: StampMaker, input_scale: float, seed: int):
    """The Stamp of every position (x, y): a flagged row without a measurement for one
    outside the mosaic, a padded one flagged ``off_image`` for a cutout over its edge."""
    height, width = mosaic.data.shape
    rng = np.random.default_rng(seed)
    name = mosaic.path.name
    for k, (px, py) in enumerate(zip(x, y, strict=True)):
        source = f"{name}[{k}]"  # the k-th catalogue row
        if not (np.isfinite(px) and np.isfinite(py)) or not (
            -0.5 <= px < width - 0.5 and -0.5 <= py < height - 0.5
        ):
            yield Stamp(
                source, None, BITS["off_image"], f"off_image: ({px:.1f}, {py:.1f}) px is outside"
            )
            continue
        data, bad, padding, rms = mosaic.cutout(px, py, maker.stamp_size)
        # padding: background noise of the model's rms, as for any small cutout
        data[padding] = rng.normal(0.0, maker.noise_rms / input_scale, int(padding.sum()))
        if rms is not None:
            data = to_model_depth(data, rms, maker.noise_rms, input_scale, rng)
        stamp = maker(source, data, bad, padding)
        if padding.any():
            stamp.flag |= BITS["off_image"]
            detail = f"off_image: the cutout runs {int(padding.sum())} px off the image's edge"
            stamp.problem = "; ".join(p for p in (stamp.problem, detail) if p)
        yield stamp


def survey_table(sources: Table, table: Table, x, y) -> Table:
    """The catalogue ``sources`` with the prediction ``table`` beside it (an input column
    with the name of one of ours is kept as ``<name>_input``) and the pixel positions."""
    ours = table.copy()
    ours.remove_columns([c for c in ("row", "source") if c in ours.colnames])
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
    mosaic: Mosaic,
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
    """The catalogue of every row of ``sources`` measured on ``mosaic`` (module docstring);
    ``pixel_scale`` (arcsec / pixel) for a mosaic whose header states none."""
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
    x, y = mosaic.pixels(sources, columns)
    maker = StampMaker(
        predictor.stamp_size,
        predictor.noise_rms,
        input_scale,
        pad_seed,
        checker_for(predictor, quality),
    )
    rows = stamps(mosaic, x, y, maker, input_scale, pad_seed)
    with tqdm(total=len(sources), unit="src", desc="predict", disable=not progress) as bar:
        table = predict_table(predictor, rows, batch_size, bar.update, quality)
    return survey_table(sources, table, x, y)
