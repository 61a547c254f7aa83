"""A survey's PSF image as the instrument's PSF (simulate/psf.py)."""

from __future__ import annotations

import galsim
import h5py
import numpy as np
import pytest
from astropy.io import fits
from conftest import TINY_SIM, compose_config
from omegaconf import OmegaConf

from sersic_runtime.errors import ConfigError
from simulate.config import check_psf
from simulate.pipeline import config_digest, run_simulation
from simulate.psf_record import from_record
from simulate.render import StampRenderer

MOFFAT = galsim.Moffat(beta=3.0, fwhm=0.18)  # the default instrument's PSF, arcsec
GALAXY = (1.5, 0.15, 0.6, 30.0, 22.0, 0.3, -0.2, 128)  # n, re (arcsec), q, pa, mag, dx, dy, size


def image_instrument(path, **psf):
    cfg = compose_config("simulate", ["instrument=psf_image", f"instrument.psf.file={path}"])
    for key, value in psf.items():
        cfg.instrument.psf[key] = value
    return cfg


def rendered(cfg) -> np.ndarray:
    return StampRenderer(cfg.instrument, cfg.render).render(*GALAXY)


@pytest.fixture(scope="module")
def analytic():
    return rendered(compose_config("simulate"))


def test_an_effective_psf_image_renders_as_its_profile(tmp_path, analytic):
    fits.writeto(tmp_path / "epsf.fits", MOFFAT.drawImage(nx=65, ny=65, scale=0.06).array)
    stamp = rendered(image_instrument(tmp_path / "epsf.fits"))
    assert np.abs(stamp - analytic).max() < 3e-3 * analytic.max()


def test_an_oversampled_optical_psf_renders_as_its_profile(tmp_path, analytic):
    image = MOFFAT.drawImage(nx=195, ny=195, scale=0.02, method="no_pixel").array
    header = fits.Header({"OVERSAMP": 3})
    fits.writeto(tmp_path / "opsf.fits", image, header)
    stamp = rendered(image_instrument(tmp_path / "opsf.fits", includes_pixel=False))
    assert np.abs(stamp - analytic).max() < 2e-4 * analytic.max()


def test_the_header_pixel_scale_is_read(tmp_path, analytic):
    image = MOFFAT.drawImage(nx=195, ny=195, scale=0.02, method="no_pixel").array
    fits.writeto(tmp_path / "opsf.fits", image, fits.Header({"PIXELSCL": 0.02}))
    stamp = rendered(image_instrument(tmp_path / "opsf.fits", includes_pixel=False))
    assert np.abs(stamp - analytic).max() < 2e-4 * analytic.max()


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((33, 33)), r"sum to 0; a PSF needs a positive total"),
        (-MOFFAT.drawImage(nx=33, ny=33, scale=0.06).array, r"a PSF needs a positive total"),
        (np.roll(MOFFAT.drawImage(nx=65, ny=65, scale=0.06).array, 5, axis=1),
         r"centred 5\.00 data pixels from the image centre"),
        (MOFFAT.drawImage(nx=17, ny=17, scale=0.06).array, r"too small for this PSF"),
        (np.ones(5), r"needs a 2-D image"),
    ],
)  # fmt: skip
def test_an_unusable_psf_image_is_refused(tmp_path, image, message):
    fits.writeto(tmp_path / "bad.fits", image)
    with pytest.raises(ConfigError, match=message):
        check_psf(image_instrument(tmp_path / "bad.fits").instrument)


def test_the_psf_file_must_be_given():
    cfg = compose_config("simulate", ["instrument=psf_image"])
    with pytest.raises(ConfigError, match=r"instrument\.psf\.file='\?\?\?' .* must be given"):
        check_psf(cfg.instrument)


def test_the_files_record_the_image_psf_exactly(tmp_path):
    fits.writeto(tmp_path / "epsf.fits", MOFFAT.drawImage(nx=65, ny=65, scale=0.06).array)
    cfg = compose_config(
        "simulate", [*TINY_SIM, "instrument=psf_image", f"instrument.psf.file={tmp_path / 'epsf.fits'}",
                     f"out_dir={tmp_path / 'data'}", "bounds.splits=[]"],
    )  # fmt: skip
    run_simulation(cfg, progress=False)
    with h5py.File(tmp_path / "data" / "test.h5") as f:
        recorded = from_record(f.attrs["psf"])
    assert recorded == StampRenderer(cfg.instrument, cfg.render).psf


def test_the_digest_follows_the_psf_image_contents(tmp_path):
    path = tmp_path / "epsf.fits"
    fits.writeto(path, MOFFAT.drawImage(nx=65, ny=65, scale=0.06).array)
    cfg = image_instrument(path)
    before = config_digest(cfg)
    wider = galsim.Moffat(beta=3.0, fwhm=0.2).drawImage(nx=65, ny=65, scale=0.06).array
    fits.writeto(path, wider, overwrite=True)
    assert config_digest(cfg) != before
    assert OmegaConf.select(cfg, "instrument.psf.file") == str(path)
