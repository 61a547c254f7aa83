"""The PSF-conditioned generalist: trained on a PSF per galaxy, predicting any instrument's cutouts
with their PSF, the results in the user's units."""

from __future__ import annotations

import galsim
import h5py
import numpy as np
import pytest
import torch
from astropy.io import fits
from astropy.table import Table
from conftest import TINY_SIM, TINY_TRAIN, compose_config, run_module

from fitnet.data import DataError
from fitnet.generalist import bin_image
from fitnet.inference import Predictor
from fitnet.models import PSFConditioned, build_model, input_channels
from fitnet.train import run as train
from simulate.pipeline import run_simulation

GENERALIST_SIM = [*TINY_SIM, "instrument=generalist", "psf_family=generalist", "prior=generalist",
                  "prior.re.max=6", "prior.size.min=40", "prior.size.max=90", "n=40", "montage=0"]  # fmt: skip


@pytest.fixture(scope="module")
def generalist_ckpt(tmp_path_factory):
    """A PSF-conditioned model trained for one epoch on 32 galaxies, each with its own PSF."""
    root = tmp_path_factory.mktemp("generalist")
    run_simulation(compose_config("simulate", [*GENERALIST_SIM, f"out_dir={root / 'data'}"]),
                   progress=False)  # fmt: skip
    cfg = compose_config("train", [*TINY_TRAIN, "model=psf_conditioned", "loss=gaussian_nll",
                                   f"data_dir={root / 'data'}"])  # fmt: skip
    train(cfg, root / "run")
    return root / "run" / "best.pt"


@pytest.fixture
def cutouts(tmp_path):
    """Two FITS cutouts of one galaxy at 0.1"/px (60 and 150 px) and its Moffat PSF image."""
    psf = galsim.Moffat(beta=3.0, fwhm=0.3)
    galaxy = galsim.Sersic(n=1.5, half_light_radius=0.4, flux=400.0).shear(
        q=0.6, beta=0.3 * galsim.radians
    )
    rng = np.random.default_rng(1)
    folder = tmp_path / "cutouts"
    folder.mkdir()
    for k, size in enumerate((60, 150)):
        image = galsim.Convolve(galaxy, psf).drawImage(nx=size, ny=size, scale=0.1).array
        header = fits.Header({"PIXSCALE": 0.1, "MAGZERO": 28.0})
        fits.writeto(
            folder / f"c{k}.fits",
            (image + rng.normal(0, 0.5, image.shape)).astype(np.float32),
            header,
        )
    fits.writeto(
        tmp_path / "psf.fits", psf.drawImage(nx=31, ny=31, scale=0.1).array.astype(np.float32)
    )
    return folder, tmp_path / "psf.fits"


def test_the_model_takes_the_stamp_and_its_psf():
    cfg = dict(compose_config("train", ["model=psf_conditioned"]).model)
    assert input_channels(cfg) == 2
    model = build_model(cfg, 2, 8, 64)
    assert isinstance(model, PSFConditioned)
    assert model(torch.zeros(3, 2, 64, 64)).shape == (3, 8)
    with pytest.raises(ValueError, match="takes the stamp and its PSF"):
        build_model(cfg, 1, 8, 64)


def test_the_checkpoint_records_its_inputs_and_psf_range(generalist_ckpt):
    predictor = Predictor([generalist_ckpt], torch.device("cpu"))
    assert predictor.needs_psf
    lo, hi = predictor.instrument["psf_fwhm_range_px"]
    assert 1.0 < lo < hi < 9.0


def test_the_psf_range_ignores_a_nan_fwhm_of_older_files(tmp_path):
    from fitnet.training import psf_fwhm_range

    with h5py.File(tmp_path / "old.h5", "w") as f:
        f["params/psf_fwhm"] = [2.0, np.nan, 5.0]
    assert psf_fwhm_range([tmp_path / "old.h5"]) == [2.0, 5.0]


def test_a_psf_model_needs_files_with_a_psf_per_stamp(train_config, tmp_path):
    with pytest.raises(DataError, match=r"a PSF-conditioned model needs a PSF per stamp"):
        train(train_config("model=psf_conditioned"), tmp_path / "run")


def predict(ckpt, tmp_path, *args):
    out = tmp_path / "out.ecsv"
    result = run_module("fitnet.predict", f"ckpt={ckpt}", f"output={out}", "progress=false", *args,
                        cwd=tmp_path)  # fmt: skip
    return result, (Table.read(out) if result.returncode == 0 else None)


def test_cutouts_of_another_instrument_come_back_in_its_units(generalist_ckpt, cutouts, tmp_path):
    folder, psf = cutouts
    result, table = predict(generalist_ckpt, tmp_path, f"input={folder}", f"psf={psf}")
    assert result.returncode == 0, result.stderr
    assert list(table["source"]) == ["c0.fits", "c1.fits"]
    assert list(table["bin_factor"]) == [1, 3]  # 150 px: summed 3 x 3 into the 64 px stamp
    assert table["noise_rms"][1] == pytest.approx(3 * table["noise_rms"][0], rel=0.15)
    np.testing.assert_allclose(table["re"], table["re_px"] * 0.1)
    assert str(table["re"].unit) == "arcsec" and str(table["mag"].unit) == "mag"
    np.testing.assert_allclose(
        table["mag"], 28.0 - 2.5 * np.log10(table["flux"])
    )  # header's MAGZERO
    assert not table["flag"][1] & 32768  # the fit measured every label: psf_range cleared


def test_a_psf_outside_the_trained_range_flags_the_network_answer(
    generalist_ckpt, cutouts, tmp_path
):
    folder, psf = cutouts
    result, table = predict(generalist_ckpt, tmp_path, f"input={folder}", f"psf={psf}", "fit=none")
    assert result.returncode == 0, result.stderr
    assert table["flag"][1] & 32768  # 1 px FWHM once binned: outside the trained range
    assert "psf_range" in table["problem"][1]


def test_brighter_units_scale_the_flux_only(generalist_ckpt, cutouts, tmp_path):
    # the cutout is measured in units of its own noise: units x 10 give flux x 10, nothing else
    folder, psf = cutouts
    with fits.open(folder / "c0.fits") as hdul:
        fits.writeto(tmp_path / "bright.fits", hdul[0].data * 10, hdul[0].header)
    _, one = predict(generalist_ckpt, tmp_path, f"input={folder / 'c0.fits'}", f"psf={psf}")
    _, ten = predict(generalist_ckpt, tmp_path, f"input={tmp_path / 'bright.fits'}", f"psf={psf}")
    assert ten["flux"][0] == pytest.approx(10 * one["flux"][0], rel=1e-4)
    for name in ("re", "n", "q"):
        assert ten[name][0] == pytest.approx(one[name][0], rel=1e-4)


def test_without_a_psf_the_generalist_says_what_it_needs(generalist_ckpt, cutouts, tmp_path):
    result, _ = predict(generalist_ckpt, tmp_path, f"input={cutouts[0]}")
    assert result.returncode == 2
    assert "takes the PSF as an input: give psf=psf.fits" in result.stderr


def test_an_off_centre_psf_is_refused(generalist_ckpt, cutouts, tmp_path):
    image = galsim.Moffat(beta=3.0, fwhm=0.3).drawImage(nx=31, ny=31, scale=0.1,
                                                          offset=(5, 0)).array  # fmt: skip
    fits.writeto(tmp_path / "off.fits", image.astype(np.float32))
    result, _ = predict(
        generalist_ckpt, tmp_path, f"input={cutouts[0]}", f"psf={tmp_path / 'off.fits'}"
    )
    assert result.returncode == 2
    assert "psf=" in result.stderr and "centred 5.00 data pixels" in result.stderr


def test_a_model_with_its_own_psf_refuses_psf(tiny_ckpt, cutouts, tmp_path):
    folder, psf = cutouts
    result, _ = predict(tiny_ckpt, tmp_path, f"input={folder}", f"psf={psf}")
    assert result.returncode == 2 and "psf= is for a PSF-conditioned model" in result.stderr


def test_binning_sums_blocks_about_the_centre():
    image = np.arange(49.0).reshape(7, 7)
    binned = bin_image(image, 3)  # 6 x 6 of the 7 x 7 kept, one edge row and column trimmed
    assert binned.shape == (2, 2)
    assert binned.sum() == image[:6, :6].sum()


def test_the_python_api_takes_the_psf_too(generalist_ckpt, cutouts):
    import fitnet

    folder, psf = cutouts
    model = fitnet.load(str(generalist_ckpt), device="cpu")
    table = model.predict(str(folder / "c0.fits"), psf=str(psf), zero_point=27.0)
    assert table["mag"][0] == pytest.approx(27.0 - 2.5 * np.log10(table["flux"][0]))
    with pytest.raises(Exception, match="takes the PSF as an input"):
        model.predict(str(folder / "c0.fits"))


def test_shipped_models_are_found_by_name(monkeypatch, tmp_path):
    from fitnet import runtime
    from fitnet.runtime import checkpoint_paths
    from sersic_runtime.errors import UserError

    monkeypatch.setitem(runtime.SHIPPED, "generalist", tmp_path / "generalist.pt")
    with pytest.raises(UserError, match=r"ckpt=generalist: this installation has no"):
        checkpoint_paths("generalist")
    (tmp_path / "generalist.pt").write_bytes(b"")
    assert checkpoint_paths("generalist") == [tmp_path / "generalist.pt"]


def test_without_a_zero_point_the_catalogue_gives_flux_and_no_mag(
    generalist_ckpt, cutouts, tmp_path
):
    folder, psf = cutouts
    with fits.open(folder / "c0.fits") as hdul:
        header = hdul[0].header.copy()
        del header["MAGZERO"]
        fits.writeto(tmp_path / "nozp.fits", hdul[0].data, header)
    result, table = predict(
        generalist_ckpt, tmp_path, f"input={tmp_path / 'nozp.fits'}", f"psf={psf}"
    )
    assert result.returncode == 0, result.stderr
    assert "mag" not in table.colnames and "mag_err" not in table.colnames
    assert np.isfinite(table["flux"][0]) and np.isfinite(table["re"][0])
    assert "no zero point" in result.stdout and "0 of them not measured" in result.stdout


def test_a_pixel_scale_that_disagrees_with_the_header_is_refused(
    generalist_ckpt, cutouts, tmp_path
):
    folder, psf = cutouts
    result, _ = predict(
        generalist_ckpt, tmp_path, f"input={folder}", f"psf={psf}", "pixel_scale=0.2"
    )
    assert result.returncode == 2
    assert "pixel_scale=0.2 disagrees with the header of" in result.stderr
    assert "(0.1 arcsec/pixel), which wins" in result.stderr
