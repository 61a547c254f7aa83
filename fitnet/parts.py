"""Measured rows saved beside the output as a prediction goes, so that a killed run resumes.

A run writing ``cat.ecsv`` keeps its measured rows in ``.cat.ecsv.parts/`` next to it: a
``run.json`` naming the run (its configuration, and the size and modification time of every
file it reads) and parts ``rows-<first row>.json`` of consecutive rows, each written under a
temporary name and renamed. The same command run again loads the parts, measures only the rows
after them, writes the catalogue and removes the folder. Parts of another run (another
checkpoint, input or option) are ignored and replaced, with one warning line. The rows are
plain JSON (numbers, strings, lists): reading them runs no code.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np

from sersic_runtime.files import atomic_path

log = logging.getLogger(__name__)

RUN_FILE = "run.json"


def folder_of(output: Path) -> Path:
    """The parts folder of catalogue ``output``: hidden, beside it."""
    output = Path(output)
    return output.parent / f".{output.name}.parts"


def file_stamp(path) -> list:
    """What identifies the version of a file or of a folder's files: paths, sizes (bytes) and
    modification times (ns)."""
    path = Path(path)
    if path.is_dir():
        return [file_stamp(p) for p in sorted(path.iterdir()) if p.is_file()]
    if path.is_file():
        stat = path.stat()
        return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]
    return [str(path)]


def plain(value):
    """``value`` as JSON's types (numpy scalars to Python's; NaN and infinities kept)."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


class Parts:
    """The saved rows of one run (module docstring): ``run`` describes it (JSON-able),
    ``rows_per_part`` rows are written at a time."""

    def __init__(self, output, run: dict, rows_per_part: int):
        self.folder = folder_of(output)
        self.run = plain(run)
        self.rows_per_part = rows_per_part
        self.rows: list[dict] = []  # every row so far, the saved ones first
        self.saved = 0  # rows written to parts

    def load(self) -> int:
        """Load the rows an earlier run of the same configuration saved (another's are
        removed); return how many."""
        stated = self.folder / RUN_FILE
        if self.folder.exists():
            try:
                same = json.loads(stated.read_text()) == self.run
            except (OSError, ValueError):
                same = False
            if not same:
                log.warning("%s holds rows of another run (another checkpoint, input or option): "
                            "ignored and replaced", self.folder)  # fmt: skip
                shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        if not stated.exists():
            with atomic_path(stated) as tmp:
                tmp.write_text(json.dumps(self.run, indent=1))
        for path in sorted(self.folder.glob("rows-*.json")):
            first = int(path.stem.split("-")[1])
            if first != len(self.rows):  # a gap: keep the consecutive rows only
                break
            self.rows.extend(json.loads(path.read_text()))
        self.saved = len(self.rows)
        if self.saved:
            log.info("resuming: %d rows measured by an earlier run (%s)", self.saved, self.folder)
        return self.saved

    def add(self, rows: list[dict]) -> None:
        """Rows measured after the others; saved whenever ``rows_per_part`` are waiting."""
        self.rows.extend(plain(rows))
        if len(self.rows) - self.saved >= self.rows_per_part:
            self.save()

    def save(self) -> None:
        new = self.rows[self.saved :]
        if not new:
            return
        path = self.folder / f"rows-{self.saved:012d}.json"
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(new, allow_nan=True))
        self.saved = len(self.rows)

    def remove(self) -> None:
        """The run is written: its parts go."""
        shutil.rmtree(self.folder, ignore_errors=True)
