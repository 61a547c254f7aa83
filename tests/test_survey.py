"""Survey data (fitnet/survey.py): a simulated mosaic with a WCS, its catalogue and weight map."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from conftest import compose_config

from fitnet.flags import BITS
from fitnet.inputs import InputError
from fitnet.predict import run as run_predict
from simulate.render import StampRenderer

SIZE = 600  # pixel, side of the mosaic
RMS = 0.014529663145135579  # e-/s per pixel, the shipped model's noise rms
#: (x, y) pixel, mag, n, re (arcsec), q: three isolated galaxies, one 20 px from the edge
GALAXIES = [((150.0, 160.0), 20.0, 1.5, 0.4, 0.7), ((420.0, 300.0), 21.0, 3.0, 0.3, 0.5),
            ((300.0, 580.0), 20.5, 1.0, 0.5, 0.8)]  # fmt: skip


def sky_wcs() -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [150.0, 2.0]
    wcs.wcs.crpix = [SIZE / 2, SIZE / 2]
    wcs.wcs.cdelt = [-0.06 / 3600, 0.06 / 3600]  # 0.06 arcsec / pixel
    return wcs


@pytest.fixture(scope="module")
def mosaic(tmp_path_factory):
    """A noiseless mosaic of GALAXIES at half the model's noise, its weight map, and a
    catalogue of their RA/Dec with one position off the mosaic."""
    folder = tmp_path_factory.mktemp("mosaic")
    cfg = compose_config("simulate")
    renderer = StampRenderer(cfg.instrument, cfg.render)
    image = np.zeros((SIZE, SIZE))
    half = renderer.stamp_size // 2
    for (x, y), mag, n, re, q in GALAXIES:
        stamp = renderer.render(n, re, q, 30.0, mag, 0.0, 0.0, renderer.stamp_size)
        xi, yi = int(x), int(y)
        window = image[max(yi - half, 0) : yi + half, max(xi - half, 0) : xi + half]
        window += stamp[half - (yi - max(yi - half, 0)) :, half - (xi - max(xi - half, 0)) :][
            : window.shape[0], : window.shape[1]
        ]
    image += np.random.default_rng(1).normal(0, 0.5 * RMS, image.shape)  # twice as deep
    header = sky_wcs().to_header()
    fits.PrimaryHDU(image.astype(np.float32), header).writeto(folder / "mosaic.fits")
    weight = np.full(image.shape, 1 / (0.5 * RMS) ** 2, dtype=np.float32)
    fits.PrimaryHDU(weight, header).writeto(folder / "ivar.fits")
    positions = [g[0] for g in GALAXIES] + [(-50.0, 100.0)]
    sky = sky_wcs().pixel_to_world([p[0] for p in positions], [p[1] for p in positions])
    sources = Table({"id": [11, 12, 13, 14], "ra": sky.ra.deg, "dec": sky.dec.deg})
    sources.write(folder / "sources.fits")
    return folder


def predict(folder, *overrides):
    cfg = compose_config(
        "predict",
        ["device=cpu", "progress=false", f"input={folder / 'mosaic.fits'}",
         f"catalog={folder / 'sources.fits'}", f"output={folder / 'out.fits'}", *overrides],
    )  # fmt: skip
    return run_predict(cfg)


def test_every_catalogue_row_is_measured_in_order_with_its_columns(mosaic):
    table = predict(mosaic, f"weight={mosaic / 'ivar.fits'}")
    assert list(table["id"]) == [11, 12, 13, 14]
    assert np.allclose(table["x_image"][:3], [g[0][0] for g in GALAXIES], atol=1e-6)
    assert str(table["x_image"].unit) == "pix" and str(table["re"].unit) == "arcsec"
    for k, (_, mag, _, re, _) in enumerate(GALAXIES[:2]):
        assert table["flag"][k] == 0, table["problem"][k]
        assert abs(table["mag"][k] - mag) < 0.1 and abs(table["re"][k] / re - 1) < 0.15
    written = Table.read(mosaic / "out.fits")
    assert written.colnames == table.colnames


def test_the_weight_map_brings_a_deeper_mosaic_to_the_model_noise(mosaic):
    with_weight = predict(mosaic, f"weight={mosaic / 'ivar.fits'}")
    assert with_weight["noise_ratio"][0] == pytest.approx(1.0, abs=0.1)
    without = predict(mosaic)  # half the model's noise: flagged
    assert without["flag"][0] & BITS["noise"]


def test_positions_off_the_mosaic_and_cutouts_over_its_edge_are_flagged(mosaic):
    table = predict(mosaic, f"weight={mosaic / 'ivar.fits'}")
    assert table["flag"][3] & BITS["off_image"] and np.isnan(table["mag"][3])
    assert table["flag"][2] & BITS["off_image"] and np.isfinite(table["mag"][2])


def test_pixel_positions_work_without_a_wcs(mosaic, tmp_path):
    sources = Table({"x": [150.0], "y": [160.0]})
    sources.write(tmp_path / "pix.csv")
    table = predict(mosaic, f"catalog={tmp_path / 'pix.csv'}", f"weight={mosaic / 'ivar.fits'}")
    assert len(table) == 1 and table["flag"][0] == 0


def test_a_catalogue_without_positions_is_refused(mosaic, tmp_path):
    Table({"id": [1], "alpha": [150.0]}).write(tmp_path / "bad.csv")
    with pytest.raises(InputError, match=r"no position columns: need ra/dec .* or x/y"):
        predict(mosaic, f"catalog={tmp_path / 'bad.csv'}")


def test_an_empty_catalogue_is_refused(mosaic, tmp_path):
    Table({"ra": np.array([], float), "dec": np.array([], float)}).write(tmp_path / "empty.csv")
    with pytest.raises(InputError, match=r"empty\.csv has no rows"):
        predict(mosaic, f"catalog={tmp_path / 'empty.csv'}")


def test_a_weight_map_of_another_shape_is_refused(mosaic, tmp_path):
    fits.PrimaryHDU(np.ones((10, 10), np.float32)).writeto(tmp_path / "small.fits")
    with pytest.raises(InputError, match=r"weight=.*small\.fits has shape \(10, 10\)"):
        predict(mosaic, f"weight={tmp_path / 'small.fits'}")


def test_a_weight_map_of_another_wcs_is_refused(mosaic, tmp_path):
    wcs = sky_wcs()
    wcs.wcs.crval = [150.1, 2.0]  # the same shape, 6 arcmin away
    weight = fits.getdata(mosaic / "ivar.fits")
    fits.PrimaryHDU(weight, wcs.to_header()).writeto(tmp_path / "shifted.fits")
    with pytest.raises(InputError, match=r"weight=.*shifted\.fits has another WCS than the mosaic"):
        predict(mosaic, f"weight={tmp_path / 'shifted.fits'}")


def test_ra_dec_without_a_wcs_is_refused(mosaic, tmp_path):
    data = fits.getdata(mosaic / "mosaic.fits")
    fits.PrimaryHDU(data).writeto(tmp_path / "nowcs.fits")
    with pytest.raises(InputError, match=r"nowcs\.fits has no celestial WCS"):
        predict(mosaic, f"input={tmp_path / 'nowcs.fits'}", "pixel_scale=0.06")


def disc(shape, centre, radius) -> np.ndarray:
    ys, xs = np.indices(shape)
    return (xs - centre[0]) ** 2 + (ys - centre[1]) ** 2 <= radius**2


@pytest.fixture(scope="module")
def neighbour(mosaic, tmp_path_factory):
    """The mosaic with a bright compact neighbour 30 px right of the first galaxy, and two
    segmentation maps: one with the neighbour's segment apart, one where it touches."""
    folder = tmp_path_factory.mktemp("neighbour")
    data, header = fits.getdata(mosaic / "mosaic.fits", header=True)
    ys, xs = np.indices(data.shape)
    blob = 40 * RMS * np.exp(-((xs - 180.0) ** 2 + (ys - 160.0) ** 2) / (2 * 3.0**2))
    fits.PrimaryHDU((data + blob).astype(np.float32), header).writeto(folder / "mosaic.fits")
    for name, own_radius in (("apart", 12), ("touching", 22)):
        seg = np.zeros(data.shape, dtype=np.int32)
        seg[disc(data.shape, (150, 160), own_radius)] = 1
        seg[disc(data.shape, (180, 160), 8)] = 2
        fits.PrimaryHDU(seg, header).writeto(folder / f"seg_{name}.fits")
    Table({"x": [150.0], "y": [160.0], "number": [1]}).write(folder / "sources.csv")
    (folder / "ivar.fits").write_bytes((mosaic / "ivar.fits").read_bytes())
    return folder


def predict_neighbour(folder, *overrides):
    return predict(
        folder, f"catalog={folder / 'sources.csv'}", f"weight={folder / 'ivar.fits'}",
        "quality.checks.neighbours=true", *overrides,
    )  # fmt: skip


def test_a_segmentation_map_replaces_the_neighbours_pixels(neighbour):
    # with the checks' own neighbour search off, only the map can find the neighbour
    off = "quality.checks.neighbours=false"
    table = predict_neighbour(neighbour, f"segmap={neighbour / 'seg_apart.fits'}", off)
    assert table["n_neighbours"][0] == 1 and table["masked_fraction"][0] > 0
    assert abs(table["mag"][0] - GALAXIES[0][1]) < 0.1
    without = predict_neighbour(neighbour, off)
    assert not without["masked_fraction"][0] > 0


def test_a_bright_segment_touching_the_target_is_flagged(neighbour):
    table = predict_neighbour(
        neighbour, f"segmap={neighbour / 'seg_touching.fits'}", "columns.id=number"
    )
    assert table["flag"][0] & BITS["neighbours"]
    assert "segmap" in table["problem"][0]


def test_a_segmentation_map_of_another_shape_is_refused(neighbour, tmp_path):
    fits.PrimaryHDU(np.zeros((10, 10), np.int32)).writeto(tmp_path / "seg.fits")
    with pytest.raises(InputError, match=r"segmap=.*seg\.fits has shape \(10, 10\)"):
        predict_neighbour(neighbour, f"segmap={tmp_path / 'seg.fits'}")


@pytest.fixture(scope="module")
def tiles(mosaic, tmp_path_factory):
    """The mosaic cut into a left and a right tile (columns 0-339 and 260-599) with their WCS."""
    folder = tmp_path_factory.mktemp("tiles")
    data = fits.getdata(mosaic / "mosaic.fits")
    weight = fits.getdata(mosaic / "ivar.fits")
    for name, start, stop in (("a_left", 0, 340), ("b_right", 260, SIZE)):
        wcs = sky_wcs()
        wcs.wcs.crpix = [SIZE / 2 - start, SIZE / 2]
        header = wcs.to_header()
        fits.PrimaryHDU(data[:, start:stop], header).writeto(folder / f"{name}.fits")
        fits.PrimaryHDU(weight[:, start:stop], header).writeto(folder / f"{name}.ivar")
    return folder


def test_each_row_is_measured_on_the_tile_it_lies_deepest_in(mosaic, tiles):
    table = predict(
        mosaic, f"input={tiles / '*.fits'}", f"weight={tiles / '*.ivar'}"
    )  # a glob of mosaics, and one of their weight maps in the same order
    # the third lies 19.5 px inside both (the mosaic's own edge): a tie goes to the first
    assert list(table["mosaic"]) == ["a_left.fits", "b_right.fits", "a_left.fits", ""]
    assert table["flag"][0] == 0 and table["flag"][1] == 0
    assert table["flag"][3] & BITS["off_image"]
    single = predict(mosaic, f"weight={mosaic / 'ivar.fits'}")
    assert abs(table["mag"][1] - single["mag"][1]) < 0.05


def test_one_map_per_mosaic_is_required(mosaic, tiles):
    with pytest.raises(InputError, match=r"weight= names 1 file\(s\) for 2 mosaic\(s\)"):
        predict(mosaic, f"input={tiles / '*.fits'}", f"weight={mosaic / 'ivar.fits'}")
