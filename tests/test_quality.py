"""The checks of every image (fitnet/quality.py): invariants on synthetic galaxies."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from astropy.table import Table
from conftest import compose_config

from fitnet.flags import BITS, names
from fitnet.quality import Checker, out_of_range, uninformative, validate
from sersic_runtime.errors import UserError

RMS = 0.0145  # e-/s per pixel, the model's noise rms in these tests
SIZE = 64  # pixel, the model's stamp


def quality(*overrides):
    return compose_config("predict", ["input=x", "output=y", *overrides]).quality


@pytest.fixture
def checker():
    return Checker(quality(), SIZE, RMS)


def galaxy(shape=(SIZE, SIZE), centre=None, flux=50.0, sigma=3.0):
    """A round Gaussian galaxy (e-/s in total; sigma in pixel), noiseless."""
    y, x = np.indices(shape)
    cy, cx = centre if centre is not None else ((shape[0] - 1) / 2, (shape[1] - 1) / 2)
    profile = np.exp(-0.5 * ((y - cy) ** 2 + (x - cx) ** 2) / sigma**2)
    return flux * profile / profile.sum()


def noisy(image, seed=0):
    return (image + np.random.default_rng(seed).normal(0, RMS, image.shape)).astype(np.float32)


def run(checker, image, bad=None, seed=1):
    bad = np.zeros(image.shape, bool) if bad is None else bad
    return checker(image, bad, np.random.default_rng(seed))


def test_a_centred_galaxy_passes_unchanged(checker):
    image = noisy(galaxy())
    stamp, check = run(checker, image)
    assert check.flag == 0, check.details
    assert np.array_equal(stamp, image)
    assert check.columns["shift_x"] == 0 and check.columns["significance"] > 100
    assert check.columns["noise_ratio"] == pytest.approx(1.0, abs=0.1)


def test_pure_noise_has_no_source(checker):
    stamp, check = run(checker, noisy(np.zeros((SIZE, SIZE))))
    assert stamp is None and names(check.flag) == ["no_source"]


def test_zeros_have_no_noise_and_no_source(checker):
    stamp, check = run(checker, np.zeros((SIZE, SIZE), np.float32))
    assert stamp is None and names(check.flag) == ["no_source", "noise"]


@pytest.mark.parametrize(
    ("change", "bit"),
    [
        (lambda im: im + 0.5, "background"),  # the sky left in (e-/s per pixel)
        (lambda im: im * 3000.0, "noise"),  # electrons of a 3000 s exposure, not e-/s
        (lambda im: im + np.random.default_rng(5).normal(0, RMS, im.shape), "noise"),
    ],
)
def test_wrong_sky_or_units_are_flagged(checker, change, bit):
    _, check = run(checker, change(noisy(galaxy())).astype(np.float32))
    assert check.flag & BITS[bit], check.details


def test_an_off_centre_galaxy_in_a_larger_cutout_is_recentred(checker):
    image = noisy(galaxy((128, 128), centre=(63.5 + 7, 63.5 - 9)))
    stamp, check = run(checker, image)
    assert check.flag == 0, check.details
    assert (check.columns["shift_y"], check.columns["shift_x"]) == (7, -9)
    assert check.columns["x_centroid"] == pytest.approx(63.5 - 9, abs=0.5)
    peak = np.unravel_index(np.argmax(stamp), stamp.shape)
    assert abs(peak[0] - 31.5) <= 1 and abs(peak[1] - 31.5) <= 1


def test_a_galaxy_at_the_edge_is_off_centre(checker):
    _, check = run(checker, noisy(galaxy(centre=(31.5, 60))))
    assert check.flag & BITS["off_centre"], check.details


def test_a_separate_neighbour_is_masked(checker):
    image = noisy(galaxy() + galaxy(centre=(31.5, 55), flux=20.0, sigma=1.5))
    stamp, check = run(checker, image)
    assert check.columns["n_neighbours"] == 1 and check.columns["masked_fraction"] > 0
    assert stamp[31, 55] < 5 * RMS  # replaced by noise
    assert not check.flag & BITS["neighbours"]  # it does not touch the galaxy


def test_a_merged_brighter_companion_is_flagged(checker):
    image = noisy(galaxy(flux=20.0) + galaxy(centre=(31.5, 45.5), flux=60.0))
    _, check = run(checker, image)
    assert check.flag & BITS["neighbours"], check.details


def test_invalid_pixels_are_replaced_below_the_threshold(checker):
    image, bad = noisy(galaxy()), np.zeros((SIZE, SIZE), bool)
    bad[0, :20] = True
    image[bad] = np.nan
    stamp, check = run(checker, image, bad)
    assert np.isfinite(stamp).all() and check.flag == 0
    assert check.columns["invalid_fraction"] == pytest.approx(20 / SIZE**2)
    bad[:10] = True
    stamp, check = run(checker, image, bad)
    assert stamp is None and names(check.flag) == ["invalid_pixels"]


def test_a_field_is_not_a_cutout(checker):
    stamp, check = run(checker, noisy(np.zeros((1000, 1000))))
    assert stamp is None and names(check.flag) == ["not_a_cutout"]


def test_a_check_turned_off_sets_no_bit_and_measures_the_row():
    checker = Checker(quality("quality.checks.no_source=false"), SIZE, RMS)
    stamp, check = run(checker, noisy(np.zeros((SIZE, SIZE))))
    assert stamp is not None and check.flag == 0
    assert check.columns["significance"] < 3.5  # still measured


def test_neighbours_turned_off_are_left_in_the_stamp():
    checker = Checker(quality("quality.checks.neighbours=false"), SIZE, RMS)
    image = noisy(galaxy() + galaxy(centre=(31.5, 55), flux=20.0, sigma=1.5))
    stamp, check = run(checker, image)
    assert np.array_equal(stamp, image) and check.replaced is None


def test_the_target_footprint_and_the_replaced_pixels_are_kept(checker):
    image = noisy(galaxy() + galaxy(centre=(31.5, 55), flux=20.0, sigma=1.5))
    _, check = run(checker, image)
    assert check.footprint[31, 31] and not check.footprint[31, 55]
    assert check.replaced[31, 55] and not check.replaced[31, 31]


def test_a_sigma_as_wide_as_the_prior_is_uninformative():
    table = Table({"n": [2.0, 2.0], "n_err": [0.2, 2.0], "q": [0.5, 0.5], "q_err": [0.05, 0.05]})
    predictor = SimpleNamespace(
        labels=["n", "q"], prior={"n": [0.3, 6.0], "q": [0.1, 1.0]}, transforms={"n": "log"}
    )
    bad, details = uninformative(table, predictor, ratio=1.0)
    # n is fitted in log: a sigma of 2 at n = 2 is 1.0 in ln n; the prior's ln(6 / 0.3) / sqrt(12)
    assert list(bad) == [False, True] and details[1] == "n sigma 1.16 x the prior's"


def test_a_misspelt_check_is_refused():
    with pytest.raises(UserError, match=r"quality\.checks\.bad_fits is not a check"):
        Checker(quality("+quality.checks.bad_fits=false"), SIZE, RMS)


def test_out_of_range_margins_are_in_the_log_for_log_labels():
    table = Table({"re": [0.055, 0.05]})
    # 3% of ln(2 / 0.06) below ln 0.06 is re = 0.0539: 0.055 inside, 0.05 beyond
    bad, _ = out_of_range(table, ["re"], {"re": [0.06, 2.0]}, 0.03, {"re": "log"})
    assert list(bad) == [False, True]


def test_out_of_range_predictions():
    table = Table({"q": [0.5, -0.2, 1.3, 0.9], "n": [1.0, 2.0, 3.0, 9.0]})
    bad, details = out_of_range(table, ["q", "n"], {"n": [0.3, 6.0]}, margin=0.05)
    assert list(bad) == [False, True, True, True]
    assert details[1] == "q=-0.2" and details[3] == "n=9"


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("quality.min_significance=-1", r"quality\.min_significance=-1 is not allowed"),
        ("quality.noise_ratio=[1.2,0.8]", r"quality\.noise_ratio=\[1\.2, 0\.8\]"),
        ("quality.max_invalid_fraction=1.5", r"quality\.max_invalid_fraction=1\.5"),
    ],
)
def test_bad_thresholds_are_refused(override, match):
    with pytest.raises(UserError, match=match):
        validate(quality(override))
