"""python -m simulate.examples: the FITS files the README's tour runs on."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from conftest import run_module

from fitnet.inputs import fits_pixel_scale


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    folder = tmp_path_factory.mktemp("examples")
    result = run_module("simulate.examples", "out_dir=ex", cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder / "ex"


def test_cutouts_state_their_pixel_scale_through_a_wcs(examples):
    files = sorted((examples / "cutouts").glob("*.fits"))
    assert len(files) == 12
    header = fits.getheader(files[0])
    assert WCS(header).has_celestial and fits_pixel_scale(header) == pytest.approx(0.06)
    assert len(Table.read(examples / "truth_cutouts.ecsv")) == 12


def test_ground_cutouts_carry_their_zero_point_and_a_psf_image(examples):
    header = fits.getheader(examples / "ground" / "gal_00.fits")
    assert header["BUNIT"] == "adu" and "MAGZERO" in header
    assert fits_pixel_scale(header) == pytest.approx(0.2)
    psf = fits.getdata(examples / "ground_psf.fits")
    assert psf.shape == (41, 41) and psf.sum() == pytest.approx(1.0, rel=1e-5)


def test_the_catalogue_places_each_galaxy_on_the_mosaic(examples):
    sources = Table.read(examples / "sources.fits")
    header = fits.getheader(examples / "mosaic.fits")
    image = fits.getdata(examples / "mosaic.fits")
    x, y = WCS(header).celestial.world_to_pixel_values(sources["ra"], sources["dec"])
    rms = 1 / np.sqrt(fits.getdata(examples / "weight.fits"))
    peaks = image[np.round(y).astype(int), np.round(x).astype(int)] / rms[0, 0]
    assert (peaks > 3).all()  # a galaxy at every catalogue position
    assert {"mag_true", "re_true", "n_true", "q_true", "pa_true"} <= set(sources.colnames)


def test_the_weight_map_says_the_right_half_is_deeper(examples):
    weight = fits.getdata(examples / "weight.fits")
    image = fits.getdata(examples / "mosaic.fits")
    left, right = image[:40, :40], image[:40, -40:]  # corners without galaxies, mostly
    assert weight[0, -1] > 1.5 * weight[0, 0]  # twice the exposure: sky-limited, about 2x
    assert np.std(right) == pytest.approx(weight[0, -1] ** -0.5, rel=0.1)
    assert np.std(left) == pytest.approx(weight[0, 0] ** -0.5, rel=0.1)


def test_tiles_have_one_catalogue_each(examples):
    tiles = sorted((examples / "tiles").glob("*.fits"))
    catalogues = sorted((examples / "tile_sources").glob("*.fits"))
    assert [p.name for p in tiles] == [p.name for p in catalogues] and len(tiles) == 2


def test_a_folder_with_files_is_never_overwritten_unasked(tmp_path):
    (tmp_path / "ex").mkdir()
    (tmp_path / "ex" / "mine.txt").write_text("keep")
    result = run_module("simulate.examples", "out_dir=ex", cwd=tmp_path)
    assert result.returncode == 2 and "overwrite=true" in result.stderr
    assert (tmp_path / "ex" / "mine.txt").read_text() == "keep"
