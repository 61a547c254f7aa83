"""Prediction on HDF5, FITS and folders of FITS: order, flags, pixel-scale checks, formats."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from conftest import compose_config, other_simulators_copy, run_module

from fitnet.checkpoint import CheckpointError
from fitnet.flags import BITS
from fitnet.inference import Predictor
from fitnet.inputs import (
    FLAG_NOT_2D,
    FLAG_PIXEL_SCALE,
    FLAG_UNREADABLE,
    InputError,
    fits_pixel_scale,
    hdf5_pixel_scale,
)
from fitnet.predict import run as run_predict
from sersic_runtime.errors import UserError


def predict_config(*overrides):
    # The tiny checkpoint's predictions are far from its galaxies, so the residual check would
    # flag every row bad_fit, and the fit would replace them; both have tests of their own
    # (tests/test_measure.py): here the network's own answers, read from every kind of input.
    return compose_config(
        "predict",
        ["device=cpu", "progress=false", "batch_size.cpu=3", "quality.checks.bad_fit=false",
         "fit=none", *overrides],
    )  # fmt: skip


def predict_file(ckpt, path, output, *overrides):
    """``fitnet.predict`` of one input ``path`` with checkpoint ``ckpt`` into ``output``."""
    return run_predict(
        predict_config(f"ckpt={ckpt}", f"input={path}", f"output={output}", *overrides)
    )


def cutout(path, data, scale=0.06, keyword="PIXSCALE"):
    header = fits.Header()
    if scale is not None:
        header[keyword] = scale
    fits.PrimaryHDU(np.asarray(data, dtype=np.float32), header=header).writeto(path)


@pytest.fixture
def test_images(tiny_data):
    with h5py.File(tiny_data / "test.h5") as f:
        return f["images"][:]


def test_hdf5_rows_in_input_order_and_both_formats(tiny_ckpt, tiny_data, test_images, tmp_path):
    out_csv, out_fits = tmp_path / "cat.csv", tmp_path / "cat.fits"
    table = run_predict(
        predict_config(
            f"ckpt={tiny_ckpt}", f"input={tiny_data / 'test.h5'}", f"output=[{out_csv},{out_fits}]"
        )
    )
    assert list(table["row"]) == list(range(len(test_images)))
    assert list(table["source"]) == [f"test.h5[{i}]" for i in range(len(test_images))]
    for path in (out_csv, out_fits):
        read = Table.read(path)
        assert {"row", "source", "mag", "n", "re", "q", "flag"} <= set(read.colnames)
        assert len(read) == len(test_images) and np.all(read["flag"] == 0)
    # row order: each row equals the prediction of that image alone
    predictor = Predictor(tiny_ckpt, device=__import__("torch").device("cpu"))
    single, _ = predictor.predict(test_images[2:3])
    assert table["re"][2] == pytest.approx(single["re"][0], rel=1e-5)


def test_folder_of_fits_with_bad_cutouts(tiny_ckpt, test_images, tmp_path):
    folder = tmp_path / "cutouts"
    folder.mkdir()
    cutout(folder / "a_good.fits", test_images[0])
    cutout(folder / "b_bigger.fits", np.pad(test_images[1], 20))  # another size: cropped
    cutout(folder / "c_smaller.fits", test_images[2][10:50, 10:50])  # padded with noise
    with_nan = test_images[3].copy()
    with_nan[5, 5] = np.nan
    cutout(folder / "d_nan.fits", with_nan)
    cutout(folder / "e_cube.fits", np.zeros((2, 8, 8)))
    (folder / "f_broken.fits").write_text("not a fits file")
    cutout(folder / "g_other_scale.fits", test_images[0], scale=0.13)
    cutout(folder / "h_4d.fits", np.zeros((2, 2, 8, 8)))
    table = run_predict(
        predict_config(f"ckpt={tiny_ckpt}", f"input={folder}", f"output={tmp_path / 'cat.csv'}")
    )
    assert list(table["source"]) == [
        "a_good.fits",
        "b_bigger.fits",
        "c_smaller.fits",
        "d_nan.fits",
        "e_cube.fits[0][0]",  # a cube in a folder: one row per plane, as when read alone
        "e_cube.fits[0][1]",
        "f_broken.fits",
        "g_other_scale.fits",
        "h_4d.fits",
    ]
    empty = BITS["noise"] | BITS["no_source"]  # the cube's planes are zeros
    assert list(table["flag"]) == [
        0,
        0,
        0,
        0,  # one NaN pixel: replaced by noise, its fraction recorded
        empty,
        empty,
        FLAG_UNREADABLE,
        FLAG_PIXEL_SCALE,
        FLAG_NOT_2D,
    ]
    assert table["invalid_fraction"][3] == pytest.approx(1 / 64**2)
    assert np.isfinite(table["re"][:4]).all() and np.isnan(table["re"][4:]).all()
    assert table["problem"][4].startswith("noise: rms 0 x the model's")
    # a cutout padded by 20 pixels of zeros is cropped back to the same stamp
    ref = run_predict(
        predict_config(
            f"ckpt={tiny_ckpt}", f"input={folder / 'a_good.fits'}", f"output={tmp_path / 'one.csv'}"
        )
    )
    assert ref["re"][0] == pytest.approx(table["re"][0])


def test_single_fits_pixel_scale_mismatch_is_an_error(tiny_ckpt, test_images, tmp_path):
    cutout(tmp_path / "x.fits", test_images[0], scale=0.1)
    cfg = predict_config(
        f"ckpt={tiny_ckpt}", f"input={tmp_path / 'x.fits'}", f"output={tmp_path / 'c.csv'}"
    )
    with pytest.raises(
        InputError, match=r"x\.fits: pixel scale 0\.1 arcsec/pixel differs from the model's 0\.06"
    ):
        run_predict(cfg)
    table = run_predict(
        predict_config(
            f"ckpt={tiny_ckpt}",
            f"input={tmp_path / 'x.fits'}",
            f"output={tmp_path / 'c.csv'}",
            "allow_pixel_scale_mismatch=true",
        )
    )
    assert table["flag"][0] == 0


def test_single_fits_mostly_nan_is_an_error(tiny_ckpt, test_images, tmp_path):
    data = test_images[0].copy()
    data[:32] = np.nan
    cutout(tmp_path / "bad.fits", data)
    with pytest.raises(InputError, match=r"invalid_pixels: 50\.0% of the pixels \(> 1%\)"):
        predict_file(tiny_ckpt, tmp_path / "bad.fits", tmp_path / "c.csv")


def test_without_checks_any_nan_pixel_leaves_a_row_unmeasured(tiny_ckpt, test_images, tmp_path):
    data = test_images[0].copy()
    data[0, 0] = np.inf
    cutout(tmp_path / "bad.fits", data)
    with pytest.raises(InputError, match=r"bad\.fits.*1 NaN or infinite pixels"):
        predict_file(tiny_ckpt, tmp_path / "bad.fits", tmp_path / "c.csv", "quality=none")


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: p.write_bytes(b""), r"empty\.fits is not a readable FITS file"),
        (lambda p: fits.PrimaryHDU().writeto(p), r"empty\.fits holds no image data"),
    ],
)
def test_empty_fits_is_an_error(tiny_ckpt, tmp_path, make, match):
    make(tmp_path / "empty.fits")
    with pytest.raises(InputError, match=match):
        run_predict(
            predict_config(
                f"ckpt={tiny_ckpt}",
                f"input={tmp_path / 'empty.fits'}",
                f"output={tmp_path / 'c.csv'}",
            )
        )


def test_not_a_checkpoint(tmp_path, tiny_data):
    (tmp_path / "model.pt").write_bytes(b"\x00\x01")
    with pytest.raises(CheckpointError, match=r"model\.pt is not a readable PyTorch checkpoint"):
        run_predict(
            predict_config(
                f"ckpt={tmp_path / 'model.pt'}",
                f"input={tiny_data / 'test.h5'}",
                f"output={tmp_path / 'c.csv'}",
            )
        )


def test_scaled_int16_fits_is_read_as_its_float_values(tiny_ckpt, test_images, tmp_path):
    # BSCALE/BZERO images cannot be memory-mapped by astropy; they are read in memory instead
    scaled = fits.PrimaryHDU(test_images[0].astype(np.float32), fits.Header({"PIXSCALE": 0.06}))
    scaled.scale("int16", bscale=float(np.abs(test_images[0]).max()) / 30000, bzero=0.0)
    scaled.writeto(tmp_path / "int16.fits")
    cutout(tmp_path / "float.fits", fits.getdata(tmp_path / "int16.fits"))

    def run(name):
        return predict_file(tiny_ckpt, tmp_path / name, tmp_path / "c.csv")

    assert run("int16.fits")["re"][0] == pytest.approx(run("float.fits")["re"][0])


def test_tile_compressed_fits_is_read(tiny_ckpt, test_images, tmp_path):
    header = fits.Header({"PIXSCALE": 0.06})
    hdu = fits.CompImageHDU(test_images[0], header=header, compression_type="GZIP_2")
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(tmp_path / "c.fits.fz")
    cutout(tmp_path / "plain.fits", test_images[0])

    def run(name):
        return predict_file(tiny_ckpt, tmp_path / name, tmp_path / "c.csv")

    fz = run("c.fits.fz")
    # compression quantises float pixels (to a fraction of the noise): close, not equal
    assert fz["flag"][0] == 0 and fz["re"][0] == pytest.approx(run("plain.fits")["re"][0], rel=1e-4)


def test_fits_without_a_pixel_scale_is_never_assumed(tiny_ckpt, test_images, tmp_path):
    cutout(tmp_path / "bare.fits", test_images[0], scale=None)
    with pytest.raises(InputError, match=r"bare\.fits: no pixel scale .*pass pixel_scale="):
        predict_file(tiny_ckpt, tmp_path / "bare.fits", tmp_path / "c.csv")
    given = predict_file(tiny_ckpt, tmp_path / "bare.fits", tmp_path / "c.csv", "pixel_scale=0.06")
    assert given["flag"][0] == 0
    folder = tmp_path / "folder"
    folder.mkdir()
    cutout(folder / "bare.fits", test_images[0], scale=None)
    cutout(folder / "good.fits", test_images[1])
    table = predict_file(tiny_ckpt, folder, tmp_path / "c.csv")
    assert table["flag"][0] == FLAG_PIXEL_SCALE and "no pixel scale" in table["problem"][0]


def test_a_run_that_measures_no_row_fails_with_the_reason(tiny_ckpt, test_images, tmp_path):
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in ("a", "b"):
        cutout(folder / f"{name}.fits", test_images[0], scale=None)
    with pytest.raises(UserError, match=r"no row of input=.*folder could be measured \(pixel_scale "
                       r"on 2 of 2 rows; first: .*a\.fits: no pixel scale"):  # fmt: skip
        predict_file(tiny_ckpt, folder, tmp_path / "c.csv")
    assert not (tmp_path / "c.csv").exists()


def test_a_pixel_scale_that_disagrees_with_the_header_is_one_line(tiny_ckpt, test_images, tmp_path):
    cutout(tmp_path / "a.fits", test_images[0], scale=0.06)
    with pytest.raises(InputError, match=r"pixel_scale=0.2 disagrees with the header of .*a\.fits "
                       r"\(0.06 arcsec/pixel\), which wins"):  # fmt: skip
        predict_file(tiny_ckpt, tmp_path / "a.fits", tmp_path / "c.csv", "pixel_scale=0.2")


def test_fits_catalogue_keeps_full_metadata_keys(tiny_ckpt, tiny_data, tmp_path):
    run_predict(
        predict_config(
            f"ckpt={tiny_ckpt}", f"input={tiny_data / 'val.h5'}", f"output={tmp_path / 'c.fits'}"
        )
    )
    meta = Table.read(tmp_path / "c.fits").meta
    assert meta["checkpoints"] == str(tiny_ckpt)
    assert meta["pixel_scale_arcsec"] == pytest.approx(0.06)


def test_unknown_output_format(tiny_ckpt, tiny_data, tmp_path):
    with pytest.raises(ValueError, match=r"cat\.xlsx: unknown table format"):
        run_predict(
            predict_config(
                f"ckpt={tiny_ckpt}",
                f"input={tiny_data / 'test.h5'}",
                f"output={tmp_path / 'cat.xlsx'}",
            )
        )


def test_pixel_scale_from_wcs():
    header = fits.Header(
        {
            "NAXIS": 2,
            "CTYPE1": "RA---TAN",
            "CTYPE2": "DEC--TAN",
            "CD1_1": -0.06 / 3600,
            "CD1_2": 0.0,
            "CD2_1": 0.0,
            "CD2_2": 0.06 / 3600,
            "CUNIT1": "deg",
            "CUNIT2": "deg",
        }
    )
    assert fits_pixel_scale(header) == pytest.approx(0.06)
    assert fits_pixel_scale(fits.Header({"SECPIX": 0.1})) == pytest.approx(0.1)
    assert fits_pixel_scale(fits.Header()) is None


def test_command_line(tiny_ckpt, tiny_data, tmp_path):
    result = run_module(
        "fitnet.predict",
        f"ckpt={tiny_ckpt}",
        f"input={tiny_data / 'val.h5'}",
        "output=cat.fits",
        "device=cpu",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert len(Table.read(tmp_path / "cat.fits")) == 4


def test_bf16_forward_pass_stays_close(tiny_ckpt, tiny_data, tmp_path):
    base = run_predict(
        predict_config(
            f"ckpt={tiny_ckpt}", f"input={tiny_data / 'test.h5'}", f"output={tmp_path / 'a.csv'}"
        )
    )
    fast = run_predict(
        predict_config(
            f"ckpt={tiny_ckpt}",
            f"input={tiny_data / 'test.h5'}",
            f"output={tmp_path / 'b.csv'}",
            "amp=true",
        )
    )
    assert np.allclose(fast["mag"], base["mag"], atol=0.05)
    assert np.allclose(fast["re"], base["re"], rtol=0.05)


def test_hdf5_pixel_scale_under_another_name_is_checked(tiny_ckpt, tiny_data, tmp_path):
    # Pixel_Scale (arcsec / pixel): not this project's attribute name
    path = other_simulators_copy(tiny_data / "test.h5", tmp_path / "other.h5", Pixel_Scale=0.1)
    cfg = predict_config(f"ckpt={tiny_ckpt}", f"input={path}", f"output={tmp_path / 'c.csv'}")
    with pytest.raises(
        InputError, match=r"other\.h5: pixel scale 0\.1 arcsec/pixel differs from the model's 0\.06"
    ):
        run_predict(cfg)
    same = other_simulators_copy(tiny_data / "test.h5", tmp_path / "same.h5", Pixel_Scale=0.06)
    cfg = predict_config(f"ckpt={tiny_ckpt}", f"input={same}", f"output={tmp_path / 'c.csv'}")
    assert list(run_predict(cfg)["flag"]) == [0, 0, 0, 0]


def test_hdf5_pixel_scale_attribute_names():
    assert hdf5_pixel_scale({"pixel_scale_arcsec": 0.06, "pixel_scale": 0.1}) == 0.06
    assert hdf5_pixel_scale({"PIXSCALE": np.float32(0.03)}) == pytest.approx(0.03)
    assert hdf5_pixel_scale({"pixel_scale": "unknown", "scale": 0.2}) == 0.2
    assert hdf5_pixel_scale({"zeropoint": 25.0}) is None


def test_a_mask_marks_pixels_for_a_file_and_a_folder(tiny_ckpt, test_images, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "masks").mkdir()
    cutout(tmp_path / "in" / "a.fits", test_images[0])
    cutout(tmp_path / "in" / "b.fits", test_images[1])
    few, many = np.zeros((64, 64), np.uint8), np.zeros((64, 64), np.uint8)
    few[0, :10] = 1  # 10 pixels
    many[:20] = 1  # 31%: the user's decision, measured all the same
    fits.PrimaryHDU(few).writeto(tmp_path / "masks" / "a.fits")
    fits.PrimaryHDU(many).writeto(tmp_path / "masks" / "b.fits")
    folder = run_predict(
        predict_config(
            f"ckpt={tiny_ckpt}", f"input={tmp_path / 'in'}", f"mask={tmp_path / 'masks'}",
            f"output={tmp_path / 'c.csv'}",
        )
    )  # fmt: skip
    assert folder["mask_fraction"][0] == pytest.approx(10 / 64**2)
    assert list(folder["invalid_fraction"]) == [0, 0]
    assert not folder["flag"][1] & BITS["invalid_pixels"] and np.isfinite(folder["re"][1])
    one = run_predict(
        predict_config(
            f"ckpt={tiny_ckpt}", f"input={tmp_path / 'in' / 'a.fits'}",
            f"mask={tmp_path / 'masks' / 'a.fits'}", f"output={tmp_path / 'c.csv'}",
        )
    )  # fmt: skip
    assert one["mask_fraction"][0] == folder["mask_fraction"][0]
    with pytest.raises(
        InputError, match=r"mask .*b\.fits has shape \(64, 64\); the image has \(80, 80\)"
    ):
        cutout(tmp_path / "big.fits", np.pad(test_images[0], 8))
        run_predict(
            predict_config(
                f"ckpt={tiny_ckpt}", f"input={tmp_path / 'big.fits'}",
                f"mask={tmp_path / 'masks' / 'b.fits'}", f"output={tmp_path / 'c.csv'}",
            )
        )  # fmt: skip


def test_the_residual_check_flags_a_poor_model_and_turns_off(tiny_ckpt, tiny_data, tmp_path):
    path, out = tiny_data / "test.h5", tmp_path / "c.csv"
    # the tiny checkpoint's predictions are far from its galaxies: their residuals show it
    on = predict_file(tiny_ckpt, path, out, "quality.checks.bad_fit=true")
    assert np.all(np.isfinite(on["chi2"])) and np.any(on["flag"] & BITS["bad_fit"])
    off = predict_file(tiny_ckpt, path, out, "quality.checks.bad_fit=false")
    assert np.all(np.isnan(off["chi2"])) and not np.any(off["flag"] & BITS["bad_fit"])
