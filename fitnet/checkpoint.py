"""Checkpoints that carry everything needed to predict or to resume.

A checkpoint is a ``torch.save`` dict with: the model's registered name (``models.MODELS``),
config and weights, ``in_chans``, ``num_outputs`` and ``stamp_size`` (pixel); the targets,
loss and label scaler; the image normalisation; the instrument of the training data (pixel
scale, zero point, PSF, noise; from the data file's attributes); the training data folders;
the resolved config; and, for ``resume``, the epoch, optimiser, scheduler and random-number
states and the metric history.

Checkpoints of format version 1 (``image_size``, ``_target_`` class paths) are read as well:
``load`` brings them to the current form.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

from simulate.io import atomic_path, package_version

from .data import ImageNorm, data_dirs
from .labels import LabelScaler
from .models import BoundedOutputs, build_model, input_channels, model_name
from .runtime import UserError

FORMAT = "sersic-fitnet checkpoint"
FORMAT_VERSION = 2
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


def save(path: Path, payload: dict) -> None:
    """``torch.save`` under a temporary name, then rename (a kill never leaves half a file)."""
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load(path: str | Path, map_location="cpu") -> dict:
    """Read and check a checkpoint; raise CheckpointError naming the file if it is not ours."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unpickling failure means "not a checkpoint"
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint: {err}") from err
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a sersic-fitnet checkpoint (no '{FORMAT}' format tag)"
        )
    if payload.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has format version {payload['format_version']}; this code reads <= {FORMAT_VERSION}"
        )
    return upgrade(payload)


def upgrade(payload: dict) -> dict:
    """A checkpoint of format version 1 in the current form (``stamp_size``, the model's
    registered name, ``data_dirs``); newer ones unchanged."""
    model = payload["model"]
    if "image_size" in model:  # the name of format 1
        model["stamp_size"] = model.pop("image_size")
    model.setdefault("name", model_name(model["config"]))
    if "data_dirs" not in payload:
        data_dir = OmegaConf.create(payload.get("config") or "{}").get("data_dir")
        payload["data_dirs"] = data_dirs(data_dir) if data_dir is not None else []
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
