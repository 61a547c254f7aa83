"""``python -m fitnet.merge input=cats/ output=all.fits``: join the catalogues of a folder run of
``fitnet.predict`` (``output=cats/``, one catalogue per input) into one.

The folder's manifest (``inputs.json``, written by every job) lists every input and its
catalogue; a catalogue still missing is refused, naming it, so that a survey's catalogue is
never silently short of a tile. The rows keep their order within each catalogue, the
catalogues the order of the inputs, and an ``input`` column names the file each row came from.
The catalogues must have the same columns with the same units.

Example: python -m fitnet.merge input=cats/ output=survey.fits
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from omegaconf import DictConfig

from sersic_runtime.commands import command
from sersic_runtime.errors import UserError

from .catalogue import MANIFEST, write_table

if TYPE_CHECKING:
    from astropy.table import Table

log = logging.getLogger(__name__)


def catalogues(folder: Path) -> list[dict]:
    """The manifest's entries (input, output) of a folder run; refuses missing catalogues."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise UserError(
            f"input={folder} has no {MANIFEST}: give the output folder of a run of "
            "python -m fitnet.predict output=<folder>/"
        )
    jobs = json.loads(manifest.read_text())["inputs"]
    missing = [job for job in jobs if not Path(job["output"]).is_file()]
    if missing:
        raise UserError(
            f"{len(missing)} of {len(jobs)} inputs have no catalogue in {folder} yet (first: "
            f"{missing[0]['input']} -> {missing[0]['output']}): run their shards first"
        )
    return jobs


def join(jobs: list[dict]) -> Table:
    """The catalogues of ``jobs`` one after the other, with an ``input`` column first."""
    from astropy.table import Table, vstack

    tables, layout = [], None
    for job in jobs:
        table = Table.read(job["output"])
        columns = [(c, table[c].unit) for c in table.colnames]
        layout = layout or columns
        if columns != layout:
            raise UserError(
                f"{job['output']} and {jobs[0]['output']} differ in their columns or units: "
                "catalogues joined must come from one model and one set of options"
            )
        table.add_column(np.full(len(table), job["input"]), name="input", index=0)
        tables.append(table)
    merged = vstack(tables, metadata_conflicts="silent")
    merged.meta = {k: v for k, v in tables[0].meta.items() if k not in ("input", "catalog")}
    merged.meta["inputs"] = len(jobs)
    return merged


def run(cfg: DictConfig) -> Table:
    """Join the catalogues of the folder ``cfg.input`` into ``cfg.output``; return the table."""
    jobs = catalogues(Path(cfg.input))
    table = join(jobs)
    write_table(table, cfg.output)
    log.info("joined %d catalogues (%d rows) into %s", len(jobs), len(table), cfg.output)
    return table


main = command("fitnet.merge", "merge", __doc__)(run)

if __name__ == "__main__":
    main()
