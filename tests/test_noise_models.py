"""Noise models beyond the instrument's CCD noise (conf/noise): a weight map's depths and
correlated noise measured on a blank patch; simulated, recorded, drawn afresh and checked."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from astropy.io import fits
from conftest import CONF, read_params
from omegaconf import OmegaConf
from scipy import ndimage

from fitnet.noise import CorrelatedNoise, MapNoise, from_file
from fitnet.quality import Checker
from sersic_runtime.errors import ConfigError
from simulate.bounds import fisher_matrix, label_bounds
from simulate.noise import CCDModel, CorrelatedModel, noise_model, power_spectrum
from simulate.pipeline import config_digest, run_simulation
from simulate.render import StampRenderer

RMS = 0.0145  # e-/s per pixel, about the default instrument's background


@pytest.fixture
def weight_map(tmp_path):
    """An inverse-variance map: half the field at RMS, half twice as deep; a strip with no data."""
    rms = np.full((200, 200), RMS)
    rms[:, 100:] = RMS / 2
    weight = 1.0 / rms**2
    weight[:10] = 0.0
    path = tmp_path / "ivar.fits"
    fits.writeto(path, weight.astype(np.float32))
    return path


def blank_patch(path, size=200, seed=0, smooth=3):
    """A source-free patch of noise correlated by a ``smooth`` px box filter, rms about RMS."""
    white = np.random.default_rng(seed).standard_normal((size, size))
    patch = ndimage.uniform_filter(white, smooth, mode="wrap") * RMS * smooth
    fits.writeto(path, patch.astype(np.float32))
    return path


@pytest.fixture
def patch(tmp_path):
    return blank_patch(tmp_path / "blank.fits")


def test_map_noise_draws_each_stamp_a_depth_of_the_map(sim_config, weight_map, tmp_path):
    cfg = sim_config("noise=map", f"noise.file={weight_map}", "montage=0", "noise.quantiles=[0,1]")
    run_simulation(cfg, progress=False)
    path = tmp_path / "data" / "train.h5"
    rms = read_params(path, ["background_rms"])["background_rms"]
    assert rms.min() >= RMS / 2 * (1 - 1e-6) and rms.max() <= RMS * (1 + 1e-6)
    assert rms.min() < 0.6 * RMS and rms.max() > 0.9 * RMS  # both halves are drawn
    with h5py.File(path) as f:
        assert f.attrs["noise_model"] == "map"
        assert f.attrs["background_rms_min_e_per_s"] == pytest.approx(RMS / 2, rel=1e-5)
        border = np.concatenate([f["images"][:, :4].reshape(len(rms), -1),
                                 f["images"][:, -4:].reshape(len(rms), -1)], axis=1)  # fmt: skip
    # the border of a stamp (mostly sky) has the stamp's own rms
    np.testing.assert_allclose(np.median(border.std(1) / rms), 1.0, atol=0.05)


def test_the_map_and_its_contents_define_the_data(sim_config, weight_map):
    with_map = config_digest(sim_config("noise=map", f"noise.file={weight_map}"))
    assert with_map != config_digest(sim_config())
    fits.writeto(weight_map, np.ones((50, 50), dtype=np.float32), overwrite=True)
    assert config_digest(sim_config("noise=map", f"noise.file={weight_map}")) != with_map


def test_a_map_without_data_is_refused(sim_config, tmp_path):
    path = tmp_path / "zeros.fits"
    fits.writeto(path, np.zeros((20, 20), dtype=np.float32))
    with pytest.raises(ConfigError, match=r"zeros.fits has no finite pixel > 0.*weight map"):
        run_simulation(sim_config("noise=map", f"noise.file={path}"), progress=False)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["noise=map"], r"noise\.file='\?\?\?' is not allowed: must be given for noise=map"),
        (["noise=map", "noise.file=nowhere.fits"], r"noise\.file='nowhere.fits'.*existing FITS"),
        (["noise=map", "noise.file={map}", "noise.kind=variance"], r"noise\.kind='variance'.*rms"),
        (["noise=map", "noise.file={map}", "noise.quantiles=[0.9,0.1]"], r"noise\.quantiles="),
        (["noise=correlated", "noise.file={map}", "noise.max_lag_px=40"], r"noise\.min_size_px=64"),
        (["noise.model=poisson"], r"noise='poisson' is not allowed: must be one of"),
    ],
)
def test_bad_noise_settings_fail_with_the_key(sim_config, weight_map, overrides, match):
    overrides = [o.format(map=weight_map) for o in overrides]
    with pytest.raises(ConfigError, match=match):
        run_simulation(sim_config(*overrides), progress=False)


def test_correlated_noise_has_the_patch_correlations(sim_config, patch):
    model = noise_model(sim_config("noise=correlated", f"noise.file={patch}"))
    with fits.open(patch) as hdus:
        data = hdus[0].data.astype(float)
    lag1 = np.mean(data[:, 1:] * data[:, :-1]) / data.var()  # 2/3 for a 3 px box
    drawn = np.stack([model.add(np.zeros((64, 64)), seed, 0.0) for seed in range(1, 401)])
    assert drawn.var() == pytest.approx(data.var(), rel=0.03)
    measured = np.mean(drawn[:, :, 1:] * drawn[:, :, :-1]) / drawn.var()
    assert measured == pytest.approx(lag1, abs=0.02)


def test_a_patch_with_sources_is_refused(sim_config, patch):
    with fits.open(patch) as hdus:
        data = hdus[0].data.copy()
    data[90:110, 90:110] += 50 * RMS  # a bright galaxy
    fits.writeto(patch, data, overwrite=True)
    with pytest.raises(ConfigError, match=r"blank.fits: 1\.00% of its pixels .*holds sources"):
        noise_model(sim_config("noise=correlated", f"noise.file={patch}"))


def test_a_small_patch_is_refused(sim_config, tmp_path):
    small = blank_patch(tmp_path / "small.fits", size=40)
    with pytest.raises(ConfigError, match=r"small.fits is 40 x 40 px.*min_size_px=64"):
        noise_model(sim_config("noise=correlated", f"noise.file={small}"))


def test_white_correlation_gives_the_white_noise_fisher_matrix(sim_config):
    # the conjugate-gradient path with a delta correlation is the per-pixel sum
    cfg = sim_config()
    renderer = StampRenderer(cfg.instrument, cfg.render)
    ccd = CCDModel(cfg.instrument)
    s = cfg.render.stamp_size
    delta = np.zeros((s, s))
    delta[s // 2, s // 2] = ccd.background_rms**2
    white = CorrelatedModel(cfg.instrument, delta, power_floor=1e-3, cg_rtol=1e-10)
    galaxy = dict(n=2.0, re=0.3, q=0.6, pa=30.0, mag=22.0, dx=0.2, dy=-0.3, size=64)
    a, b = (label_bounds(fisher_matrix(renderer, m, galaxy, cfg.bounds), 2.0) for m in (white, ccd))
    for label in ("mag", "n", "re", "q"):
        assert a[label] == pytest.approx(b[label], rel=1e-5)


def test_correlated_data_record_their_model_and_carry_bounds(sim_config, patch, tmp_path):
    cfg = sim_config("noise=correlated", f"noise.file={patch}", "montage=0", "noiseless=true")
    run_simulation(cfg, progress=False)
    path = tmp_path / "data" / "test.h5"
    with h5py.File(path) as f:
        attrs = dict(f.attrs)
        assert attrs["noise_model"] == "correlated"
        assert f["noise/correlation"].shape == (64, 64)
    assert np.isfinite(read_params(path, ["crb_mag"])["crb_mag"]).all()
    fresh = from_file(path, attrs)
    assert isinstance(fresh, CorrelatedNoise)
    out = fresh(torch.zeros(200, 64, 64), torch.Generator().manual_seed(0))
    assert out.std().item() == pytest.approx(attrs["background_rms_e_per_s"], rel=0.02)


def test_fresh_correlated_noise_matches_the_simulator(sim_config, patch):
    model = noise_model(sim_config("noise=correlated", f"noise.file={patch}"))
    torch_noise = CorrelatedNoise(model.exposure_time, power_spectrum(model.correlation, 1e-3))
    fresh = torch_noise(torch.zeros(400, 64, 64), torch.Generator().manual_seed(0)).double().numpy()
    drawn = np.stack([model.add(np.zeros((64, 64)), seed, 0.0) for seed in range(1, 401)])
    for lag in (1, 2):
        a = np.mean(fresh[:, :, lag:] * fresh[:, :, :-lag])
        b = np.mean(drawn[:, :, lag:] * drawn[:, :, :-lag])
        assert a == pytest.approx(b, rel=0.05)


def test_fresh_map_noise_draws_the_depths_of_the_table():
    noise = MapNoise(3000.0, np.linspace(0.01, 0.02, 11))
    out = noise(torch.zeros(500, 32, 32), torch.Generator().manual_seed(0))
    rms = out.std(dim=(1, 2)).numpy()
    assert rms.min() > 0.01 * 0.92 and rms.max() < 0.02 * 1.08  # a 1024-pixel rms: 2% error
    assert np.quantile(rms, 0.1) < 0.012 and np.quantile(rms, 0.9) > 0.018


def test_the_noise_check_allows_every_trained_depth():
    quality = OmegaConf.load(CONF / "quality" / "default.yaml")
    one_depth = Checker(quality, 64, RMS)
    many = Checker(quality, 64, RMS, (RMS / 2, 2 * RMS))
    assert one_depth.noise_bounds == pytest.approx(tuple(quality.noise_ratio))
    assert many.noise_bounds[0] < 0.5 and many.noise_bounds[1] > 2.0


def test_a_model_trained_on_map_noise_knows_its_depths(sim_config, weight_map, tmp_path):
    from conftest import TINY_TRAIN, compose_config

    from fitnet.inference import Predictor
    from fitnet.train import run as train

    data = tmp_path / "data"
    cfg = sim_config("noise=map", f"noise.file={weight_map}", "n=40", "montage=0", "noiseless=true")
    run_simulation(cfg, progress=False)
    train(compose_config("train", [*TINY_TRAIN, "fresh_noise=true", f"data_dir={data}"]),
          tmp_path / "run")  # fmt: skip
    predictor = Predictor([tmp_path / "run" / "best.pt"], torch.device("cpu"))
    low, high = predictor.noise_range
    assert predictor.instrument["noise_model"] == "map"
    assert low == pytest.approx(RMS / 2, rel=0.01) and high == pytest.approx(RMS, rel=0.01)
    assert low < predictor.noise_rms < high


def test_the_checks_measure_sums_of_correlated_noise_as_noisier(sim_config, patch):
    from fitnet.quality import correlated_factor

    model = noise_model(sim_config("noise=correlated", f"noise.file={patch}"))
    fields = np.stack([model.add(np.zeros((64, 64)), seed, 0.0) for seed in range(1, 301)])
    offsets = np.arange(64) - 31.5
    weight = np.exp(-0.5 * (offsets[:, None] ** 2 + offsets[None, :] ** 2) / 2.0**2)
    measured = (fields * weight).sum((1, 2)).std() / (
        model.background_rms * np.sqrt((weight**2).sum())
    )
    assert measured > 1.5  # a 3 px box makes a 2 px-sigma weight's sum ~2x noisier
    core = model.core()
    rho = core / core[tuple(n // 2 for n in core.shape)]
    assert correlated_factor(weight, rho) == pytest.approx(measured, rel=0.1)
