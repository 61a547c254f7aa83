"""A user's mask is the user's decision, and a cutout too tight to hold sky is measured and
flagged: galaxies rendered with GalSim at the shipped model's instrument, measured by it."""

from __future__ import annotations

import numpy as np
import pytest

import fitnet
from fitnet.flags import BITS
from sersic_runtime.configs import load_group
from simulate.examples import Instrument, draw

GALAXY = {"mag": 20.0, "n": 2.0, "re": 0.4, "q": 0.7, "pa": 30.0}  # AB mag, -, arcsec, -, deg


@pytest.fixture(scope="module")
def shipped():
    return fitnet.load(device="cpu")


def galaxy_image(labels=GALAXY, size=128, seed=1):
    instrument = Instrument(load_group("instrument", "candels_h"))
    return instrument.noisy(draw(instrument, labels, size), np.random.default_rng(seed))


def discs(shape, centres, radius: float) -> np.ndarray:
    ys, xs = np.indices(shape)
    mask = np.zeros(shape, dtype=bool)
    for x, y in centres:
        mask |= (xs - x) ** 2 + (ys - y) ** 2 <= radius**2
    return mask


def test_a_star_mask_beside_the_galaxy_leaves_the_row_clean(shipped):
    image = galaxy_image()
    stars = [(20, 20), (105, 30), (30, 100), (110, 110), (64, 15), (15, 64)]
    mask = discs(image.shape, stars, 5.5)  # about 3.5% of the pixels, as IC 3478's star mask
    row = shipped.predict(image, pixel_scale=0.06, mask=mask)[0]
    assert row["flag"] == 0, row["problem"]
    assert row["mask_fraction"] == pytest.approx(mask.mean()) and 0.03 < mask.mean() < 0.05
    assert row["masked_light"] < 0.01
    assert abs(row["mag"] - GALAXY["mag"]) < 0.1


def test_a_mask_over_the_galaxy_is_flagged(shipped):
    image = galaxy_image()
    mask = discs(image.shape, [(63.5, 63.5)], 5.0)
    row = shipped.predict(image, pixel_scale=0.06, mask=mask)[0]
    assert row["flag"] & BITS["masked_source"], row["problem"]
    assert "the mask hides" in row["problem"] and row["masked_light"] > 0.2


def test_nan_pixels_are_still_invalid(shipped):
    image = galaxy_image()
    image[:10] = np.nan  # 8% of the pixels: no data
    row = shipped.predict(image, pixel_scale=0.06)[0]
    assert row["flag"] & BITS["invalid_pixels"] and np.isnan(row["mag"])


def test_a_tight_cutout_of_a_bright_galaxy_is_measured_and_says_it_holds_no_sky(shipped):
    bright = {"mag": 18.0, "n": 4.5, "re": 1.9, "q": 0.3, "pa": 60.0}
    image = galaxy_image(bright, size=128)[48:81, 48:81]  # the central 33 x 33 pixels
    row = shipped.predict(image, pixel_scale=0.06)[0]
    assert row["flag"] & BITS["background"] and "no sky" in row["problem"]
    assert np.isfinite(row["mag"]) and np.isnan(row["background"])


def test_a_sky_left_in_is_still_refused(shipped):
    image = galaxy_image() + 3 * 0.0145  # +3 noise rms of sky everywhere
    with pytest.raises(ValueError, match=r"every image has a background of \+2.9"):
        shipped.predict(image, pixel_scale=0.06)
