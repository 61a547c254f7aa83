"""Cramer-Rao bounds: analytic limits, scaling with brightness, and storage in the test split."""

from __future__ import annotations

import math

import numpy as np
import pytest
from conftest import compose_config, read_params

from simulate.bounds import fisher_matrix, label_bounds
from simulate.noise import CCDModel, matched_filter_snr, variance_map
from simulate.pipeline import run_simulation
from simulate.render import StampRenderer

GALAXY = dict(n=2.0, re=0.4, q=0.6, pa=30.0, mag=21.0, dx=0.2, dy=-0.3, size=128)


@pytest.fixture(scope="module")
def setup():
    cfg = compose_config("simulate")
    return StampRenderer(cfg.instrument, cfg.render), cfg


def test_magnitude_information_matches_snr(setup):
    # d mu / d mag = -0.4 ln(10) mu, so F_mag,mag = (0.4 ln 10 * S/N)^2 with S/N the matched filter's
    renderer, cfg = setup
    fisher = fisher_matrix(renderer, CCDModel(cfg.instrument), GALAXY, cfg.bounds)
    stamp = renderer.render(**GALAXY)
    snr = matched_filter_snr(stamp, variance_map(stamp, cfg.instrument))
    assert fisher[0, 0] == pytest.approx((0.4 * math.log(10) * snr) ** 2, rel=1e-3)


def test_bounds_are_positive_and_shrink_with_brightness(setup):
    renderer, cfg = setup
    faint = label_bounds(
        fisher_matrix(renderer, CCDModel(cfg.instrument), {**GALAXY, "mag": 24.0}, cfg.bounds), 2.0
    )
    bright = label_bounds(
        fisher_matrix(renderer, CCDModel(cfg.instrument), {**GALAXY, "mag": 19.0}, cfg.bounds), 2.0
    )
    for label in ("mag", "n", "re", "q"):
        assert 0 < bright[label] < faint[label] and math.isfinite(faint[label])
    # marginalising over the other parameters can only widen the flux-only bound
    stamp = renderer.render(**{**GALAXY, "mag": 19.0})
    snr = matched_filter_snr(stamp, variance_map(stamp, cfg.instrument))
    assert bright["mag"] >= 2.5 / math.log(10) / snr * (1 - 1e-3)


def test_round_galaxy_has_finite_bounds(setup):
    renderer, cfg = setup  # pa is unconstrained at q = 1; the pseudo-inverse keeps the rest finite
    fisher = fisher_matrix(renderer, CCDModel(cfg.instrument), {**GALAXY, "q": 1.0}, cfg.bounds)
    b = label_bounds(fisher, 2.0)
    assert all(math.isfinite(v) and v > 0 for v in b.values())


def test_test_split_carries_bounds(sim_config, tmp_path):
    run_simulation(sim_config("montage=0"), progress=False)
    test = read_params(tmp_path / "data" / "test.h5")
    train = read_params(tmp_path / "data" / "train.h5")
    for label in ("mag", "n", "re", "q"):
        assert np.all(np.isfinite(test[f"crb_{label}"])) and np.all(test[f"crb_{label}"] > 0)
        assert np.all(np.isnan(train[f"crb_{label}"]))


def test_bad_bounds_config(sim_config):
    from sersic_runtime.errors import ConfigError
    from simulate.config import validate

    with pytest.raises(ConfigError, match=r"bounds\.splits=.* may only name train, val and test"):
        validate(sim_config("bounds.splits=[tests]"))
    with pytest.raises(ConfigError, match=r"bounds\.pa=0"):
        validate(sim_config("bounds.pa=0"))
