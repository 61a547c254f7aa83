"""Files written so that nothing is lost: under a temporary name, renamed when complete; and
the package's version, which every artifact records."""

from __future__ import annotations

import os
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

DISTRIBUTION = "sersic-fitnet"


def package_version() -> str:
    """The installed version of sersic-fitnet ('unknown' when not installed)."""
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:
        return "unknown"


@contextmanager
def atomic_path(path: Path):
    """Yield a temporary sibling of ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    # the process id in the name: jobs sharing a folder may write the same file at once
    tmp = path.with_name(f"{path.name}.{os.getpid()}.partial")
    tmp.unlink(missing_ok=True)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
