"""Checks of option values shared by several commands; each raises UserError naming the
option and what is allowed."""

from __future__ import annotations

import math

from omegaconf import OmegaConf

from .errors import UserError


def positive(key: str, value, allow_null: bool = False) -> float | None:
    """``value`` of option ``key`` as a finite number > 0 (None when ``allow_null`` and null);
    UserError naming it otherwise."""
    if value is None and allow_null:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not (math.isfinite(number) and number > 0):
        allowed = "a number > 0" + (" or null" if allow_null else "")
        raise UserError(f"{key}={value!r} is not allowed: must be {allowed}")
    return number


def as_list(value) -> list:
    """A config value that may be one item or a list of them, as a list."""
    if OmegaConf.is_list(value):
        return list(OmegaConf.to_container(value))
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def check_shards(shards: int, shard: int | None) -> None:
    """``shards`` >= 1 jobs share a run; ``shard`` (this job's share) is in [0, shards) or None.
    (``python -m simulate`` and ``python -m fitnet.predict output=<folder>/`` take both.)"""
    if not isinstance(shards, int) or shards < 1:
        raise UserError(f"shards={shards!r} is not allowed: must be an integer >= 1")
    if shard is not None and not (isinstance(shard, int) and 0 <= shard < shards):
        raise UserError(
            f"shard={shard!r} is not allowed: must lie in [0, shards={shards}) (or null)"
        )
