"""Noise statistics match docs/contract.md, section 1."""

from __future__ import annotations

import numpy as np
import pytest

from simulate.noise import add_noise, background_rms, matched_filter_snr, variance_map


def test_background_rms_formula(sim_config):
    ins = sim_config().instrument
    # contract: sqrt(sky * t + rn^2) / t = 0.01453 e-/s per pixel for the default instrument
    assert background_rms(ins) == pytest.approx(0.01453, abs=5e-6)


def test_background_noise_rms_and_mean(sim_config):
    ins = sim_config().instrument
    noisy = add_noise(np.zeros((256, 256)), ins, seed=3)
    assert noisy.std() == pytest.approx(background_rms(ins), rel=0.02)
    assert abs(noisy.mean()) < 5 * background_rms(ins) / 256  # sky subtracted


def test_source_adds_poisson_variance(sim_config):
    ins = sim_config().instrument
    level = 1.0  # e-/s per pixel
    noisy = add_noise(np.full((256, 256), level), ins, seed=4)
    expected = np.sqrt(background_rms(ins) ** 2 + level / ins.exposure_time)
    assert noisy.std() == pytest.approx(expected, rel=0.02)
    assert noisy.mean() == pytest.approx(level, abs=1e-3)


def test_same_seed_same_noise(sim_config):
    ins = sim_config().instrument
    a = add_noise(np.zeros((16, 16)), ins, seed=11)
    b = add_noise(np.zeros((16, 16)), ins, seed=11)
    c = add_noise(np.zeros((16, 16)), ins, seed=12)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_snr_of_uniform_source(sim_config):
    ins = sim_config().instrument
    stamp = np.zeros((10, 10))
    stamp[5, 5] = 1.0
    var = background_rms(ins) ** 2 + 1.0 / ins.exposure_time
    assert matched_filter_snr(stamp, variance_map(stamp, ins)) == pytest.approx(1.0 / np.sqrt(var))
