"""How the network's forward pass runs: the precision (``amp``) and the engine (``backend``).

``backend=onnx`` hands each network's convolutional trunk (every ``features`` module: the
DeepLeGATo, ResNet and DenseNet networks, inside a refiner or a PSF-conditioned model too) to
ONNX Runtime on the CPU; the heads, the refiner's photometry and the label decoding stay in
PyTorch. ``auto`` takes it where onnxruntime is installed, the device is the CPU and bf16 is
off, the case where it was measured faster (docs/results/prediction_speed.md).
"""

from __future__ import annotations

import importlib.util
import io
import logging
import warnings

import numpy as np
import torch
from torch import nn

from sersic_runtime.errors import UserError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx")
AMP_CHOICES = ("auto", True, False)


def bf16_hardware(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 natively: a CUDA GPU that supports it, or a CPU
    with AVX512-BF16 or AMX (elsewhere bf16 is emulated, slower than float32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    cpu = torch.cpu
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(cpu, name, lambda: False)() for name in checks)


def resolve_amp(option, device: torch.device) -> bool:
    """``amp``: ``auto`` (bf16 where the hardware has it, ``bf16_hardware``), true or false."""
    if option not in AMP_CHOICES or (option != "auto" and not isinstance(option, bool)):
        raise UserError(f"amp={option!r} is not allowed: choose from auto, true, false")
    return bf16_hardware(device) if option == "auto" else option


def resolve_backend(option, device: torch.device, amp: bool) -> str:
    """``backend``: ``torch``, ``onnx`` (ONNX Runtime on the CPU), or ``auto`` (``onnx`` where
    onnxruntime is installed, the device is the CPU and ``amp`` is off; else ``torch``)."""
    if option not in BACKENDS:
        raise UserError(f"backend={option!r} is not allowed: choose from {', '.join(BACKENDS)}")
    installed = all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnx"))
    if option == "onnx":
        if not installed:
            raise UserError("backend=onnx needs onnxruntime and onnx, which are not installed: "
                            "pip install 'sersic-fitnet[onnx]', or use backend=auto or torch")  # fmt: skip
        if device.type != "cpu" or amp:
            raise UserError("backend=onnx runs float32 on the CPU: with device=cuda or amp=true "
                            "use backend=torch or auto")  # fmt: skip
    if option == "auto":
        return "onnx" if installed and device.type == "cpu" and not amp else "torch"
    return option


class OnnxTrunk(nn.Module):
    """A module's forward pass run by ONNX Runtime: float32 tensors (B, ...) in and out."""

    def __init__(self, module: nn.Module, example: torch.Tensor, threads: int):
        super().__init__()
        import onnxruntime

        buffer = io.BytesIO()
        with warnings.catch_warnings():  # the TorchScript exporter: a second to export, no extras
            warnings.simplefilter("ignore")
            torch.onnx.export(module.eval(), (example,), buffer, input_names=["x"],
                              output_names=["y"], dynamic_axes={"x": {0: "batch"}},
                              dynamo=False)  # fmt: skip
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        self.session = onnxruntime.InferenceSession(
            buffer.getvalue(), options, providers=["CPUExecutionProvider"]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = np.ascontiguousarray(x.detach().float().cpu().numpy())
        return torch.from_numpy(self.session.run(None, {"x": x})[0])


def onnx_trunks(model: nn.Module, example: torch.Tensor) -> nn.Module:
    """``model`` (in eval mode) with each ``features`` trunk run by ONNX Runtime (``OnnxTrunk``),
    exported at the input it receives from ``example`` (B, C, S, S)."""
    trunks = {name: m for name, m in model.named_modules()
              if name.split(".")[-1] == "features" and isinstance(m, nn.Sequential)}  # fmt: skip
    inputs: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda _, args, n=name: inputs.setdefault(n, args[0]))
             for name, m in trunks.items()]  # fmt: skip
    with torch.inference_mode():
        model(example)
    for hook in hooks:
        hook.remove()
    for name, trunk in trunks.items():
        parent_name, _, attr = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attr, OnnxTrunk(trunk, inputs[name].clone(), torch.get_num_threads()))
    return model
