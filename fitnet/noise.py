"""Fresh noise for noiseless stamps, in torch (docs/contract.md, section 1): with ``fresh_noise=true``
training never sees the same noise twice.

The models are the simulator's (``simulate.noise``, conf/noise), read from a split file's root
attributes and its /noise arrays (``from_file``):

- ``ccd``: Poisson noise on (source + sky) electrons plus Gaussian read noise, sky subtracted,
  divided by the exposure time (GalSim's ``CCDNoise`` with gain 1);
- ``map``: the source's Poisson noise plus white Gaussian noise of a rms drawn per stamp from
  the weight map's distribution (/noise/rms_quantiles);
- ``correlated``: the source's Poisson noise plus a stationary Gaussian field with the power
  spectrum of /noise/correlation on the stamp grid.
"""

from __future__ import annotations

from dataclasses import dataclass

import h5py
import numpy as np
import torch

#: Root attributes of a split file that define its CCD noise, in the order of CCDNoise's fields.
NOISE_ATTRS = ("exposure_time_s", "sky_level_e_per_s_per_pixel", "read_noise_e")


def source_poisson(noiseless: torch.Tensor, t: float, generator: torch.Generator) -> torch.Tensor:
    """Poisson noise (zero mean, e-/s per pixel) of the stamps' own electrons, exposure ``t`` s."""
    electrons = (noiseless.float() * t).clamp_min(0)
    return (torch.poisson(electrons, generator=generator) - electrons) / t


def gaussian(like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=torch.float32)


@dataclass(frozen=True)
class CCDNoise:
    """CCD noise of an instrument: exposure time (s), sky (e-/s per pixel), read noise (e-)."""

    exposure_time_s: float
    sky_e_per_s_per_pixel: float
    read_noise_e: float

    @classmethod
    def from_attrs(cls, attrs: dict) -> CCDNoise:
        """From a split file's root attributes; KeyError names those that are missing."""
        missing = [key for key in NOISE_ATTRS if key not in attrs]
        if missing:
            raise KeyError(f"the noise attributes {missing} are missing")
        return cls(*(float(attrs[key]) for key in NOISE_ATTRS))

    def __call__(self, noiseless: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``noiseless`` stamps (e-/s per pixel, any shape) with new noise from ``generator``
        (on the stamps' device), in e-/s per pixel, sky subtracted."""
        t = self.exposure_time_s
        sky = self.sky_e_per_s_per_pixel * t  # e- per pixel
        electrons = torch.poisson((noiseless.float() * t + sky).clamp_min(0), generator=generator)
        return (electrons - sky + self.read_noise_e * gaussian(noiseless, generator)) / t


class MapNoise:
    """A weight map's depths: per stamp a rms from ``rms_quantiles`` (e-/s per pixel, at evenly
    spaced probabilities) at a uniform draw, white Gaussian noise of it, and the source's own
    Poisson noise at exposure ``exposure_time_s``."""

    def __init__(self, exposure_time_s: float, rms_quantiles):
        self.exposure_time_s = float(exposure_time_s)
        self.rms_quantiles = torch.as_tensor(np.asarray(rms_quantiles), dtype=torch.float32)

    def draw_rms(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` background rms values (e-/s per pixel) from the stamps' distribution."""
        table = self.rms_quantiles.to(generator.device)
        u = torch.rand(n, generator=generator, device=generator.device) * (len(table) - 1)
        k = u.floor().long().clamp_max(len(table) - 2)
        return table[k] + (u - k) * (table[k + 1] - table[k])  # linear interpolation

    def __call__(self, noiseless: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        rms = self.draw_rms(noiseless.shape[0], generator).view(-1, *[1] * (noiseless.dim() - 1))
        background = rms * gaussian(noiseless, generator)
        return (
            noiseless.float()
            + source_poisson(noiseless, self.exposure_time_s, generator)
            + background
        )


class CorrelatedNoise:
    """Stationary correlated Gaussian noise of power spectrum ``power`` (``rfft2`` layout of the
    stamp grid) plus the source's own Poisson noise at exposure ``exposure_time_s``."""

    def __init__(self, exposure_time_s: float, power):
        self.exposure_time_s = float(exposure_time_s)
        self.root_power = torch.as_tensor(np.sqrt(np.asarray(power)), dtype=torch.float32)

    def __call__(self, noiseless: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        white = gaussian(noiseless, generator)
        root = self.root_power.to(noiseless.device)
        field = torch.fft.irfft2(torch.fft.rfft2(white) * root, s=noiseless.shape[-2:])
        return (
            noiseless.float() + source_poisson(noiseless, self.exposure_time_s, generator) + field
        )


def from_file(path, attrs: dict):
    """The fresh-noise model of a split file (its ``noise_model`` attribute; ``ccd`` when it
    has none); KeyError names what is missing."""
    from simulate.noise import power_spectrum

    model = attrs.get("noise_model", "ccd")
    if model == "ccd":
        return CCDNoise.from_attrs(attrs)
    if "exposure_time_s" not in attrs:
        raise KeyError("the noise attribute exposure_time_s is missing")
    with h5py.File(path, "r") as f:
        name = {"map": "noise/rms_quantiles", "correlated": "noise/correlation"}.get(model)
        if name is None or name not in f:
            raise KeyError(f"noise model {model!r} needs /{name}, which the file lacks")
        array = f[name][()]
    if model == "map":
        return MapNoise(attrs["exposure_time_s"], array)
    return CorrelatedNoise(
        attrs["exposure_time_s"], power_spectrum(array, float(attrs["noise_power_floor"]))
    )
