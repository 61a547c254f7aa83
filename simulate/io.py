"""HDF5 split files in the data layout (docs/contract.md, section 5), written under a temporary name and renamed.

Layout of ``train.h5`` / ``val.h5`` / ``test.h5``::

    /images            float32 (N, S, S), e-/s per pixel, sky subtracted, image[i, y, x]
    /noiseless         optional (simulate noiseless=true): the same stamps before noise
    /params/<label>    1-D per galaxy: mag n re q pa dx dy size, plus index, noise_seed,
                       flux, flux_stamp, snr, x_center, y_center, crb_<label>
    /noise/<name>      optional (noise=map or correlated): the noise model's table or correlation
    /config            the resolved simulate configuration (YAML string)
    root attributes    instrument, PSF, versions, seed, split, units

Each /params dataset carries ``units`` and ``description`` attributes.
"""

from __future__ import annotations

from pathlib import Path

import galsim
import h5py
import numpy as np

from sersic_runtime.files import package_version

from .priors import LABEL_DESCRIPTIONS, LABEL_UNITS
from .psf import profile_fwhm
from .psf_record import record

SPLITS = ("train", "val", "test")
FORMAT_NAME = "sersic-fitnet stamps"
FORMAT_VERSION = 1

#: Extra per-galaxy columns beyond the prior labels: (dtype, units, description).
EXTRA_COLUMNS = {
    "index": ("int64", "", "global galaxy index; with the master seed it defines the galaxy"),
    "noise_seed": ("int64", "", "seed of the GalSim BaseDeviate used for this stamp's noise"),
    "flux": ("float64", "e-/s", "total flux of the profile, 10**(-0.4 (mag - zero_point))"),
    "flux_stamp": ("float64", "e-/s", "noiseless flux inside the stored stamp"),
    "snr": ("float64", "dimensionless", "noiseless matched-filter S/N in the stored stamp"),
    "x_center": (
        "float64",
        "pixel",
        "profile centre, stored-stamp column (0-based, pixel centres at integers)",
    ),
    "y_center": (
        "float64",
        "pixel",
        "profile centre, stored-stamp row (0-based, pixel centres at integers)",
    ),
}
EXTRA_COLUMNS.update(
    {
        f"crb_{label}": (
            "float64",
            units,
            f"Cramer-Rao bound of the {label} error ({what}); NaN if not computed",
        )
        for label, units, what in (
            ("mag", "mag", "pred - true"),
            ("n", "dex", "log10(pred / true)"),
            ("re", "dimensionless", "(pred - true) / true"),
            ("q", "dimensionless", "pred - true"),
        )
    }
)

LABEL_DTYPES = {"size": "int32"}
#: The column of files simulated with companions (simulate companions.mean_count > 0).
COMPANION_COLUMN = (
    "int32",
    "",
    "other galaxies in the stamp (their light is in /images, not in /noiseless or the labels)",
)
#: The column of files simulated with a weight map's depths (simulate noise=map).
RMS_COLUMN = (
    "float64",
    "e-/s per pixel",
    "background noise rms of this stamp, drawn from /noise/rms_quantiles",
)


def column_spec() -> dict[str, tuple[str, str, str]]:
    """dtype, units and description of every /params column, labels first."""
    spec = {
        name: (LABEL_DTYPES.get(name, "float32"), LABEL_UNITS[name], LABEL_DESCRIPTIONS[name])
        for name in LABEL_UNITS
    }
    spec.update(EXTRA_COLUMNS)
    return spec


def instrument_attrs(instrument, psf: galsim.GSObject, background_rms: float) -> dict:
    """Root attributes describing the pixels, with units in the names."""
    return {
        "instrument": instrument.name,
        "pixel_scale_arcsec": float(instrument.pixel_scale),
        "zero_point_mag": float(instrument.zero_point),
        "exposure_time_s": float(instrument.exposure_time),
        "sky_level_e_per_s_per_pixel": float(instrument.sky_level),
        "read_noise_e": float(instrument.read_noise),
        "background_rms_e_per_s": float(background_rms),
        "psf": record(psf),  # JSON (simulate.psf_record): data, rebuilt exactly
        "psf_fwhm_arcsec": profile_fwhm(psf),
        "image_units": "e-/s per pixel, sky subtracted",
        "image_axes": "image[i, y, x]: y = row, x = column; display with origin='lower'",
        "mag_definition": "m = zero_point - 2.5 log10(F / (e-/s))",
        "noise": "Poisson on (source + sky) electrons + Gaussian read noise, sky subtracted, / exposure time",
    }


def create_split(
    path: Path,
    n_rows: int,
    stamp_size: int,
    attrs: dict,
    config_yaml: str,
    noiseless: bool = False,
    companions: bool = False,
    noise=None,
    psf_size: int | None = None,
) -> h5py.File:
    """Create an empty split file with every dataset pre-allocated (deterministic layout);
    with ``noiseless``, also /noiseless for the stamps before noise; with ``companions``,
    also /params/n_companions; with a ``noise`` model other than ``ccd``, its /noise arrays
    (and, for ``map``, /params/background_rms); with ``psf_size`` (a PSF per galaxy), /psf of
    that side and the PSF columns."""
    f = h5py.File(path, "w", libver="earliest", track_order=False)
    f.attrs["format"] = FORMAT_NAME
    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["galsim_version"] = galsim.__version__
    f.attrs["package_version"] = package_version()
    for key, value in attrs.items():
        f.attrs[key] = value
    f.create_dataset("config", data=config_yaml, dtype=h5py.string_dtype(), track_times=False)
    space = h5py.h5s.create_simple((n_rows, stamp_size, stamp_size))
    plist = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    plist.set_chunk((1, stamp_size, stamp_size))
    plist.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    plist.set_fill_time(h5py.h5d.FILL_TIME_NEVER)
    plist.set_obj_track_times(False)  # no creation timestamps: same config, same bytes
    stacks = {"images": "sky-subtracted noisy stamps, image[i, y, x]"}
    if noiseless:
        stacks["noiseless"] = (
            "the stamps of /images before noise (PSF-convolved, pixel-integrated), image[i, y, x]: "
            "add new noise from the root noise attributes to train on fresh noise"
        )
    for name, description in stacks.items():
        stack = h5py.Dataset(
            h5py.h5d.create(f.id, name.encode(), h5py.h5t.IEEE_F32LE, space, plist)
        )
        stack.attrs["units"] = "e-/s per pixel"
        stack.attrs["description"] = description
    if psf_size:
        psf = f.create_dataset("psf", (n_rows, psf_size, psf_size), dtype="<f4",
                               chunks=(1, psf_size, psf_size), track_times=False)  # fmt: skip
        psf.attrs["units"] = "fraction of the flux per pixel (unit sum)"
        psf.attrs["description"] = (
            "each galaxy's PSF at the data's sampling with the pixel (an effective PSF), "
            "centred on the middle pixel, psf[i, y, x]"
        )
    group = f.create_group("params")
    columns = column_spec()
    if companions:
        columns["n_companions"] = COMPANION_COLUMN
    if noise is not None and noise.name == "map":
        columns["background_rms"] = RMS_COLUMN
    if psf_size:
        from .psf_family import PSF_COLUMNS

        columns.update(PSF_COLUMNS)
    for name, (array, units, description) in (noise.datasets() if noise else {}).items():
        ds = f.create_dataset(f"noise/{name}", data=array, track_times=False)
        ds.attrs["units"] = units
        ds.attrs["description"] = description
    for name, (dtype, units, description) in columns.items():
        ds = group.create_dataset(name, shape=(n_rows,), dtype=dtype, track_times=False)
        ds.attrs["units"] = units
        ds.attrs["description"] = description
    return f


def read_attrs(path: Path) -> dict:
    """Root attributes of a split file as a plain dict."""
    with h5py.File(path, "r") as f:
        return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
