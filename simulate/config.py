"""Schema and early validation of the `simulate` configuration.

The numbers themselves live in ``conf/``; this module only knows their types and the allowed
ranges, so a bad value fails before any galaxy is rendered, with a message naming the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import galsim
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sersic_runtime.configs import config_dir
from sersic_runtime.errors import ConfigError
from sersic_runtime.options import check_shards


@dataclass
class Range:
    min: float = MISSING
    max: float = MISSING


@dataclass
class IntRange:
    min: int = MISSING
    max: int = MISSING


@dataclass
class Instrument:
    name: str = MISSING
    pixel_scale: float = MISSING  # arcsec / pixel
    zero_point: float = MISSING  # AB mag for 1 e-/s
    exposure_time: float = MISSING  # s
    sky_level: float = MISSING  # e-/s / pixel
    read_noise: float = MISSING  # e- / pixel
    psf: dict[str, Any] = MISSING  # GalSim profile (simulate.psf_record.build_psf)


@dataclass
class Prior:
    mag: Range = field(default_factory=Range)
    n: Range = field(default_factory=Range)
    re: Range = field(default_factory=Range)
    q: Range = field(default_factory=Range)
    pa: Range = field(default_factory=Range)
    offset: Range = field(default_factory=Range)
    size: IntRange = field(default_factory=IntRange)


@dataclass
class Render:
    stamp_size: int = MISSING
    fft_size: int = MISSING
    alias_rings: int = MISSING
    alias_grid: int = MISSING
    alias_skip_flux: float = MISSING
    alias_tolerance: float = MISSING
    n_grid_points: int = MISSING
    block_size: int = MISSING
    sort_window: int = MISSING


@dataclass
class Splits:
    train: float = MISSING
    val: float = MISSING
    test: float = MISSING


@dataclass
class Bounds:
    splits: list[str] = MISSING
    n_relative: float = MISSING
    ln_re: float = MISSING
    q: float = MISSING
    pa: float = MISSING  # deg
    offset: float = MISSING  # pixel


@dataclass
class Companions:
    mean_count: float = MISSING  # Poisson mean per stamp
    distance_px: list[float] = MISSING  # pixel, [min, max]
    delta_mag: list[float] = MISSING  # mag, [min, max] of companion - galaxy


@dataclass
class Jitter:
    mag: float = MISSING  # mag
    n: float = MISSING  # ln n
    re: float = MISSING  # ln re
    q: float = MISSING


@dataclass
class PriorTable:
    file: str | None = None  # reference catalogue of (mag, n, re, q); None = independent draws
    jitter: Jitter = field(default_factory=Jitter)


@dataclass
class Noise:
    """conf/noise: which keys a model needs is checked by ``check_noise``."""

    model: str = MISSING  # ccd, map or correlated
    file: str | None = None  # FITS weight/rms map (map) or blank-sky patch (correlated)
    hdu: int | None = None
    kind: str | None = None  # weight or rms (map)
    scale: float | None = None  # e-/s per pixel per image unit
    quantiles: list[float] | None = None  # fractions (map)
    table_points: int | None = None  # (map)
    max_lag_px: float | None = None  # pixel (correlated)
    min_size_px: int | None = None  # pixel (correlated)
    blank_sigma: float | None = None  # robust sigma (correlated)
    max_source_fraction: float | None = None  # (correlated)
    power_floor: float | None = None  # fraction of the variance (correlated)
    cg_rtol: float | None = None  # (correlated)


#: The keys each noise model needs (conf/noise/<model>.yaml sets them).
NOISE_KEYS = {
    "ccd": (),
    "map": ("file", "hdu", "kind", "scale", "quantiles", "table_points"),
    "correlated": ("file", "hdu", "scale", "max_lag_px", "min_size_px", "blank_sigma",
                   "max_source_fraction", "power_floor", "cg_rtol"),
}  # fmt: skip


@dataclass
class PsfFamily:
    """conf/psf_family: a PSF drawn per galaxy (simulate/psf_family.py), sizes in pixels."""

    weights: dict[str, float] = MISSING  # relative frequency per family
    fwhm_px: list[float] = MISSING  # pixel, [min, max]
    moffat_beta: list[float] = MISSING
    airy_obscuration: list[float] = MISSING
    airy_jitter: list[float] = MISSING  # fraction of the Airy FWHM
    shear: list[float] = MISSING  # reduced shear |g|
    presets: list[str] = MISSING  # conf/instrument names
    image_size_px: int = MISSING  # pixel


@dataclass
class Paths:
    data_dir: str = MISSING


@dataclass
class SimulateConfig:
    paths: Paths = field(default_factory=Paths)
    instrument: Instrument = field(default_factory=Instrument)
    prior: Prior = field(default_factory=Prior)
    render: Render = field(default_factory=Render)
    n: int = MISSING
    seed: int = MISSING
    out_dir: str = MISSING
    workers: int = MISSING
    shards: int = MISSING
    shard: int | None = None
    splits: Splits = field(default_factory=Splits)
    bounds: Bounds = field(default_factory=Bounds)
    companions: Companions = field(default_factory=Companions)
    prior_table: PriorTable = field(default_factory=PriorTable)
    noise: Noise = field(default_factory=lambda: Noise(model="ccd"))
    psf_family: PsfFamily | None = None
    montage: int = MISSING
    noiseless: bool = MISSING
    overwrite: bool = MISSING


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{key}={value!r} is not allowed: {allowed}")


def _check_range(cfg: DictConfig, key: str, lo: float, hi: float, lo_open=False, hi_open=False):
    """Check that prior.<key>.min <= max and that both lie in [lo, hi] (or open ends)."""
    r = cfg.prior[key]
    interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
    for end in ("min", "max"):
        v = r[end]
        if (
            not math.isfinite(v)
            or (v < lo or (lo_open and v == lo))
            or (v > hi or (hi_open and v == hi))
        ):
            _fail(f"prior.{key}.{end}", v, f"must lie in {interval}")
    if r.min > r.max:
        _fail(f"prior.{key}.min", r.min, f"must not exceed prior.{key}.max={r.max}")


def validate(cfg: DictConfig) -> DictConfig:
    """Check types, unknown keys and value ranges; return the config merged onto the schema.

    Raises ConfigError (or an OmegaConf error for unknown keys / wrong types) naming the key,
    the bad value and what is allowed.
    """
    try:
        merged = OmegaConf.merge(OmegaConf.structured(SimulateConfig), cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(f"invalid simulate configuration: {err}") from err

    ins = merged.instrument
    for key in ("pixel_scale", "exposure_time"):
        if not ins[key] > 0:
            _fail(f"instrument.{key}", ins[key], "must be > 0")
    for key in ("sky_level", "read_noise"):
        if not ins[key] >= 0:
            _fail(f"instrument.{key}", ins[key], "must be >= 0")
    if "_target_" not in ins.psf:
        _fail("instrument.psf", OmegaConf.to_container(ins.psf), "needs a _target_ GalSim profile")
    check_psf(ins)

    inf = math.inf
    _check_range(merged, "mag", -inf, inf)
    # GalSim's own limits for the Sersic index (galsim.Sersic raises outside them).
    _check_range(merged, "n", galsim.Sersic._minimum_n, galsim.Sersic._maximum_n)
    _check_range(merged, "re", 0.0, inf, lo_open=True)
    _check_range(merged, "q", 0.0, 1.0, lo_open=True)
    _check_range(merged, "pa", -360.0, 360.0)
    _check_range(merged, "offset", -inf, inf)
    _check_range(merged, "size", 1, inf)

    ren = merged.render
    if ren.stamp_size < 8:
        _fail("render.stamp_size", ren.stamp_size, "must be >= 8 pixels")
    if ren.fft_size < 2 * ren.stamp_size:
        _fail(
            "render.fft_size",
            ren.fft_size,
            f"must be >= 2 * render.stamp_size = {2 * ren.stamp_size}",
        )
    if ren.fft_size % 2:
        _fail("render.fft_size", ren.fft_size, "must be even")
    for key, lo in (("alias_rings", 0), ("alias_grid", 4), ("block_size", 1)):
        if ren[key] < lo:
            _fail(f"render.{key}", ren[key], f"must be >= {lo}")
    if ren.n_grid_points < 0 or ren.n_grid_points == 1:
        _fail("render.n_grid_points", ren.n_grid_points, "must be 0 (no rounding) or >= 2")
    if ren.sort_window < ren.block_size:
        _fail(
            "render.sort_window", ren.sort_window, f"must be >= render.block_size={ren.block_size}"
        )
    if not 0 <= ren.alias_skip_flux < 1:
        _fail("render.alias_skip_flux", ren.alias_skip_flux, "must lie in [0, 1)")

    fractions = merged.splits
    for name in ("train", "val", "test"):
        if not fractions[name] > 0:
            _fail(f"splits.{name}", fractions[name], "must be > 0")
    total = fractions.train + fractions.val + fractions.test
    if abs(total - 1.0) > 1e-9:
        _fail(
            "splits",
            OmegaConf.to_container(fractions),
            f"fractions must sum to 1 (they sum to {total:g})",
        )
    counts = split_counts(merged.n, fractions)
    if min(counts.values()) < 1:
        _fail(
            "n",
            merged.n,
            f"too small for three splits with fractions {dict(fractions)}: gives {counts}",
        )
    for name in merged.bounds.splits:
        if name not in ("train", "val", "test"):
            _fail("bounds.splits", list(merged.bounds.splits), "may only name train, val and test")
    for key in ("n_relative", "ln_re", "q", "pa", "offset"):
        if not merged.bounds[key] > 0:
            _fail(f"bounds.{key}", merged.bounds[key], "must be > 0")
    comp = merged.companions
    if not comp.mean_count >= 0:
        _fail("companions.mean_count", comp.mean_count, "must be >= 0 (0 = none)")
    for key, lo in (("distance_px", 0.0), ("delta_mag", -math.inf)):
        pair = list(comp[key])
        if len(pair) != 2 or not lo <= pair[0] <= pair[1]:
            _fail(f"companions.{key}", pair, f"must be [min, max] with {lo} <= min <= max")
    for key, value in merged.prior_table.jitter.items():
        if not value >= 0:
            _fail(f"prior_table.jitter.{key}", value, "must be >= 0")
    table = merged.prior_table.file
    if table is not None and not Path(table).is_file():
        _fail("prior_table.file", table, "must be an existing FITS, ECSV or CSV table (or null)")
    if table is not None:  # read once here, so that a bad table fails before any rendering
        from .priors import ReferenceTable

        try:
            ReferenceTable.read(table, merged.prior_table.jitter, merged.prior)
        except Exception as err:  # noqa: BLE001 - any reading failure is the user's table
            raise ConfigError(str(err) if isinstance(err, ValueError) else
                              f"prior_table.file={table} cannot be read as a table by astropy "
                              f"({type(err).__name__}): give a FITS, ECSV or CSV file") from err  # fmt: skip
    check_noise(merged.noise)
    if merged.psf_family is not None:
        check_psf_family(merged.psf_family)
    if merged.workers < 0:
        _fail("workers", merged.workers, "must be >= 0 (0 = all cores)")
    if merged.montage < 0:
        _fail("montage", merged.montage, "must be >= 0")
    check_shards(merged.shards, merged.shard)
    return merged


def check_noise(noise) -> None:
    """The noise model's name, the keys it needs and their ranges (its file is read later, by
    ``noise.noise_model``, once)."""
    if noise.model not in NOISE_KEYS:
        _fail("noise", noise.model, f"must be one of {sorted(NOISE_KEYS)} (conf/noise)")
    for key in NOISE_KEYS[noise.model]:
        if OmegaConf.is_missing(noise, key) or noise[key] is None:
            _fail(f"noise.{key}", "???", f"must be given for noise={noise.model} (noise.{key}=...)")
    if noise.model == "ccd":
        return
    if not Path(noise.file).is_file():
        _fail("noise.file", noise.file, "must be an existing FITS file")
    if not noise.scale > 0:
        _fail("noise.scale", noise.scale, "must be > 0 (e-/s per pixel per image unit)")
    if noise.model == "map":
        if noise.kind not in ("weight", "rms"):
            _fail("noise.kind", noise.kind, "must be weight (inverse variance) or rms")
        pair = list(noise.quantiles)
        if len(pair) != 2 or not 0 <= pair[0] < pair[1] <= 1:
            _fail("noise.quantiles", pair, "must be [low, high] with 0 <= low < high <= 1")
        if noise.table_points < 2:
            _fail("noise.table_points", noise.table_points, "must be >= 2")
        return
    for key in ("max_lag_px", "blank_sigma", "power_floor", "cg_rtol"):
        if not noise[key] > 0:
            _fail(f"noise.{key}", noise[key], "must be > 0")
    if noise.min_size_px < 2 * noise.max_lag_px + 1:
        _fail("noise.min_size_px", noise.min_size_px,
              f"must be >= 2 * noise.max_lag_px + 1 = {2 * noise.max_lag_px + 1:g}")  # fmt: skip
    if not 0 <= noise.max_source_fraction < 1:
        _fail("noise.max_source_fraction", noise.max_source_fraction, "must lie in [0, 1)")


def check_psf_family(spec) -> None:
    """The ranges of a PSF per galaxy (conf/psf_family) and that its presets exist."""
    from .psf_family import FAMILIES

    weights = dict(spec.weights)
    if set(weights) != set(FAMILIES) or min(weights.values()) < 0 or sum(weights.values()) <= 0:
        _fail(
            "psf_family.weights",
            weights,
            f"must give each of {list(FAMILIES)} a weight >= 0, not all 0",
        )
    for key, lo, hi in (("fwhm_px", 0.0, math.inf), ("moffat_beta", 1.1, math.inf),
                        ("airy_obscuration", 0.0, 0.99), ("airy_jitter", 0.0, math.inf),
                        ("shear", 0.0, 0.99)):  # fmt: skip
        pair = list(spec[key])
        if (
            len(pair) != 2
            or not lo <= pair[0] <= pair[1] <= hi
            or (key == "fwhm_px" and pair[0] <= 0)
        ):
            _fail(f"psf_family.{key}", pair, f"must be [min, max] with {lo} <= min <= max <= {hi}")
    if spec.image_size_px < 9 or spec.image_size_px % 2 == 0:
        _fail(
            "psf_family.image_size_px", spec.image_size_px, "must be an odd number of pixels >= 9"
        )

    for name in spec.presets:
        if not (config_dir() / "instrument" / f"{name}.yaml").is_file():
            _fail("psf_family.presets", list(spec.presets), f"{name!r} is not in conf/instrument")
    if weights["preset"] > 0 and not spec.presets:
        _fail(
            "psf_family.presets", [], "must name at least one instrument when preset has a weight"
        )


#: Keywords of GalSim PSF profiles that are sizes (arcsec) and so must be > 0.
PSF_SIZE_KEYS = (
    "fwhm",
    "sigma",
    "half_light_radius",
    "scale_radius",
    "lam_over_diam",
    "lam_over_r0",
)


def check_psf(instrument) -> None:
    """Build the PSF once, here in the main process, so that a bad class or keyword fails in
    seconds with its name (not in every rendering worker), and check that it is a proper PSF:
    sizes > 0, a positive, finite flux and FWHM."""
    from .psf import profile_fwhm  # simulate.psf imports this module

    for key in instrument.psf:
        if OmegaConf.is_missing(instrument.psf, key):
            _fail(f"instrument.psf.{key}", "???", f"must be given (instrument.psf.{key}=...)")
    spec = OmegaConf.to_container(instrument.psf, resolve=True)
    for key in PSF_SIZE_KEYS:
        value = spec.get(key)
        if value is not None and not (isinstance(value, (int, float)) and value > 0):
            _fail(f"instrument.psf.{key}", value, "must be a size > 0 (arcsec)")
    from .psf_record import PSFRecordError, build_psf

    try:
        psf = build_psf(instrument.psf)
        fwhm = profile_fwhm(psf)
        flux = float(psf.flux)
    except (ConfigError, PSFRecordError):  # image_psf and the allow-list say what is wrong
        raise
    except Exception as err:  # noqa: BLE001 - any failure to build is a config problem
        _fail("instrument.psf", spec, f"GalSim could not build it ({' '.join(str(err).split())})")
    if not isinstance(psf, galsim.GSObject):
        _fail("instrument.psf._target_", spec["_target_"], "must be a GalSim profile (GSObject)")
    if not (math.isfinite(flux) and flux > 0 and math.isfinite(fwhm) and fwhm > 0):
        _fail(
            "instrument.psf",
            spec,
            f"gives flux {flux:g} and FWHM {fwhm:g} arcsec; both must be > 0",
        )


def split_counts(n: int, fractions) -> dict[str, int]:
    """Number of galaxies in each split: train and val rounded, test takes the rest."""
    n_train = int(round(n * fractions.train))
    n_val = int(round(n * fractions.val))
    return {"train": n_train, "val": n_val, "test": n - n_train - n_val}


def split_ranges(n: int, fractions) -> dict[str, tuple[int, int]]:
    """Global-index range [start, stop) of each split; splits are contiguous and disjoint."""
    counts = split_counts(n, fractions)
    ranges, start = {}, 0
    for name in ("train", "val", "test"):
        ranges[name] = (start, start + counts[name])
        start += counts[name]
    return ranges
