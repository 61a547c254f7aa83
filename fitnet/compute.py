"""How tensors run on a device: bf16 autocast and the images' memory layout."""

from __future__ import annotations

import torch


def amp_enabled(cfg, device: torch.device) -> bool:
    """Whether training runs in bf16 autocast on ``device``: ``cfg.amp`` on CUDA, and on the CPU
    only with ``cfg.amp_cpu`` as well."""
    return bool(cfg.amp) and (device.type == "cuda" or bool(cfg.amp_cpu))


def autocast(device: torch.device, cfg) -> torch.autocast:
    enabled = amp_enabled(cfg, device)
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def memory_layout(x: torch.Tensor, cfg) -> torch.Tensor:
    """Images (B, C, H, W) in channels-last order when ``cfg.channels_last``; other inputs
    (cached refiner inputs) as they are."""
    if cfg.channels_last and x.dim() == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x
