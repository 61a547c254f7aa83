"""The network step of the measurement (``fitnet.measure``): checkpoints applied to stamps.

A ``Predictor`` holds one checkpoint, several single-target ones combined, or an ensemble of
models of the same labels, and gives each label's value and sigma for a batch of stamps in
the model's units.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch

from sersic_runtime.errors import UserError

from . import checkpoint
from .backends import onnx_trunks, resolve_amp, resolve_backend
from .checkpoint import split_output
from .data import psf_channel
from .labels import TARGETS

log = logging.getLogger(__name__)


class Predictor:
    """One checkpoint, or several single- or multi-target checkpoints combined.

    Every label must come from exactly one checkpoint; all must expect the same stamp size and
    have been trained on the same pixel scale. With ``ensemble``, the checkpoints are instead
    models of the same labels and instrument (the folds of ``cv.folds``, or several seeds):
    each label is their mean, and its sigma the members' rms sigma and their spread (standard
    deviation) added in quadrature, the variance of the members' mixture.
    """

    def __init__(
        self, ckpts: str | Path | Iterable[str | Path], device: torch.device, amp=False,
        ensemble: bool = False, backend: str = "torch",
    ):  # fmt: skip
        paths = [ckpts] if isinstance(ckpts, (str, Path)) else list(ckpts)
        if not paths:
            raise checkpoint.CheckpointError(
                "no checkpoint given: pass ckpt=PATH or ckpt=[PATH,PATH]"
            )
        self.device = device
        self.amp = resolve_amp(amp, device)  # bfloat16 autocast of the forward pass
        self.backend = resolve_backend(backend, device, self.amp)
        self.ensemble = ensemble
        if ensemble and len(paths) < 2:
            raise checkpoint.CheckpointError(
                f"ensemble=true needs two or more checkpoints (ckpt=[a.pt,b.pt,...]), got {len(paths)}"
            )
        self.members = []  # (model, scaler, norm, loss, path)
        self.payloads: list[dict] = []  # the checkpoint dicts (history, config, instrument)
        self.labels: list[str] = []
        self.has_sigma: dict[str, bool] = {}
        for path in paths:
            model, scaler, norm, payload = checkpoint.load_model(path, device)
            model = channels_last(model)
            if ensemble and self.members:
                check_ensemble_member(self.payloads[0], payload, paths[0], path)
            for name in scaler.names if not (ensemble and self.members) else []:
                if name in self.labels:
                    raise checkpoint.CheckpointError(
                        f"label {name!r} is predicted by two checkpoints (second: {path})"
                    )
                self.labels.append(name)
                self.has_sigma[name] = ensemble or payload["loss"] == "gaussian_nll"
            self.members.append((model, scaler, norm, payload["loss"], str(path)))
            self.payloads.append(payload)
            if len(self.members) == 1:
                self.payload = payload
                self.stamp_size = payload["model"]["stamp_size"]
                self.instrument = payload["instrument"]
                #: the model takes each stamp's PSF as a second input (PSFConditioned)
                self.needs_psf = payload["model"].get("in_chans", 1) == 2
            elif (payload["model"].get("in_chans", 1) == 2) != self.needs_psf:
                raise checkpoint.CheckpointError(
                    f"{path} and {paths[0]}: one takes a PSF input and the other does not"
                )
            else:
                if payload["model"]["stamp_size"] != self.stamp_size:
                    raise checkpoint.CheckpointError(
                        f"{path} expects {payload['model']['stamp_size']} px stamps, {paths[0]} {self.stamp_size}"
                    )
                scale = payload["instrument"].get("pixel_scale_arcsec")
                if scale != self.instrument.get("pixel_scale_arcsec"):
                    raise checkpoint.CheckpointError(
                        f"{path} was trained at {scale} arcsec/pixel, {paths[0]} at "
                        f"{self.instrument.get('pixel_scale_arcsec')}"
                    )
        if self.backend == "onnx":
            self.use_onnx(explicit=backend == "onnx")
        self.labels = [name for name in TARGETS if name in self.labels]  # contract order
        self.transforms = {
            name: t
            for _, scaler, *_ in self.members
            for name, t in zip(scaler.names, scaler.transforms, strict=True)
        }
        self.paths = [str(p) for p in paths]
        #: label -> [min, max] of the training prior, where the checkpoints record it
        self.prior = {
            k: v for payload in self.payloads for k, v in (payload.get("prior") or {}).items()
        }

    def use_onnx(self, explicit: bool) -> None:
        """Each member's convolutions in ONNX Runtime (``fitnet.backends``). Under
        ``backend=auto`` a model that does not export stays in PyTorch, with a warning."""
        chans = 2 if self.needs_psf else 1
        example = torch.randn(2, chans, self.stamp_size, self.stamp_size,
                              generator=torch.Generator().manual_seed(0))  # fmt: skip
        try:
            for k, (model, *rest) in enumerate(self.members):
                self.members[k] = (onnx_trunks(model, example), *rest)
        except Exception as err:  # noqa: BLE001 - any export failure means the same here
            if explicit:
                raise UserError(f"backend=onnx: the model does not export to ONNX ({err}); "
                                "use backend=torch") from err  # fmt: skip
            log.warning("backend=auto: the model does not export to ONNX (%s); using PyTorch", err)
            self.backend = "torch"
            self.members = [(channels_last(checkpoint.load_model(m[-1], self.device)[0]), *m[1:])
                            for m in self.members]  # fmt: skip

    @property
    def pixel_scale(self) -> float:
        """arcsec / pixel of the training data."""
        return float(self.instrument["pixel_scale_arcsec"])

    @property
    def noise_rms(self) -> float:
        """Background rms of the training data (the median of a weight map's depths), e-/s per pixel."""
        return float(self.instrument["background_rms_e_per_s"])

    @property
    def noise_range(self) -> tuple[float, float]:
        """Least and largest background rms the model was trained on, e-/s per pixel (one value
        for a constant-noise model)."""
        rms = self.noise_rms
        return (float(self.instrument.get("background_rms_min_e_per_s", rms)),
                float(self.instrument.get("background_rms_max_e_per_s", rms)))  # fmt: skip

    @property
    def label_scaler(self):
        """The label scaler of a one-checkpoint predictor (its sigma calibration lives there)."""
        if len(self.members) != 1:
            raise checkpoint.CheckpointError(
                f"{len(self.members)} checkpoints combined: each has its own label scaler"
            )
        return self.members[0][1]

    def predict(self, images: np.ndarray, psfs=None) -> tuple[dict, dict]:
        """Values and sigmas (where the model gives them) per label for a batch of stamps
        (B, S, S) in e-/s per pixel, S the model's ``stamp_size``, and for a PSF-conditioned
        model their PSF images ``psfs`` (B, P, P). Images of other sizes go through
        ``catalogue`` (or ``fitnet.load().predict``), which pads or crops them."""
        images = np.asarray(images)
        if images.ndim != 3 or images.shape[1:] != (self.stamp_size, self.stamp_size):
            raise UserError(
                f"images of shape {images.shape}: Predictor.predict takes stamps "
                f"(B, {self.stamp_size}, {self.stamp_size}); fitnet.load().predict takes any size"
            )
        if self.needs_psf and (psfs is None or len(psfs) != len(images)):
            raise UserError("this model takes each stamp's PSF: give psfs (B, P, P), one per stamp")
        values, sigmas = {}, {}
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp),
        ):
            x_raw = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).to(
                self.device
            )[:, None]
            psf = (
                psf_channel(psfs, self.stamp_size).to(self.device)[:, None]
                if self.needs_psf
                else None
            )
            each = []
            for model, scaler, norm, loss, _ in self.members:
                x = norm(x_raw) if psf is None else torch.cat([norm(x_raw), psf], 1)
                x = x.contiguous(memory_format=torch.channels_last)
                out = model(x).float()
                mu, log_sigma = split_output(out, loss)
                sigma_z = None if log_sigma is None else log_sigma.exp().cpu().numpy()
                pred, sigma = scaler.decode(mu.cpu().numpy(), sigma_z)
                values, sigmas = {}, {}
                for j, name in enumerate(scaler.names):
                    values[name] = pred[:, j]
                    if sigma is not None:
                        sigmas[name] = sigma[:, j]
                each.append((values, sigmas))
        if self.ensemble:
            return combine_ensemble(each)
        return ({k: v for values, _ in each for k, v in values.items()},
                {k: v for _, sigmas in each for k, v in sigmas.items()})  # fmt: skip

    def columns(self) -> list[str]:
        cols = []
        for name in self.labels:
            cols.append(name)
            if self.has_sigma[name]:
                cols.append(f"{name}_err")
        return cols


def channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in channels-last memory format: 1.7x faster convolutions on the CPU."""
    return model.to(memory_format=torch.channels_last)


def check_ensemble_member(first: dict, other: dict, first_path, path) -> None:
    """Members of an ensemble predict the same labels of the same instrument."""
    if other["targets"] != first["targets"]:
        raise checkpoint.CheckpointError(
            f"ensemble=true: {path} predicts {other['targets']}, {first_path} {first['targets']}; "
            "an ensemble averages models of the same labels"
        )
    for key in checkpoint.INSTRUMENT_ATTRS:
        a, b = first["instrument"].get(key), other["instrument"].get(key)
        if a != b:
            raise checkpoint.CheckpointError(
                f"ensemble=true: {path} was trained with {key}={b}, {first_path} with {a}; an "
                "ensemble averages models of the same instrument"
            )


def combine_ensemble(each: list[tuple[dict, dict]]) -> tuple[dict, dict]:
    """The members' (values, sigmas) as one: per label the mean, and the square root of the mean
    variance plus the variance of the means (members without sigmas add only the spread)."""
    values, sigmas = {}, {}
    for name in each[0][0]:
        means = np.stack([v[name] for v, _ in each])
        values[name] = means.mean(0)
        variance = means.var(0)
        if all(name in s for _, s in each):
            variance = variance + np.mean([s[name] ** 2 for _, s in each], axis=0)
        sigmas[name] = np.sqrt(variance)
    return values, sigmas
