"""The Python API: fitnet.load() and Model.predict, with the command line's checks."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from astropy.io import fits

import fitnet
from fitnet.inference import Predictor
from fitnet.inputs import Cutout, InputError
from fitnet.stamps import StampMaker
from sersic_runtime.errors import UserError


@pytest.fixture(scope="module")
def model(tiny_ckpt):
    model = fitnet.load(tiny_ckpt, device="cpu")
    # the tiny checkpoint's predictions are far from its galaxies: every row would be bad_fit
    model.quality.checks.bad_fit = False
    return model


@pytest.fixture
def images(tiny_data):
    with h5py.File(tiny_data / "test.h5") as f:
        return f["images"][:]


def test_load_without_a_path_is_the_shipped_model_with_sigmas(images):
    model = fitnet.load(device="cpu")
    assert model.labels == ["mag", "n", "re", "q"]
    assert model.pixel_scale == pytest.approx(0.06) and model.stamp_size == 128
    table = model.predict(images[0], pixel_scale=0.06)  # 64 px stamps: padded to 128
    assert len(table) == 1 and table["flag"][0] == 0
    assert str(table["re"].unit) == "arcsec" and str(table["re_err"].unit) == "arcsec"
    assert np.all(np.asarray([table[f"{n}_err"][0] for n in model.labels]) > 0)


def test_one_image_gives_one_row_with_units(model, images):
    table = model.predict(images[0], pixel_scale=0.06)
    assert len(table) == 1 and table["flag"][0] == 0
    assert str(table["mag"].unit) == "mag" and str(table["re"].unit) == "arcsec"
    assert {"source", "flag", "problem"} <= set(table.colnames)


def test_a_stamp_gives_what_the_predictor_gives(model, images):
    table = model.predict(images[:3], pixel_scale=0.06, checks=False, fit="none")
    values, _ = Predictor(model.predictor.paths, torch.device("cpu")).predict(images[:3])
    assert np.allclose(table["re"], values["re"], rtol=1e-6)


def test_arrays_of_any_size_are_padded_or_cropped_as_on_the_command_line(model, images):
    small, large = images[0][5:-6, 5:-6], np.pad(images[1], 20)  # 53 x 53 and 104 x 104
    table = model.predict([small, large], pixel_scale=0.06, checks=False, fit="none")
    maker = StampMaker(model.stamp_size, model.predictor.noise_rms)
    stamps = np.stack([maker(Cutout("a", small)).image, maker(Cutout("b", large)).image])
    values, _ = model.predictor.predict(stamps)
    assert np.allclose(table["mag"], values["mag"], rtol=1e-6)
    assert list(table["flag"]) == [0, 0]


def test_fits_paths_and_arrays_together(model, images, tmp_path):
    fits.PrimaryHDU(images[2], header=fits.Header({"PIXSCALE": 0.06})).writeto(tmp_path / "c.fits")
    table = model.predict([images[2], tmp_path / "c.fits"], pixel_scale=0.06)
    assert list(table["source"]) == ["[0]", "c.fits"]
    assert table["re"][0] == pytest.approx(table["re"][1])


def test_arrays_need_a_pixel_scale(model, images):
    with pytest.raises(InputError, match=r"arrays: no pixel scale \(arrays carry none\)"):
        model.predict(images[0])
    with pytest.raises(InputError, match=r"pixel scale 0\.1 arcsec/pixel differs"):
        model.predict(images[0], pixel_scale=0.1)


def test_input_scale_must_be_positive(model, images):
    with pytest.raises(UserError, match=r"input_scale=-1 is not allowed"):
        model.predict(images[0], pixel_scale=0.06, input_scale=-1)


def test_the_predictor_names_the_shape_it_takes(model):
    with pytest.raises(UserError, match=r"images of shape \(1, 101, 101\).*\(B, 64, 64\)"):
        model.predictor.predict(np.zeros((1, 101, 101), dtype=np.float32))
