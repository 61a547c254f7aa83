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
        yy, xx = torch.meshgrid(offsets, offsets, indexing="ij")
        r2 = xx**2 + yy**2
        apertures = (
            torch.stack([(r2 <= r**2).float() for r in apertures_px]) if apertures_px else None
        )
        weights = (
            torch.stack([torch.exp(-0.5 * r2 / s**2) for s in weights_px]) if weights_px else None
        )
        # Fixed geometry, not parameters; rebuilt from the config, so not saved in checkpoints.
        self.register_buffer("apertures", apertures, persistent=False)
        self.register_buffer("weights", weights, persistent=False)
        self.register_buffer("xx", xx, persistent=False)
        self.register_buffer("yy", yy, persistent=False)
        self.register_buffer(
            "weight_sizes", torch.tensor(list(weights_px), dtype=torch.float32), persistent=False
        )
        self.num_features = len(apertures_px) + 4 * len(weights_px)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        with torch.autocast(image.device.type, enabled=False):
            x = image.float().reshape(image.shape[0], -1)  # (B, S*S), channels-last safe
            out = []
            if self.apertures is not None:
                masks = self.apertures.reshape(len(self.apertures), -1)
                flux = x @ masks.T
                out.append(torch.asinh(flux / masks.sum(1).sqrt()))
            if self.weights is not None:
                w = self.weights.reshape(len(self.weights), -1)
                xx, yy = self.xx.reshape(-1), self.yy.reshape(-1)
                r2 = xx**2 + yy**2
                flux = x @ w.T
                qxx, qyy, qxy = x @ (w * xx**2).T, x @ (w * yy**2).T, x @ (w * xx * yy).T
                size = qxx + qyy
                noise_flux = (w**2).sum(1).sqrt()
                noise_size = ((w * r2) ** 2).sum(1).sqrt()
                soft = size.abs() + noise_size
                ellipticity = torch.sqrt(((qxx - qyy) / soft) ** 2 + (2 * qxy / soft) ** 2)
                out += [
                    torch.asinh(flux / noise_flux),
                    torch.asinh(size / noise_size),
                    ellipticity,
                    size / (flux.abs() + noise_flux) / self.weight_sizes**2,
                ]
            return torch.cat(out, 1)
