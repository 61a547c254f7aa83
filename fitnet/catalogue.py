"""Catalogues on disk: CSV, ECSV or FITS by the file's suffix, written under a temporary name
and renamed, with a unit on every column that has one."""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sersic_runtime.errors import UserError

from .labels import TARGETS

if TYPE_CHECKING:
    from astropy.table import Table

MANIFEST = "inputs.json"  # in a folder run's output folder: every input and its catalogue
TABLE_FORMATS = {".csv": "ascii.csv", ".ecsv": "ascii.ecsv", ".fits": "fits", ".fit": "fits"}
# astropy unit strings of the catalogue columns (dimensionless labels get none)
UNITS = {
    name: {"AB mag": "mag", "dimensionless": ""}.get(unit, unit) for name, unit in TARGETS.items()
}


def write_table(table: Table, path: str | Path) -> Path:
    """Write ``table`` as CSV/ECSV/FITS by the file suffix, under a temporary name then renamed.

    In FITS the metadata keys keep their full names (HIERARCH cards), as ``Table.read`` gives
    them back."""
    from astropy.io.fits.verify import VerifyWarning

    path = Path(path)
    fmt = TABLE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UserError(
            f"output={path}: unknown table format {path.suffix!r}; use one of {', '.join(TABLE_FORMATS)}"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial" + path.suffix)
    try:
        with warnings.catch_warnings():
            # astropy warns that keys over 8 characters become HIERARCH cards: that is the intent
            warnings.simplefilter("ignore", VerifyWarning)
            table.write(tmp, format=fmt, overwrite=True)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


#: The estimate's columns beyond the labels: name -> (unit or None for the input's units,
#: description).
ESTIMATE_COLUMNS = {
    "pa": ("deg", "position angle of the major axis, counter-clockwise from +x, in [0, 180)"),
    "x": ("pix", "centre, input image column (0-based, pixel centres at integers)"),
    "y": ("pix", "centre, input image row (0-based, pixel centres at integers)"),
    "flux": (None, "total flux, in the input's units (pixel values summed)"),
    "re_px": ("pix", "re in the input's pixels"),
}
#: The fit's columns: name -> description (dimensionless).
FIT_COLUMNS = {
    "chi2": "reduced chi-square of the fitted Sersic's residual over the source's footprint",
    "chi2_pixels": "pixels of that footprint (the chi-square's degrees of freedom)",
    "fit_iterations": "Levenberg-Marquardt iterations of the fit (0: not fitted)",
    "fitted": "the labels taken from the fit (the others are the network's)",
}


def column_table(rows: list[dict], predictor, settings, extra_columns=None):
    """The catalogue of ``rows`` (``measure.Measurer.rows``): one row each, in order, with a
    unit and a description on every column."""
    from astropy.table import Table

    from .quality import COLUMNS as CHECK_COLUMNS

    table = Table()
    table["row"] = np.arange(len(rows), dtype=np.int64)
    table["source"] = (
        np.array([r["source"] for r in rows], dtype=str) if rows else np.array([], dtype=str)
    )
    # without a zero point (the generalist's, not given), fluxes only
    no_mag = predictor.needs_psf and not any(r.get("zero_point") is not None for r in rows)
    labels = [n for n in predictor.labels if not (n == "mag" and no_mag)]
    for name in labels:
        add(table, name, rows, UNITS[name] or None, f"{name} ({TARGETS[name]})")
        if predictor.has_sigma[name]:
            add(table, f"{name}_err", rows, UNITS[name] or None, f"1-sigma uncertainty of {name}")
    for name, (unit, description) in ESTIMATE_COLUMNS.items():
        key = {"pa": "pa_deg"}.get(name, name)
        add(table, name, rows, unit, description, key)
        if name in ("pa", "flux", "re_px"):
            add(table, f"{name}_err", rows, unit, f"1-sigma uncertainty of {name}", f"{key}_err")
    for name, (unit, description) in (extra_columns or {}).items():
        add(table, name, rows, unit or None, description, columns=True)
    if settings.checks:
        for name, (unit, description) in CHECK_COLUMNS.items():
            add(table, name, rows, unit or None, description, columns=True)
    for name, description in FIT_COLUMNS.items():
        if name == "fitted":
            table[name] = np.array([" ".join(r.get("fitted", [])) for r in rows], dtype=str)
            table[name].description = description
        else:
            add(table, name, rows, None, description, columns=True)
    table["flag"] = np.array([r["flag"] for r in rows], dtype=np.int32)
    table["flag"].description = "bit mask, 0 = trust the row (fitnet.flags)"
    table["problem"] = (
        np.array([r["problem"] for r in rows], dtype=str) if rows else np.array([], dtype=str)
    )
    table["problem"].description = "the names of the flag bits set, with what was measured"
    table.meta["checkpoints"] = ",".join(predictor.paths)
    table.meta["fit"] = settings.fit.mode
    scales = {r["pixel_scale"] for r in rows if r.get("pixel_scale") is not None}
    table.meta["pixel_scale_arcsec"] = scales.pop() if len(scales) == 1 else predictor.pixel_scale
    zero_points = {r["zero_point"] for r in rows if r.get("zero_point") is not None}
    table.meta["zero_point_mag"] = zero_points.pop() if len(zero_points) == 1 else "none given"
    return table


def add(table, name: str, rows: list[dict], unit, description: str, key: str | None = None,
        columns: bool = False) -> None:  # fmt: skip
    """Column ``name`` of ``rows[key]`` (or of their ``columns``), NaN where absent."""
    key = key or name
    values = [(r["columns"] if columns else r).get(key, math.nan) for r in rows]
    table[name] = np.array(values, dtype=float)
    table[name].unit, table[name].description = unit, description
