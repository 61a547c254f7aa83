"""Stamp photometry and the refining model: invariants, not snapshots."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import compose_config
from omegaconf import OmegaConf

from fitnet.caching import encode_views
from fitnet.data import Batches, ImageNorm, dihedral
from fitnet.models import build_model
from fitnet.photometry import AdaptiveMoments, StampPhotometry


def shifted_gaussian(size, sigma_x, sigma_y, angle, dx, dy, flux=1e5):
    """An elliptical Gaussian of total ``flux`` centred (dx, dy) pixel from the stamp centre,
    as one flattened image (1, size * size); sigmas in pixel, angle in radians."""
    c = (size - 1) / 2
    y, x = np.mgrid[:size, :size] - c
    x, y = x - dx, y - dy
    u = x * math.cos(angle) + y * math.sin(angle)
    v = -x * math.sin(angle) + y * math.cos(angle)
    image = np.exp(-0.5 * (u**2 / sigma_x**2 + v**2 / sigma_y**2))
    return torch.tensor(flux * image / image.sum(), dtype=torch.float32).reshape(1, -1)


def gaussian(size, flux, sigma_x, sigma_y, angle=0.0):
    """The same at the stamp centre, as a stamp (1, 1, size, size)."""
    return shifted_gaussian(size, sigma_x, sigma_y, angle, 0.0, 0.0, flux).reshape(1, 1, size, size)


def noise(*shape, seed):
    """Unit Gaussian noise of this shape from its own seeded generator."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


ADAPTIVE = {"iterations": 8, "initial_sigma_px": 2.0}


def test_features_are_invariant_under_flips_and_rotations():
    phot = StampPhotometry(64, apertures_px=[3, 10], weights_px=[2, 6], adaptive=ADAPTIVE)
    image = gaussian(64, 500.0, 5.0, 2.0, angle=0.4) + noise(1, 1, 64, 64, seed=1)
    images = image.repeat(16, 1, 1, 1)
    turned = dihedral(images, torch.Generator().manual_seed(0))
    assert len({t.numpy().tobytes() for t in turned}) > 1  # the stamps were really turned
    torch.testing.assert_close(phot(turned), phot(images), rtol=1e-4, atol=1e-4)


def test_aperture_feature_is_flux_over_its_noise():
    phot = StampPhotometry(64, apertures_px=[46], weights_px=[])  # > 31.5 sqrt(2): all pixels
    flux = 1000.0  # in units of the background rms
    (feature,) = phot(gaussian(64, flux, 3.0, 3.0))[0]
    assert math.isclose(math.sinh(feature.item()), flux / 64.0, rel_tol=1e-4)


def test_ellipticity_feature_is_zero_for_round_and_grows_with_elongation():
    phot = StampPhotometry(64, apertures_px=[], weights_px=[4])
    round_, flat = phot(gaussian(64, 1e5, 3.0, 3.0)), phot(gaussian(64, 1e5, 4.0, 2.0))
    assert round_[0, 2].item() < 1e-4
    # the weight multiplies the Gaussian: variances 1 / (1/a^2 + 1/w^2) along each axis
    a2, b2 = 1 / (1 / 16 + 1 / 16), 1 / (1 / 4 + 1 / 16)
    assert flat[0, 2].item() == pytest.approx((a2 - b2) / (a2 + b2), rel=1e-3)


def test_adaptive_moments_recover_an_offset_elliptical_gaussian():
    adaptive = AdaptiveMoments(64, **ADAPTIVE)
    ln_sigma, e, _, offset, rho4, *_ = adaptive(shifted_gaussian(64, 5.0, 2.5, 0.7, 0.8, -0.6))[0]
    assert ln_sigma.item() == pytest.approx(0.5 * math.log(5.0 * 2.5), abs=1e-3)
    assert e.item() == pytest.approx((25 - 6.25) / (25 + 6.25), abs=1e-3)
    assert offset.item() == pytest.approx(1.0, abs=1e-3)
    assert rho4.item() == pytest.approx(2.0, rel=1e-2)  # for a Gaussian, <rho^4> = 2 <rho^2>


def test_adaptive_moments_in_windows_equal_the_whole_stamp():
    galaxies = [(1.0, 0.8, 0.3), (2.5, 1.5, 1.0), (5.0, 3.0, 2.0), (9.0, 7.0, 0.5)]
    images = torch.cat([shifted_gaussian(64, a, b, t, 0.4, -0.7, flux=2e3) for a, b, t in galaxies])
    images = images + noise(images.shape, seed=2)
    adaptive = AdaptiveMoments(64, **ADAPTIVE)
    windowed = adaptive(images)
    assert len(set(adaptive.fit(images)[2].tolist())) > 2  # several windows were used
    adaptive.windows = [64]
    torch.testing.assert_close(windowed, adaptive(images), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("stretch", [False, True])
def test_adaptive_moments_of_pure_noise_are_finite(stretch):
    images = noise(32, 64 * 64, seed=3)
    if stretch:  # heavy tails, as the inverse image stretch gives: pulled a weight to zero width
        images = torch.sinh(1.2 * images + 0.3)
    assert torch.isfinite(AdaptiveMoments(64, **ADAPTIVE)(images)).all()


@pytest.mark.parametrize(
    "options, match",
    [
        ({"iterations": 0, "initial_sigma_px": 2.0}, r"iterations must be >= 1, got 0"),
        ({"iterations": 8, "initial_sigma_px": 20.0}, r"initial_sigma_px must be in \(0, 16.0\)"),
    ],
)
def test_bad_adaptive_options_raise(options, match):
    with pytest.raises(ValueError, match=match):
        AdaptiveMoments(64, **options)


def test_radii_must_be_positive():
    with pytest.raises(ValueError, match=r"photometry radii must be > 0 pixel, got -2"):
        StampPhotometry(64, apertures_px=[4, -2], weights_px=[])


SAMPLE = noise(16, 1, 64, 64, seed=2)  # normalised stamps for the feature statistics


def refiner(freeze=False):
    cfg = compose_config("train", ["model=photometric", f"model.freeze_network={freeze}"])
    model = build_model(OmegaConf.to_container(cfg.model), 1, 8, 64)
    model.prepare(ImageNorm(rms=0.0145, softening=1.0, mean=0.3, std=1.2), SAMPLE)
    return model


def test_untrained_refiner_returns_the_network_outputs():
    model = refiner().eval()
    x = noise(4, 1, 64, 64, seed=3)
    torch.testing.assert_close(model(x), model.network(x))


def test_frozen_network_gets_no_gradient_and_stays_in_eval_mode():
    model = refiner(freeze=True).train()
    assert not model.network.training and model.refine.training
    model(noise(4, 1, 64, 64, seed=4)).square().sum().backward()
    assert all(p.grad is None for p in model.network.parameters())
    assert all(p.grad is not None for p in model.refine.parameters())


def test_refiner_needs_the_image_norm_and_feature_statistics():
    cfg = compose_config("train", ["model=photometric"])
    model = build_model(OmegaConf.to_container(cfg.model), 1, 8, 64)
    with pytest.raises(RuntimeError, match="call prepare"):
        model(torch.zeros(1, 1, 64, 64))


def test_refiner_outputs_stay_float32_under_bf16_autocast():
    model = refiner().eval()
    x = noise(2, 1, 64, 64, seed=5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.float32
    # the convolutions ran in bf16, so close to (not equal to) the float32 pass
    torch.testing.assert_close(out, model(x), rtol=0.05, atol=0.02)


def test_prepare_standardises_the_features():
    model = refiner()
    image = model._image(SAMPLE)
    z = (model.photometry(image) - model.feature_mean) / model.feature_std
    torch.testing.assert_close(z.mean(0), torch.zeros(z.shape[1]), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(z.shape[1]), atol=1e-4, rtol=0)


def test_cache_views_repeat_the_photometry_and_turn_the_network_inputs():
    model = refiner(freeze=True)
    cfg = compose_config("train", ["device=cpu", "channels_last=false"])
    images = SAMPLE[:8]
    batches = Batches(images, torch.zeros(8, 4), 4, torch.device("cpu"))
    (first, second), labels = encode_views(
        model, batches, cfg, views=2, generator=torch.Generator().manual_seed(0)
    )
    assert len(labels) == 8 and len(second) == 8
    with torch.no_grad():
        expected = model.encode(images)  # view 0: the stamps themselves (batches of 8, not 4)
    torch.testing.assert_close(first, expected, rtol=1e-4, atol=1e-4)
    # photometry, in its own units (standardising divides by stds down to 0.03). The cache
    # repeats the stamp's own; measuring the turned copy instead would differ by float32
    # round-off, <= 2.4e-4 on these pure-noise stamps (40 draws); another stamp by > 1
    raw = model.feature_std
    torch.testing.assert_close(second[:, 8:] * raw, first[:, 8:] * raw, rtol=1e-3, atol=1e-3)
    assert not torch.allclose(second[:, :8], first[:, :8])  # the network saw turned stamps


def test_cache_views_of_fresh_noise_have_their_own_photometry():
    model = refiner(freeze=True)
    cfg = compose_config("train", ["device=cpu", "channels_last=false"])
    draws = torch.Generator().manual_seed(1)

    def fresh(x):  # stands in for new CCD noise on noiseless stamps
        return x + 0.3 * torch.randn(x.shape, generator=draws)

    batches = Batches(SAMPLE[:8], torch.zeros(8, 4), 4, torch.device("cpu"), noise=fresh)
    (first, second), _ = encode_views(
        model, batches, cfg, views=2, generator=torch.Generator().manual_seed(0)
    )
    assert (second[:, 8:] - first[:, 8:]).abs().amax(1).min() > 1e-2
