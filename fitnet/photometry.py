"""Classical measurements of a stamp that a network can lean on: aperture fluxes and
Gaussian-weighted second moments, in torch, batched, differentiable.

At high signal-to-noise they pin the total flux, size and ellipticity more precisely than a
CNN learns to from pixels on a CPU budget; the refining head (``models.PhotometricRefiner``)
learns how they map onto the Sersic labels (the truncation, PSF and profile corrections).

Every feature is invariant under the flips and 90-degree rotations of the stamp (the training
augmentation): apertures and weights are circles about the stamp centre, and the ellipticity
enters only through its modulus.
"""

from __future__ import annotations

import torch
from torch import nn


class StampPhotometry(nn.Module):
    """Features of images (B, 1, S, S) in units of the background rms per pixel.

    Per aperture radius r (pixel): ``asinh(F / noise(F))``, the flux inside r over its
    background-noise rms (a signed, log-like S/N). Per Gaussian weight of width s (pixel),
    about the stamp centre: the weighted flux the same way; the weighted size ``asinh(T /
    noise(T))`` with ``T = sum w I r^2``; the ellipticity modulus ``|(Qxx - Qyy, 2 Qxy)| /
    (|T| + noise(T))`` (softened so that noise cannot blow it up); and the size over the flux,
    ``T / (|F_w| + noise(F_w)) / s^2``. Computed in float32 outside any autocast.
    """

    def __init__(self, image_size: int, apertures_px, weights_px):
        super().__init__()
        if not apertures_px and not weights_px:
            raise ValueError("photometry needs at least one aperture or weight radius")
        for r in (*apertures_px, *weights_px):
            if not r > 0:
                raise ValueError(f"photometry radii must be > 0 pixel, got {r}")
        centre = (image_size - 1) / 2
        offsets = torch.arange(image_size, dtype=torch.float32) - centre
        yy, xx = (g.reshape(-1) for g in torch.meshgrid(offsets, offsets, indexing="ij"))
        r2 = xx**2 + yy**2
        masks = [(r2 <= r**2).float() for r in apertures_px]
        weights = [torch.exp(-0.5 * r2 / s**2) for s in weights_px]
        # One (S*S, K) matrix of aperture masks and weighted moment kernels (flux, xx, yy, xy),
        # so that all sums over pixels are a single product per batch. Fixed geometry, not
        # parameters: rebuilt from the config, so not saved in checkpoints.
        kernels = masks + [w * k for k in (1, xx**2, yy**2, xx * yy) for w in weights]
        self.register_buffer("kernels", torch.stack(kernels, 1), persistent=False)
        noise = {  # background-noise rms of each sum, in units of the per-pixel rms
            "aperture_noise": [m.sum().sqrt() for m in masks],
            "flux_noise": [(w**2).sum().sqrt() for w in weights],
            "size_noise": [((w * r2) ** 2).sum().sqrt() for w in weights],
        }
        for name, values in noise.items():
            self.register_buffer(name, torch.tensor(values), persistent=False)
        self.register_buffer(
            "weight_sizes", torch.tensor(list(weights_px), dtype=torch.float32), persistent=False
        )
        self.num_features = len(apertures_px) + 4 * len(weights_px)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        with torch.autocast(image.device.type, enabled=False):
            x = image.float().reshape(image.shape[0], -1)  # (B, S*S), channels-last safe
            sums = x @ self.kernels
            n_apertures, n_weights = len(self.aperture_noise), len(self.flux_noise)
            out = [torch.asinh(sums[:, :n_apertures] / self.aperture_noise)]
            if n_weights:
                flux, qxx, qyy, qxy = sums[:, n_apertures:].split(n_weights, dim=1)
                size = qxx + qyy
                soft = size.abs() + self.size_noise
                ellipticity = torch.sqrt(((qxx - qyy) / soft) ** 2 + (2 * qxy / soft) ** 2)
                out += [
                    torch.asinh(flux / self.flux_noise),
                    torch.asinh(size / self.size_noise),
                    ellipticity,
                    size / (flux.abs() + self.flux_noise) / self.weight_sizes**2,
                ]
            return torch.cat(out, 1)
