"""A PSF per row: a cube (one plane per row), a folder named as the inputs, a PSFEx model at
each row's position (flagged outside its range), a PIFF model without its extra refused."""

from __future__ import annotations

import builtins

import galsim
import numpy as np
import pytest
from astropy.io import fits

from fitnet.inputs import Cutout, InputError
from fitnet.psfs import Folder, Piff, psf_source
from simulate.psf import profile_fwhm

SCALE = 0.2  # arcsec / pixel of the data


def moffat_image(fwhm_arcsec: float, size: int = 31) -> np.ndarray:
    return galsim.Moffat(beta=3.0, fwhm=fwhm_arcsec).drawImage(nx=size, ny=size, scale=SCALE).array


def row(index: int = 0, source: str = "g.fits", origin=(0.0, 0.0), header=None) -> Cutout:
    return Cutout(source, np.zeros((64, 64)), pixel_scale=SCALE, index=index, origin=origin,
                  header=header)  # fmt: skip


def test_a_cube_gives_each_row_its_own_plane(tmp_path):
    fits.writeto(tmp_path / "cube.fits", np.stack([moffat_image(0.6), moffat_image(1.2)]))
    source = psf_source(tmp_path / "cube.fits", count=2)
    widths = [profile_fwhm(source.for_row(row(k))[0]) for k in (0, 1)]
    assert widths[0] == pytest.approx(0.6, rel=0.1) and widths[1] == pytest.approx(1.2, rel=0.1)


def test_a_cube_of_another_count_is_refused(tmp_path):
    fits.writeto(tmp_path / "cube.fits", np.stack([moffat_image(0.6)] * 3))
    with pytest.raises(InputError, match=r"holds 3 PSF images for 2 inputs"):
        psf_source(tmp_path / "cube.fits", count=2)


def test_a_folder_gives_each_input_the_psf_of_its_name(tmp_path):
    fits.writeto(tmp_path / "a.fits", moffat_image(0.8))
    folder = psf_source(tmp_path)
    assert isinstance(folder, Folder)
    assert profile_fwhm(folder.for_row(row(source="a.fits"))[0]) == pytest.approx(0.8, rel=0.1)
    psf, problem = folder.for_row(row(source="b.fits"))
    assert psf is None and "has no b.fits" in problem


def psfex_file(path, fwhm_px: float = 3.0) -> None:
    """A PSFEx model of degree 0 (one PSF), fitted over x, y of 1-1000 pixels."""
    image = galsim.Moffat(beta=3.0, fwhm=fwhm_px).drawImage(nx=25, ny=25, scale=1.0).array
    column = fits.Column(name="PSF_MASK", format=f"{image.size}E", dim="(25, 25, 1)",
                         array=image[None, None].astype(np.float32))  # fmt: skip
    hdu = fits.BinTableHDU.from_columns([column])
    hdu.header.update({"POLNAXIS": 2, "POLGRP1": 1, "POLGRP2": 1, "POLNAME1": "X_IMAGE",
                       "POLNAME2": "Y_IMAGE", "POLZERO1": 500.5, "POLSCAL1": 999.0,
                       "POLZERO2": 500.5, "POLSCAL2": 999.0, "POLNGRP": 1, "POLDEG1": 0,
                       "PSFNAXIS": 3, "PSFAXIS1": 25, "PSFAXIS2": 25, "PSFAXIS3": 1,
                       "PSF_SAMP": 1.0})  # fmt: skip
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)


def test_a_psfex_model_is_evaluated_at_the_rows_position(tmp_path):
    psfex_file(tmp_path / "field.psf")
    source = psf_source(tmp_path / "field.psf")
    psf, problem = source.for_row(row(origin=(400.0, 300.0)))
    assert problem == ""
    # an effective PSF of 3 px FWHM, the pixel taken out: a little narrower
    assert profile_fwhm(psf) / SCALE == pytest.approx(2.9, abs=0.3)


def test_a_psfex_model_outside_its_range_flags_the_row(tmp_path):
    psfex_file(tmp_path / "field.psf")
    psf, problem = psf_source(tmp_path / "field.psf").for_row(row(origin=(3000.0, 300.0)))
    assert psf is not None and problem.startswith("psf_range:") and "outside" in problem


def test_a_psfex_model_needs_the_rows_position(tmp_path):
    psfex_file(tmp_path / "field.psf")
    psf, problem = psf_source(tmp_path / "field.psf").for_row(row())
    assert psf is None and "LTV1/LTV2" in problem


def test_a_piff_model_without_the_extra_names_it(tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_piff(name, *args, **kwargs):
        if name == "piff":
            raise ImportError("no piff")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_piff)
    with pytest.raises(InputError, match=r"pip install 'sersic-fitnet\[piff\]'"):
        Piff(tmp_path / "model.piff")


def test_a_psf_that_does_not_exist_is_refused(tmp_path):
    with pytest.raises(InputError, match=r"psf=.*nothere.fits does not exist"):
        psf_source(tmp_path / "nothere.fits")
