"""Fresh CCD noise for noiseless stamps, in torch (docs/contract.md, section 1): with ``fresh_noise=true``
training never sees the same noise twice.

The model is the simulator's (``simulate.noise.add_noise``, GalSim's ``CCDNoise`` with gain 1):
Poisson noise on (source + sky) electrons plus Gaussian read noise, sky subtracted, divided by
the exposure time. Its numbers come from the data file's root attributes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

#: Root attributes of a split file that define its noise, in the order of CCDNoise's fields.
NOISE_ATTRS = ("exposure_time_s", "sky_level_e_per_s_per_pixel", "read_noise_e")


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
        read = torch.randn(
            noiseless.shape, generator=generator, device=noiseless.device, dtype=torch.float32
        )
        return (electrons - sky + self.read_noise_e * read) / t
