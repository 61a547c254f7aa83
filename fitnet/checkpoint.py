"""Checkpoints that carry everything needed to predict or to resume.

A checkpoint is a ``torch.save`` dict with: the model's config (``_target_`` and arguments),
``in_chans``, ``num_outputs``, ``image_size`` and weights; the targets, loss and label scaler;
the image normalisation; the instrument of the training data (pixel scale, zero point, PSF,
noise; from the data file's attributes); the resolved config; and, for ``resume``, the epoch,
optimiser, scheduler and random-number states and the metric history.
"""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from simulate.io import atomic_path, package_version

from .data import ImageNorm
from .labels import LabelScaler

FORMAT = "sersic-fitnet checkpoint"
FORMAT_VERSION = 1

#: Attributes of the training data kept in the checkpoint as its instrument description.
INSTRUMENT_ATTRS = (
    "instrument",
    "pixel_scale_arcsec",
    "zero_point_mag",
    "exposure_time_s",
    "sky_level_e_per_s_per_pixel",
    "read_noise_e",
    "background_rms_e_per_s",
    "psf",
    "psf_fwhm_arcsec",
    "image_units",
)


class CheckpointError(ValueError):
    """A file is not a readable sersic-fitnet checkpoint."""


def outputs_per_label(loss: str) -> int:
    """The Gaussian NLL head predicts a mean and a log-sigma per label; others a value."""
    return 2 if loss == "gaussian_nll" else 1


def build_model(
    model_cfg: dict, in_chans: int, num_outputs: int, image_size: int
) -> torch.nn.Module:
    return instantiate(model_cfg, in_chans=in_chans, num_outputs=num_outputs, image_size=image_size)


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
    return payload


def make_payload(
    *,
    model,
    model_cfg,
    image_size,
    targets,
    loss,
    scaler: LabelScaler,
    norm: ImageNorm,
    instrument: dict,
    cfg,
    state: dict,
) -> dict:
    """The checkpoint dict for ``model`` (its weights are copied to the CPU)."""
    raw = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": package_version(),
        "torch_version": torch.__version__,
        "model": {
            "config": model_cfg,
            "in_chans": 1,
            "num_outputs": len(targets) * outputs_per_label(loss),
            "image_size": image_size,
            "state_dict": {k: v.detach().cpu() for k, v in raw.state_dict().items()},
        },
        "targets": list(targets),
        "loss": loss,
        "label_scaler": scaler.state(),
        "image_norm": norm.state(),
        "instrument": {k: instrument[k] for k in INSTRUMENT_ATTRS if k in instrument},
        "config": OmegaConf.to_yaml(cfg, resolve=True),
        **state,
    }


def load_model(path: str | Path, device="cpu"):
    """Model (eval mode, on ``device``), label scaler, image norm and the checkpoint dict."""
    payload = load(path)
    m = payload["model"]
    model = build_model(m["config"], m["in_chans"], m["num_outputs"], m["image_size"])
    model.load_state_dict(m["state_dict"])
    model.to(device).eval()
    return (
        model,
        LabelScaler.from_state(payload["label_scaler"]),
        ImageNorm.from_state(payload["image_norm"]),
        payload,
    )
