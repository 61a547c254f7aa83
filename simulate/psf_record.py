"""PSFs as data: built from a config or from a record, never by running code a file names.

Two ways in, both through allow-lists of GalSim constructors:

* ``build_psf(spec)``: the ``instrument.psf`` config (``_target_`` a name in ``CONFIG_TARGETS``,
  ``_args_`` its positional arguments, other keys its keywords; nested profiles the same way),
  as the packaged configs and the user's command line give it. A name outside the list is
  refused with one line; nothing else reaches a constructor.
* ``record(psf)`` / ``from_record(text)``: the PSF a data file or a checkpoint records, as JSON
  text: a tree of ``{"type": name, "args": [...], "kwargs": {...}}`` nodes whose names are in
  ``RECORD_TYPES`` (the profiles of the PSF allow-list, Convolution and Sum of them, an
  InterpolatedImage with its pixels written out, and the small GalSim values they take), with
  numbers, strings and lists as leaves. Files written before records existed hold GalSim's
  ``repr`` of the PSF instead; ``from_record`` reads that text by parsing it into the same tree
  (Python's ``ast``, literals and allowed calls only), never by evaluating it.

A record rebuilds the PSF exactly (the same parameters, every pixel of an image PSF), so the
residual check and the baseline fit render galaxies through the PSF they were simulated with.
"""

from __future__ import annotations

import ast
import json
import math
import sys
from collections.abc import Mapping, Sequence

import galsim
import numpy as np

from sersic_runtime.errors import ConfigError, UserError

RECORD_VERSION = 1
#: Config ``_target_`` names a PSF may be built from (the user's and the packaged configs).
CONFIG_TARGETS = {
    "galsim.Moffat": galsim.Moffat,
    "galsim.Kolmogorov": galsim.Kolmogorov,
    "galsim.Airy": galsim.Airy,
    "galsim.Gaussian": galsim.Gaussian,
    "galsim.OpticalPSF": galsim.OpticalPSF,
    "galsim.Convolve": galsim.Convolve,
    "galsim.Sum": galsim.Sum,
    "galsim.Add": galsim.Add,
    "simulate.psf.image_psf": None,  # resolved on use: simulate.psf imports simulate.config
}
#: Names a record's nodes may call: the PSF profiles, their compounds, and the values they take.
RECORD_TYPES = {
    "galsim.Moffat": galsim.Moffat,
    "galsim.Kolmogorov": galsim.Kolmogorov,
    "galsim.Airy": galsim.Airy,
    "galsim.Gaussian": galsim.Gaussian,
    "galsim.OpticalPSF": galsim.OpticalPSF,
    "galsim.Aperture": galsim.Aperture,
    "galsim.Convolution": galsim.Convolution,
    "galsim.Sum": galsim.Sum,
    "galsim.Deconvolution": galsim.Deconvolution,
    "galsim.Pixel": galsim.Pixel,
    "galsim.Transformation": galsim.Transformation,
    "galsim.InterpolatedImage": galsim.InterpolatedImage,
    "galsim.Image": galsim.Image,
    "galsim.BoundsI": galsim.BoundsI,
    "galsim.PixelScale": galsim.PixelScale,
    "galsim.PositionD": galsim.PositionD,
    "galsim.GSParams": galsim.GSParams,
    "galsim.Lanczos": galsim.Lanczos,
    "galsim.Quintic": galsim.Quintic,
    "galsim.Cubic": galsim.Cubic,
    "galsim.Linear": galsim.Linear,
    "galsim.Nearest": galsim.Nearest,
    "galsim.SincInterpolant": galsim.SincInterpolant,
    "coord.Angle": galsim.Angle,
    "galsim.Angle": galsim.Angle,
    "np.float64": float,
    "np.float32": float,
    "np.int64": int,
    "array": None,  # numpy's repr of an array: numbers only (``_array``)
    "np.array": None,
}
#: Names a record may hold as plain values (angle units).
RECORD_CONSTANTS = {
    "coord.radians": galsim.radians,
    "coord.degrees": galsim.degrees,
    "coord.arcsec": galsim.arcsec,
    "galsim.radians": galsim.radians,
    "galsim.degrees": galsim.degrees,
    "galsim.arcsec": galsim.arcsec,
}
#: The profiles a record may describe (with the values above as their arguments), for messages.
PSF_PROFILES = ("Moffat", "Kolmogorov", "Airy", "Gaussian", "OpticalPSF", "Convolution", "Sum",
                "InterpolatedImage (from its pixels)")  # fmt: skip
_ALLOWED = (
    f"a PSF record names only {', '.join(PSF_PROFILES)} and their values, and is read as data, "
    "never run (docs/security.md)"
)
ARRAY_DTYPES = ("float64", "float32", "int64", "int32", "int16", "uint8")
MAX_ARRAY_SIZE = 4096**2  # values: a PSF image larger than this is not a PSF record
MAX_DEPTH = 32  # nesting of a record's nodes


class PSFRecordError(UserError):
    """A PSF record names something outside the allow-list, or cannot be built."""


def build_psf(spec, key: str = "instrument.psf") -> galsim.GSObject:
    """The GalSim profile of the config ``spec`` (a mapping with ``_target_``, as
    conf/instrument gives it); ``key`` names the option in messages."""
    spec = _plain(spec)
    if not isinstance(spec, Mapping) or "_target_" not in spec:
        raise ConfigError(f"{key} must be a profile with _target_ (one of {_allowed_targets()})")
    target = spec["_target_"]
    if target not in CONFIG_TARGETS:
        raise ConfigError(
            f"{key}._target_={target!r} is not allowed: choose from {_allowed_targets()}"
        )
    if target == "simulate.psf.image_psf":
        from .psf import image_psf as build
    else:
        build = CONFIG_TARGETS[target]
    args = [_config_value(v, f"{key}._args_[{i}]") for i, v in enumerate(spec.get("_args_", []))]
    kwargs = {
        k: _config_value(v, f"{key}.{k}")
        for k, v in spec.items()
        if k not in ("_target_", "_args_", "_recursive_", "_convert_")
    }
    return build(*args, **kwargs)


def _config_value(value, key: str):
    if isinstance(value, Mapping) and "_target_" in value:
        return build_psf(value, key)
    if isinstance(value, list):
        return [_config_value(v, f"{key}[{i}]") for i, v in enumerate(value)]
    return value


def _allowed_targets() -> str:
    return ", ".join(CONFIG_TARGETS)


def _plain(spec):
    """An OmegaConf node as plain Python (resolved); other values as they are."""
    try:
        from omegaconf import OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        return spec
    return OmegaConf.to_container(spec, resolve=True) if OmegaConf.is_config(spec) else spec


def repr_text(psf: galsim.GSObject) -> str:
    """GalSim's ``repr`` of ``psf`` with every pixel of an image PSF written out exactly
    (numpy would elide large arrays)."""
    with np.printoptions(threshold=sys.maxsize, floatmode="unique"):
        return repr(psf)


def record(psf: galsim.GSObject) -> str:
    """The JSON record of ``psf`` (module docstring); ``from_record`` rebuilds it exactly."""
    tree = _tree(ast.parse(repr_text(psf), mode="eval").body)
    text = json.dumps({"psf_record": RECORD_VERSION, "profile": tree}, separators=(",", ":"))
    from_record(text)  # a profile outside the allow-list is never written
    return text


def from_record(text: str, where: str = "the PSF record") -> galsim.GSObject:
    """The PSF of a record (JSON, ``record``) or of the GalSim ``repr`` that files written
    before records hold; PSFRecordError naming ``where`` when it is neither, or names a type
    outside ``RECORD_TYPES``."""
    if not isinstance(text, str) or not text.strip():
        raise PSFRecordError(f"{where} is empty: no PSF recorded")
    try:
        if text.lstrip().startswith("{"):
            data = json.loads(text)
            if not isinstance(data, dict) or "profile" not in data:
                raise PSFRecordError(f"{where} is JSON without a 'profile'")
            tree = data["profile"]
        else:  # GalSim's repr, written by earlier versions: parsed, never evaluated
            tree = _tree(ast.parse(text, mode="eval").body)
        psf = _build(tree, 0)
    except PSFRecordError as err:
        raise PSFRecordError(f"{where} is refused: {err}; {_ALLOWED}") from None
    except (SyntaxError, ValueError, TypeError, RecursionError, galsim.GalSimError) as err:
        why = f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"
        raise PSFRecordError(f"{where} is not a PSF record ({why}); {_ALLOWED}") from None
    if not isinstance(psf, galsim.GSObject):
        raise PSFRecordError(f"{where} records a {type(psf).__name__}, not a GalSim profile")
    return psf


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    raise PSFRecordError(f"a {type(node).__name__} expression where a name was expected")


def _tree(node: ast.AST):
    """The record tree of a parsed expression: literals, lists and allowed calls only."""
    if isinstance(node, ast.Constant) and isinstance(
        node.value, (int, float, str, bool, type(None))
    ):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _tree(node.operand)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise PSFRecordError("a sign before something that is not a number")
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_tree(item) for item in node.elts]
    if isinstance(node, (ast.Name, ast.Attribute)):
        name = _dotted(node)
        if name in ("nan", "np.nan", "inf", "np.inf"):
            return math.nan if "nan" in name else math.inf
        if name not in RECORD_CONSTANTS:
            raise PSFRecordError(f"the name {name!r} is not allowed")
        return {"const": name}
    if isinstance(node, ast.Call):
        name = _dotted(node.func)
        if name not in RECORD_TYPES:
            raise PSFRecordError(f"{name} is not an allowed type")
        if any(k.arg is None for k in node.keywords):
            raise PSFRecordError("** arguments are not allowed")
        out = {"type": name}
        if name in ("array", "np.array"):  # numpy's repr names its dtype bare: float32
            for k in node.keywords:
                if k.arg == "dtype" and isinstance(k.value, (ast.Name, ast.Attribute)):
                    k.value = ast.Constant(_dotted(k.value))
        if node.args:
            out["args"] = [_tree(a) for a in node.args]
        if node.keywords:
            out["kwargs"] = {k.arg: _tree(k.value) for k in node.keywords}
        return out
    raise PSFRecordError(f"{type(node).__name__} expressions are not allowed")


def _build(tree, depth: int):
    """The value of a record tree, calling only ``RECORD_TYPES``."""
    if depth > MAX_DEPTH:
        raise PSFRecordError(f"nested deeper than {MAX_DEPTH}")
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return tree
    if isinstance(tree, list):
        return [_build(item, depth + 1) for item in tree]
    if not isinstance(tree, dict):
        raise PSFRecordError(f"a {type(tree).__name__} is not a record value")
    if set(tree) == {"const"}:
        if tree["const"] not in RECORD_CONSTANTS:
            raise PSFRecordError(f"the name {tree['const']!r} is not allowed")
        return RECORD_CONSTANTS[tree["const"]]
    name = tree.get("type")
    if name not in RECORD_TYPES or not set(tree) <= {"type", "args", "kwargs"}:
        raise PSFRecordError(f"{name!r} is not an allowed type")
    args = tree.get("args", [])
    kwargs = tree.get("kwargs", {})
    if not isinstance(args, list) or not isinstance(kwargs, dict):
        raise PSFRecordError(f"{name}: args must be a list and kwargs a mapping")
    if name in ("array", "np.array"):
        return _array(args, kwargs)
    args = [_build(a, depth + 1) for a in args]
    kwargs = {str(k): _build(v, depth + 1) for k, v in kwargs.items()}
    return RECORD_TYPES[name](*args, **kwargs)


def _array(args: Sequence, kwargs: Mapping) -> np.ndarray:
    """A numpy array of numbers (nested lists), of an allowed dtype and size."""
    if len(args) != 1 or not set(kwargs) <= {"dtype"}:
        raise PSFRecordError("array takes one nested list of numbers (and dtype)")
    dtype = kwargs.get("dtype", "float64")
    dtype = dtype.get("const", "") if isinstance(dtype, dict) else str(dtype)
    dtype = dtype.removeprefix("np.").removeprefix("numpy.")
    if dtype not in ARRAY_DTYPES:
        raise PSFRecordError(f"array dtype {dtype!r} is not allowed: {', '.join(ARRAY_DTYPES)}")
    array = np.array(args[0], dtype=dtype)
    if array.dtype == object or array.size > MAX_ARRAY_SIZE:
        raise PSFRecordError("an array of numbers of at most 4096 x 4096 values is allowed")
    return array
