"""A PSF drawn per galaxy (psf_family=generalist): recorded, rendered with, reproducible."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from conftest import read_params

from sersic_runtime.errors import ConfigError
from simulate.pipeline import run_simulation
from simulate.psf_family import FAMILIES, draw_psf

GENERALIST = ["instrument=generalist", "psf_family=generalist", "prior.re.max=10", "montage=0"]


@pytest.fixture
def generalist_data(sim_config, tmp_path):
    run_simulation(sim_config(*GENERALIST, "noiseless=true"), progress=False)
    return tmp_path / "data"


def test_each_galaxy_records_its_psf(generalist_data):
    path = generalist_data / "train.h5"
    cols = read_params(path)
    with h5py.File(path) as f:
        psf = f["psf"][()]
    assert psf.shape == (len(cols["mag"]), 33, 33)
    np.testing.assert_allclose(psf.sum((1, 2)), 1.0, rtol=1e-5)
    assert np.all(psf.reshape(len(psf), -1).argmax(1) // 33 == 16)  # peaks on the middle row
    drawn = cols["psf_preset"] < 0
    assert np.all((cols["psf_fwhm"][drawn] > 1.5 * 0.95) & (cols["psf_fwhm"][drawn] < 8 * 1.05))
    assert set(np.unique(cols["psf_family"])) <= set(range(len(FAMILIES)))


def test_a_wider_psf_spreads_the_galaxy(generalist_data):
    # the same prior over a range of PSFs: the peak of the noiseless stamp falls with PSF width
    cols = read_params(generalist_data / "train.h5")
    with h5py.File(generalist_data / "train.h5") as f:
        peak = f["noiseless"][()].max((1, 2)) / cols["flux_stamp"]
    small = cols["re"] < 1.5
    assert np.corrcoef(np.log(cols["psf_fwhm"][small]), np.log(peak[small]))[0, 1] < -0.8


def test_the_psf_stream_leaves_the_other_draws_alone(sim_config, generalist_data, tmp_path):
    plain = tmp_path / "plain"
    overrides = ["instrument=generalist", "prior.re.max=10", "montage=0"]
    run_simulation(sim_config(*overrides, out_dir=plain), progress=False)
    a, b = read_params(generalist_data / "train.h5"), read_params(plain / "train.h5")
    for name in ("mag", "n", "re", "q", "pa", "noise_seed"):
        np.testing.assert_array_equal(a[name], b[name])


def test_psfs_depend_only_on_the_seed_and_index(sim_config):
    spec = sim_config(*GENERALIST).psf_family
    one, cols = draw_psf(7, 12, spec)
    two, same = draw_psf(7, 12, spec)
    assert cols == same and repr(one) == repr(two)
    assert draw_psf(7, 13, spec)[1] != cols


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("psf_family.fwhm_px=[0,3]", r"psf_family\.fwhm_px=\[0\.0, 3\.0\]"),
        ("psf_family.image_size_px=32", r"image_size_px=32.*odd"),
        ("psf_family.presets=[hubble]", r"'hubble' is not in conf/instrument"),
        ("~psf_family.weights.airy", r"psf_family\.weights=.*each of"),
    ],
)
def test_bad_psf_family_settings_fail_with_the_key(sim_config, override, match):
    with pytest.raises(ConfigError, match=match):
        run_simulation(sim_config(*GENERALIST, override), progress=False)


def test_an_obscured_airy_whose_transform_galsim_misses_is_rendered(sim_config):
    # GalSim's obscured Airy returns NaN at an isolated k for this galaxy's PSF (obscuration 0.0055)
    from simulate.psf_family import psf_image
    from simulate.render import transfer_function

    psf, columns = draw_psf(424242, 18090, sim_config(*GENERALIST).psf_family)
    assert FAMILIES[columns["psf_family"]] == "airy"
    assert np.isfinite(transfer_function(psf, 1.0, 256)).all()
    image = psf_image(psf, 33)
    assert np.isfinite(image).all() and image.argmax() == 33 * 16 + 16


def test_a_psf_whose_galsim_fwhm_is_nan_gets_a_finite_one(sim_config):
    # GalSim's calculateFWHM gives NaN for this galaxy's sheared Euclid VIS preset PSF
    psf, columns = draw_psf(424242, 6660, sim_config(*GENERALIST).psf_family)
    assert not np.isfinite(psf.calculateFWHM())
    assert columns["psf_fwhm"] == pytest.approx(psf.calculateFWHM(scale=0.1), rel=0.05)
