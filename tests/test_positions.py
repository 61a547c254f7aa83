"""Every pixel-valued column is in the input image's pixels (0-based), whatever the binning:
cutouts the generalist bins 1, 2, 3 and 4 times (its stamp is 128 px), and mosaics (the
mosaic's pixels)."""

from __future__ import annotations

import galsim
import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from fitnet.api import load
from tests.conftest import run_module

SCALE = 0.1  # arcsec / pixel of the cutouts
PSF = galsim.Moffat(beta=3.0, fwhm=0.35)
OFFSET = (4.3, -2.6)  # pixel, the galaxy's (x, y) from the cutout's centre


def cutout(size: int, rng) -> np.ndarray:
    galaxy = galsim.Sersic(n=1.5, half_light_radius=0.5, flux=3000.0).shear(
        q=0.7, beta=0.4 * galsim.radians
    )
    image = galsim.Convolve(galaxy, PSF).drawImage(nx=size, ny=size, scale=SCALE, offset=OFFSET)
    return image.array + rng.normal(0.0, 0.5, (size, size))


@pytest.fixture(scope="module")
def psf_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("psf") / "psf.fits"
    fits.writeto(path, PSF.drawImage(nx=31, ny=31, scale=SCALE).array.astype(np.float32))
    return path


@pytest.mark.parametrize(("size", "factor"), [(100, 1), (200, 2), (301, 3), (500, 4)])
def test_binned_rows_report_positions_in_the_cutouts_pixels(psf_file, size, factor):
    rng = np.random.default_rng(size)
    table = load("generalist").predict(
        [cutout(size, rng)], pixel_scale=SCALE, psf=str(psf_file), zero_point=25.0, fit="none"
    )
    assert table["bin_factor"][0] == factor
    # GalSim draws about the image's true centre, (size - 1) / 2 in 0-based pixels
    true_x, true_y = (size - 1) / 2 + OFFSET[0], (size - 1) / 2 + OFFSET[1]
    for column, truth in (("x_centroid", true_x), ("y_centroid", true_y), ("x", true_x),
                          ("y", true_y)):  # fmt: skip
        assert table[column][0] == pytest.approx(truth, abs=0.3 * factor + 0.2), column
    assert table["re_px"][0] * SCALE == pytest.approx(table["re"][0])


def test_binned_rows_report_shifts_in_the_cutouts_pixels(psf_file):
    rng = np.random.default_rng(7)
    image = np.roll(cutout(301, rng), (27, -36), axis=(0, 1))  # moved to (x - 36, y + 27)
    table = load("generalist").predict(
        [image], pixel_scale=SCALE, psf=str(psf_file), zero_point=25.0, fit="none"
    )
    assert table["bin_factor"][0] == 3
    # the source's whole-pixel offset, measured in the 3x3-binned stamp and reported in the
    # cutout's pixels: a multiple of 3
    assert table["shift_x"][0] == pytest.approx(OFFSET[0] - 36, abs=3)
    assert table["shift_y"][0] == pytest.approx(OFFSET[1] + 27, abs=3)


def test_mosaic_rows_report_positions_in_the_mosaics_pixels(tmp_path, psf_file):
    rng = np.random.default_rng(3)
    mosaic = rng.normal(0.0, 0.5, (400, 500))
    truth = [(120.3, 140.6), (350.8, 260.2)]  # (x, y), 0-based mosaic pixels
    galaxy = galsim.Convolve(galsim.Sersic(n=1.0, half_light_radius=0.6, flux=4000.0), PSF)
    for x, y in truth:
        stamp = galaxy.drawImage(nx=81, ny=81, scale=SCALE, offset=(x % 1, y % 1)).array
        xi, yi = int(x), int(y)
        mosaic[yi - 40 : yi + 41, xi - 40 : xi + 41] += stamp
    fits.writeto(tmp_path / "mosaic.fits", mosaic.astype(np.float32),
                 fits.Header({"PIXSCALE": SCALE}))  # fmt: skip
    Table({"x": [x for x, _ in truth], "y": [y for _, y in truth]}).write(tmp_path / "cat.csv")
    out = tmp_path / "out.ecsv"
    result = run_module("fitnet.predict", "ckpt=generalist", f"input={tmp_path / 'mosaic.fits'}",
                        f"catalog={tmp_path / 'cat.csv'}", f"psf={psf_file}", "zero_point=25",
                        f"output={out}", "progress=false", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    table = Table.read(out)
    for k, (x, y) in enumerate(truth):
        for column, value in (("x", x), ("y", y), ("x_centroid", x), ("y_centroid", y)):
            assert table[column][k] == pytest.approx(value, abs=0.5), (k, column)
