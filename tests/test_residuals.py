"""The batched Sersic renderer (fitnet/sersic.py) and the residual check (fitnet/residuals.py),
against GalSim's rendering through the simulator (simulate/render.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import compose_config

from fitnet.noise import CCDNoise
from fitnet.residuals import FitCheck
from simulate.io import instrument_attrs
from simulate.noise import background_rms
from simulate.render import StampRenderer, flux_from_mag

#: Galaxies of the prior: (n, re arcsec, q, pa deg, mag, dx, dy pixel)
GALAXIES = [
    (4.0, 0.5, 0.6, 30.0, 20.0, 0.3, -0.2),
    (0.5, 0.06, 0.9, 0.0, 22.0, 0.5, 0.5),
    (6.0, 0.06, 1.0, 0.0, 18.0, 0.0, 0.0),
    (1.0, 1.0, 0.2, 45.0, 19.0, 0.1, 0.4),
]


@pytest.fixture(scope="module")
def simulator():
    cfg = compose_config("simulate")
    renderer = StampRenderer(cfg.instrument, cfg.render)
    attrs = instrument_attrs(cfg.instrument, renderer.psf, background_rms(cfg.instrument))
    return cfg, renderer, attrs


@pytest.fixture(scope="module")
def quality():
    return compose_config("predict", ["input=x", "output=y"]).quality


@pytest.fixture(scope="module")
def fit(simulator, quality):
    _, renderer, attrs = simulator
    return FitCheck(quality, attrs, renderer.stamp_size)


def draw(renderer, fit, galaxy):
    n, re, q, pa, mag, dx, dy = galaxy
    x, y = renderer.centre(dx, dy, renderer.stamp_size)
    flux = flux_from_mag(mag, renderer.zero_point)
    return fit.renderer.render([flux], [n], [re], [q], [math.radians(pa)], [x], [y])[0].numpy()


@pytest.mark.parametrize("galaxy", GALAXIES)
def test_render_matches_galsim_through_the_simulator(simulator, fit, galaxy):
    _, renderer, attrs = simulator
    truth = renderer.render(*galaxy, renderer.stamp_size)
    model = draw(renderer, fit, galaxy)
    # within a hundredth of the noise rms per pixel, and 1e-3 of the peak
    assert np.sqrt(np.mean((model - truth) ** 2)) < 0.01 * attrs["background_rms_e_per_s"]
    assert np.abs(model - truth).max() < 1e-3 * truth.max()


def test_render_keeps_the_flux_of_a_galaxy_inside_the_stamp(simulator, fit):
    _, renderer, _ = simulator
    model = draw(renderer, fit, (1.5, 0.3, 0.7, 10.0, 20.0, 0.0, 0.0))
    assert model.sum() == pytest.approx(flux_from_mag(20.0, renderer.zero_point), rel=2e-3)


def test_render_turns_with_the_position_angle(fit):
    # mirroring x and y (a transpose) turns a position angle pa into 90 deg - pa
    centre = (fit.stamp_size - 1) / 2
    args = ([50.0, 50.0], [2.0, 2.0], [0.4, 0.4], [0.3, 0.3])
    a, b = fit.renderer.render(
        *args, [math.radians(20), math.radians(70)], [centre] * 2, [centre] * 2
    )
    assert torch.allclose(a.T, b, atol=1e-5 * float(a.max()))  # float32 FFTs


def noisy(image, attrs, seed):
    noise = CCDNoise.from_attrs(attrs)
    return noise(torch.from_numpy(image), torch.Generator().manual_seed(seed)).numpy()


def chi2(fit, image, galaxy):
    n, re, q, _, mag, _, _ = galaxy
    values = {"mag": [mag], "n": [n], "re": [re], "q": [q]}
    return fit(image[None], [None], [None], np.array([np.nan]), values)[0][0]


@pytest.mark.parametrize("galaxy", GALAXIES)
def test_the_true_sersic_fits_its_noisy_image(simulator, fit, galaxy):
    _, renderer, attrs = simulator
    image = noisy(renderer.render(*galaxy, renderer.stamp_size), attrs, seed=3)
    assert chi2(fit, image, galaxy) == pytest.approx(1.0, abs=0.3)


def test_a_bulge_plus_disk_is_not_one_sersic(simulator, fit, quality):
    _, renderer, attrs = simulator
    s = renderer.stamp_size
    disk = (1.0, 0.8, 0.5, 30.0, 19.5, 0.0, 0.0)
    bulge = renderer.render(4.0, 0.2, 0.9, 30.0, 19.5, 0.0, 0.0, s)
    image = noisy(renderer.render(*disk, s) + bulge, attrs, seed=4)
    # the disk's Sersic, the bulge's light left over: a residual far above the noise
    assert chi2(fit, image, disk) > 2.0


def test_too_small_a_footprint_is_not_judged(fit):
    image = np.zeros((1, fit.stamp_size, fit.stamp_size), np.float32)
    values = {"mag": [40.0], "n": [1.0], "re": [0.1], "q": [1.0]}  # far below the noise
    chi2, pixels = fit(image, [None], [None], np.array([np.nan]), values)
    assert np.isnan(chi2[0]) and pixels[0] < 20
