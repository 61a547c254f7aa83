"""Checkpoints that carry everything needed to predict or to resume, as plain data.

A checkpoint is a ``torch.save`` dict of tensors, numbers, strings, lists and dicts only, read
with ``torch.load(weights_only=True)``: opening one never runs code (docs/security.md). It has: the model's registered name (``models.MODELS``),
config and weights, ``in_chans``, ``num_outputs`` and ``stamp_size`` (pixel); the targets,
loss and label scaler; the image normalisation; the instrument of the training data (pixel
scale, zero point, PSF, noise; from the data file's attributes); the training data folders;
the resolved config; and, for ``resume``, the epoch, optimiser, scheduler and random-number
states and the metric history.

Checkpoints of format versions 1 and 2 (written before 0.2) are read through ``read_legacy``:
the same safe loader with an allow-list of the three values those versions pickled besides plain
data (PyTorch's version string, numpy's scalar and dtype), and nothing else; ``upgrade`` brings
them to the current form (``python -m fitnet.pretrained`` writes it to a new file). The PSF of
the instrument record is a ``simulate.psf_record`` record, checked on loading.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf
from torch.torch_version import TorchVersion

from sersic_runtime.errors import UserError
from sersic_runtime.files import atomic_path, package_version
from simulate.psf_record import PSFRecordError, from_record, record

from .data import ImageNorm, data_dirs
from .labels import LabelScaler
from .models import BoundedOutputs, build_model, input_channels, model_name

FORMAT = "sersic-fitnet checkpoint"
FORMAT_VERSION = 3  # 3: plain data only (weights_only), the PSF as a record
LOG_SIGMA_RANGE = (-7.0, 5.0)  # clamp of the predicted log-sigma (standardised units)

#: Attributes of the training data kept in the checkpoint as its instrument description.
INSTRUMENT_ATTRS = (
    "instrument",
    "pixel_scale_arcsec",
    "zero_point_mag",
    "exposure_time_s",
    "sky_level_e_per_s_per_pixel",
    "read_noise_e",
    "background_rms_e_per_s",
    "noise_model",
    "background_rms_min_e_per_s",
    "background_rms_max_e_per_s",
    "noise_correlation_core",
    "psf_fwhm_range_px",
    "psf",
    "psf_fwhm_arcsec",
    "image_units",
)


class CheckpointError(UserError):
    """A file is not a readable sersic-fitnet checkpoint, or checkpoints do not fit together."""


def outputs_per_label(loss: str) -> int:
    """The Gaussian NLL head predicts a mean and a log-sigma per label; others a value."""
    return 2 if loss == "gaussian_nll" else 1


def split_output(out: torch.Tensor, loss: str):
    """The network's outputs as (means, log-sigmas clamped to LOG_SIGMA_RANGE, or None)."""
    if loss != "gaussian_nll":
        return out, None
    t = out.shape[1] // 2
    return out[:, :t], out[:, t:].clamp(*LOG_SIGMA_RANGE)


def plain(value):
    """``value`` as plain data (tensors, numbers, strings, lists, dicts): numpy scalars and
    arrays as numbers and lists, version strings and OmegaConf nodes as their contents."""
    if isinstance(value, np.generic):  # before float: numpy's float64 is a float subclass
        return value.item()
    if isinstance(value, torch.Tensor) or value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return str(value)  # also PyTorch's TorchVersion, a str subclass
    if isinstance(value, np.ndarray):
        return value.tolist()
    if OmegaConf.is_config(value):
        return OmegaConf.to_container(value, resolve=True)
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    raise TypeError(f"a checkpoint holds plain data only, not {type(value).__name__}")


def save(path: Path, payload: dict) -> None:
    """``torch.save`` of ``payload`` as plain data under a temporary name, then rename (a kill
    never leaves half a file)."""
    with atomic_path(path) as tmp:
        torch.save(plain(payload), tmp)


def load(path: str | Path, map_location="cpu") -> dict:
    """Read and check a checkpoint (plain data only: ``torch.load(weights_only=True)``; older
    formats through ``read_legacy``); raise CheckpointError naming the file if it is not ours."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        if "GLOBAL" not in str(err):  # not a pickle that names something: not a checkpoint
            raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {err}") from None
        payload = read_legacy(path, map_location, err)
    except Exception as err:  # noqa: BLE001 - any reading failure means "not a checkpoint"
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {err}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a sersic-fitnet checkpoint (no '{FORMAT}' format tag)"
        )
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format version {payload['format_version']}; this code reads <= {FORMAT_VERSION}"
        )
    payload = upgrade(payload)
    check_psf_record(payload, path)
    return payload


def read_legacy(path: Path, map_location, refused: Exception) -> dict:
    """A checkpoint of format 1 or 2: the safe loader, allowing besides plain data only the
    values those versions wrote (PyTorch's version string, numpy's scalars and dtypes). Anything else a file asks to load (a class, a
    function) is refused with CheckpointError, and nothing of it runs."""
    allowed = [TorchVersion, np.dtype, *_numpy_scalar()]
    allowed += [type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool")]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        named = re.findall(r"GLOBAL ([\w.]+)", str(err)) or re.findall(
            r"GLOBAL ([\w.]+)", str(refused)
        )
        what = f"it asks to load {named[0]}" if named else "it is not plain data"
        raise CheckpointError(
            f"{path} is refused: {what}; a checkpoint holds tensors, numbers, strings, lists and "
            "dicts only, and loading one never runs code (docs/security.md)"
        ) from None
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {err}") from None


def _numpy_scalar() -> list:
    """numpy's scalar constructor, under the module name of this numpy (1.x or 2.x)."""
    core = getattr(np, "_core", None) or np.core
    return [core.multiarray.scalar]


def check_psf_record(payload: dict, path) -> None:
    """CheckpointError naming the file unless its instrument's PSF (if any) is a record of the
    allow-list (``simulate.psf_record``)."""
    text = (payload.get("instrument") or {}).get("psf")
    if text is None:
        return
    try:
        from_record(text, f"{path}: instrument psf")
    except PSFRecordError as err:
        raise CheckpointError(str(err)) from None


def upgrade(payload: dict) -> dict:
    """A checkpoint of format version 1 or 2 in the current form (``stamp_size``, the model's
    registered name, ``data_dirs``, plain data, the PSF as a record); newer ones unchanged."""
    payload = plain(payload)
    instrument = payload.get("instrument") or {}
    if isinstance(instrument.get("psf"), str) and not instrument["psf"].lstrip().startswith("{"):
        try:  # GalSim's repr, parsed (never evaluated) and written as a record
            instrument["psf"] = record(from_record(instrument["psf"]))
        except PSFRecordError:
            pass  # check_psf_record refuses it, naming the file
    model = payload["model"]
    if "image_size" in model:  # the name of format 1
        model["stamp_size"] = model.pop("image_size")
    model.setdefault("name", model_name(model["config"]))
    if "data_dirs" not in payload:
        data_dir = OmegaConf.create(payload.get("config") or "{}").get("data_dir")
        payload["data_dirs"] = data_dirs(data_dir) if data_dir is not None else []
    payload["format_version"] = FORMAT_VERSION
    return payload


def make_payload(
    *,
    model,
    model_cfg,
    stamp_size,
    targets,
    loss,
    scaler: LabelScaler,
    norm: ImageNorm,
    instrument: dict,
    prior: dict,
    cfg,
    state: dict,
    output_bounds=None,
) -> dict:
    """The checkpoint dict for ``model`` (its weights are copied to the CPU)."""
    raw = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": package_version(),
        "torch_version": torch.__version__,
        "model": {
            "name": model_name(model_cfg),
            "config": model_cfg,
            "in_chans": input_channels(model_cfg),
            "num_outputs": len(targets) * outputs_per_label(loss),
            "stamp_size": stamp_size,
            "state_dict": {k: v.detach().cpu() for k, v in raw.state_dict().items()},
        },
        "targets": list(targets),
        "loss": loss,
        "label_scaler": scaler.state(),
        "image_norm": norm.state(),
        "instrument": {
            k: instrument[k].tolist() if isinstance(instrument[k], np.ndarray) else instrument[k]
            for k in INSTRUMENT_ATTRS
            if k in instrument
        },
        "prior": prior,  # label -> [min, max] of the training galaxies
        # standardised [low, high, below, above] of the means (models.BoundedOutputs), or None
        "output_bounds": output_bounds,
        "data_dirs": data_dirs(cfg.data_dir),
        "config": OmegaConf.to_yaml(cfg, resolve=True),
        **state,
    }


def load_model(path: str | Path, device="cpu"):
    """Model (eval mode, on ``device``), label scaler, image norm and the checkpoint dict."""
    payload = load(path)
    m = payload["model"]
    model = build_model(m["config"], m["in_chans"], m["num_outputs"], m["stamp_size"])
    model.load_state_dict(m["state_dict"])
    if payload.get("output_bounds") is not None:  # a bounded head (train.bounded_head)
        model = BoundedOutputs(model, *payload["output_bounds"])
    model.to(device).eval()
    return (
        model,
        LabelScaler.from_state(payload["label_scaler"]),
        ImageNorm.from_state(payload["image_norm"]),
        payload,
    )
