"""Bad configurations fail before rendering, naming the key, the value and what is allowed."""

from __future__ import annotations

import pytest

from sersic_runtime.errors import ConfigError
from simulate.config import split_ranges, validate
from simulate.pipeline import run_simulation


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("prior.n.max=6.5", r"prior\.n\.max=6\.5 .*\[0\.3, 6\.2\]"),
        ("prior.n.min=0.2", r"prior\.n\.min=0\.2 .*\[0\.3, 6\.2\]"),
        ("prior.q.min=0.0", r"prior\.q\.min=0\.0 .*\(0\.0, 1\.0\]"),
        ("prior.q.max=1.2", r"prior\.q\.max=1\.2 .*\(0\.0, 1\.0\]"),
        ("prior.re.min=0.0", r"prior\.re\.min=0\.0 .*\(0\.0, inf\]"),
        ("prior.re.min=-1.0", r"prior\.re\.min=-1\.0"),
        ("prior.size.min=0", r"prior\.size\.min=0 .*\[1, inf\]"),
        ("prior.mag.min=26", r"prior\.mag\.min=26.* must not exceed prior\.mag\.max"),
        ("instrument.pixel_scale=0", r"instrument\.pixel_scale=0.* must be > 0"),
        ("instrument.exposure_time=-5", r"instrument\.exposure_time=-5.* must be > 0"),
        ("instrument.read_noise=-1", r"instrument\.read_noise=-1.* must be >= 0"),
        ("splits.train=0.7", r"splits=.* must sum to 1 \(they sum to 0\.9\)"),
        ("splits.val=0", r"splits\.val=0.* must be > 0"),
        ("n=2", r"n=2 .* too small for three splits"),
        ("render.fft_size=100", r"render\.fft_size=100 .* >= 2 \* render\.stamp_size = 128"),
        ("render.n_grid_points=1", r"render\.n_grid_points=1"),
        ("workers=-1", r"workers=-1"),
        ("instrument.psf.fwhm=-0.1", r"instrument\.psf\.fwhm=-0\.1 .*must be a size > 0"),
        ("instrument.psf._target_=galsim.Gaussian", r"GalSim could not build it .*beta"),
        (
            "instrument.psf._target_=galsim.NoSuchProfile",
            r"is not allowed: choose from galsim.Moffat",
        ),
    ],
)
def test_bad_values_raise(sim_config, override, match):
    with pytest.raises(ConfigError, match=match):
        validate(sim_config(override))


def test_unknown_key_raises(sim_config):
    with pytest.raises(ConfigError, match=r"foo"):
        validate(sim_config("+prior.foo=1"))


def test_wrong_type_raises(sim_config):
    with pytest.raises(ConfigError, match=r"prior\.mag\.min"):
        validate(sim_config("prior.mag.min=bright"))


def test_bad_config_fails_before_rendering(sim_config, tmp_path):
    with pytest.raises(ConfigError):
        run_simulation(sim_config("prior.q.min=0"), progress=False)
    assert not (tmp_path / "data").exists()


def test_default_config_is_valid(sim_config):
    validate(sim_config())


def test_splits_are_contiguous_and_cover_n(sim_config):
    cfg = validate(sim_config("n=1001"))
    ranges = split_ranges(cfg.n, cfg.splits)
    assert ranges == {"train": (0, 801), "val": (801, 901), "test": (901, 1001)}


def test_a_worker_that_cannot_start_stops_the_run(sim_config):
    """A Pool restarts workers whose initializer raises, for ever: the error waits for the
    first task instead, which then fails."""
    from omegaconf import OmegaConf

    from simulate import pipeline

    cfg = sim_config()
    instrument = OmegaConf.to_container(cfg.instrument)
    instrument["psf"] = {"_target_": "galsim.Gaussian", "beta": 3.0, "fwhm": 0.18}
    render, bounds = OmegaConf.to_container(cfg.render), OmegaConf.to_container(cfg.bounds)
    try:
        pipeline._init_worker(instrument, render, bounds, None, False, None, None)
        with pytest.raises(RuntimeError, match="a rendering worker could not start"):
            pipeline._render_part(None)
    finally:
        pipeline._WORKER.clear()
