"""Catalogues on disk: CSV, ECSV or FITS by the file's suffix, written under a temporary name
and renamed, with a unit on every column that has one."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

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
