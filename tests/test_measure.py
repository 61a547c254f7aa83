"""The one measurement flow (fitnet/measure.py): the fit's model is the simulator's, the fit
starts from the network and ends on the pixels, each label is the tighter of the two, and the
residual's chi-square tells one Sersic from two."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import compose_config

import fitnet
from fitnet.fit import (
    FitBatch,
    SersicFit,
    Spectrum,
    box_side,
    labels_from_params,
    params_from_labels,
)
from fitnet.flags import BITS
from fitnet.measure import combine
from sersic_runtime.configs import load_group
from simulate.examples import Instrument, draw
from simulate.render import StampRenderer, transfer_function

#: Galaxies of the prior: (n, re arcsec, q, pa deg, mag, dx, dy pixel)
GALAXIES = [
    (4.0, 0.5, 0.6, 30.0, 20.0, 0.3, -0.2),
    (0.5, 0.06, 0.9, 0.0, 22.0, 0.5, 0.5),
    (6.0, 0.06, 1.0, 0.0, 18.0, 0.0, 0.0),
    (1.0, 1.0, 0.2, 45.0, 19.0, 0.1, 0.4),
]


@pytest.fixture(scope="module")
def simulator():
    cfg = compose_config("simulate")
    return StampRenderer(cfg.instrument, cfg.render)


@pytest.fixture(scope="module")
def shipped():
    return fitnet.load(device="cpu")


@pytest.mark.parametrize("galaxy", GALAXIES)
def test_the_fits_model_is_the_simulators_rendering(simulator, galaxy):
    n, re, q, pa, mag, dx, dy = galaxy
    s, scale = simulator.stamp_size, simulator.pixel_scale
    truth = simulator.render(*galaxy, s)
    x, y = simulator.centre(dx, dy, s)
    flux = 10 ** (-0.4 * (mag - simulator.zero_point))
    params = params_from_labels([flux], [n], [re / scale], [q], [math.radians(pa)], [x], [y])
    transfer = np.fft.ifftshift(transfer_function(simulator.psf, scale, box_side(s)), axes=0)
    spectrum = Spectrum(torch.from_numpy(transfer)[None], s, 1, 1e-7)
    model, _ = SersicFit(load_group("fit", "auto")).render(params, spectrum)
    rms = 0.01453  # e-/s per pixel, the instrument's background
    assert np.sqrt(np.mean((model[0].numpy() - truth) ** 2)) < 0.01 * rms
    assert np.abs(model[0].numpy() - truth).max() < 2e-3 * truth.max()


def galaxy_image(labels, size=96, seed=1, instrument="candels_h"):
    inst = Instrument(load_group("instrument", instrument))
    return inst.noisy(draw(inst, labels, size), np.random.default_rng(seed))


def test_fit_all_ends_on_the_pixels(shipped):
    labels = {"mag": 19.5, "n": 2.5, "re": 0.5, "q": 0.6, "pa": 40.0}
    row = shipped.predict(galaxy_image(labels), pixel_scale=0.06, fit="all")[0]
    assert row["fit_iterations"] > 0 and row["flag"] == 0, row["problem"]
    assert row["fitted"]  # the labels where the pixels say more than the network
    assert row["mag"] == pytest.approx(labels["mag"], abs=3 * row["mag_err"] + 0.01)
    assert row["pa"] == pytest.approx(labels["pa"], abs=3.0)
    assert row["chi2"] == pytest.approx(1.0, abs=0.2)


def test_fit_none_keeps_the_network(shipped):
    row = shipped.predict(galaxy_image({"mag": 21.0, "n": 1.5, "re": 0.3, "q": 0.8, "pa": 10.0}),
                          pixel_scale=0.06, fit="none")[0]  # fmt: skip
    assert row["fit_iterations"] == 0 and row["fitted"] == ""
    assert np.isfinite(row["chi2"])  # the residual at the network's answer, for bad_fit


def test_a_bulge_and_a_disk_are_not_one_sersic(shipped):
    disk = {"mag": 19.0, "n": 1.0, "re": 0.8, "q": 0.5, "pa": 30.0}
    bulge = {"mag": 19.5, "n": 4.0, "re": 0.15, "q": 0.9, "pa": 30.0}
    inst = Instrument(load_group("instrument", "candels_h"))
    image = inst.noisy(draw(inst, disk, 128) + draw(inst, bulge, 128), np.random.default_rng(4))
    row = shipped.predict(image, pixel_scale=0.06, fit="all")[0]
    assert row["flag"] & BITS["bad_fit"] and row["chi2"] > 1.5


def one_iteration_table(predictor, image, psfs=None):
    """``image`` measured with a fit cut short after one iteration (it cannot converge)."""
    from fitnet import measure

    one = load_group("fit", "all")
    one.max_iterations = 1
    settings = measure.Settings(one, load_group("quality"), None, None, 32)
    return measure.measure_cutouts(measure.Measurer(predictor, settings), [image],
                                   pixel_scale=0.06, psfs=psfs)  # fmt: skip


def test_a_failed_fit_the_row_needed_is_flagged_and_keeps_the_network(tmp_path):
    # the generalist is far from the bound on a bright galaxy: the row needed its fit
    from astropy.io import fits

    from fitnet.psfs import psf_source

    inst = Instrument(load_group("instrument", "candels_h"))
    psf = inst.psf.drawImage(nx=41, ny=41, scale=0.06).array
    fits.writeto(tmp_path / "psf.fits", (psf / psf.sum()).astype(np.float32))
    image = galaxy_image({"mag": 19.0, "n": 3.0, "re": 0.6, "q": 0.5, "pa": 70.0})
    generalist = fitnet.load("generalist", device="cpu")
    table = one_iteration_table(generalist.predictor, image, psf_source(tmp_path / "psf.fits"))
    assert table["flag"][0] & BITS["fit_failed"] and table["fitted"][0] == ""
    assert "did not converge after 1 iterations" in table["problem"][0]


def test_a_failed_fit_where_the_network_is_at_the_bound_sets_no_flag(shipped):
    # the specialist on its own instrument is within 1.5x of the likelihood's bound
    image = galaxy_image({"mag": 22.5, "n": 3.0, "re": 0.3, "q": 0.5, "pa": 70.0})
    table = one_iteration_table(shipped.predictor, image)
    assert table["fit_iterations"][0] == 1 and table["fitted"][0] == ""
    assert not table["flag"][0] & BITS["fit_failed"], table["problem"][0]


def test_each_label_is_the_tighter_of_network_and_fit():
    network = {"flux": 10.0, "flux_err": 1.0, "n": 2.0, "n_err": 0.1, "re_px": 3.0,
               "re_px_err": 0.3, "q": 0.5, "q_err": 0.05, "pa": 0.1, "x": 1.0, "y": 2.0,
               "model": {}, "model_err": {}}  # fmt: skip
    fit = {"flux": 11.0, "flux_err": 0.1, "n": 2.5, "n_err": 0.5, "re_px": 3.3, "re_px_err": 0.1,
           "q": 0.55, "q_err": 0.2, "pa": 0.2, "pa_err": 0.01, "x": 1.1, "x_err": 0.01,
           "y": 2.1, "y_err": 0.01, "iterations": 5, "converged": True, "at_bound": False}  # fmt: skip
    row = combine(network, fit, ["mag", "n", "re", "q"])
    assert row["fitted"] == ["flux", "re_px"]
    assert (row["flux"], row["n"], row["re_px"], row["q"]) == (11.0, 2.0, 3.3, 0.5)
    assert (row["pa"], row["x"]) == (0.2, 1.1)


def test_the_fit_recovers_a_galaxy_through_an_undersampled_psf():
    # Euclid VIS: an Airy of 1.6 px FWHM; the model is drawn 3x finer and sampled
    inst = Instrument(load_group("instrument", "euclid_vis"))
    labels = {"mag": 20.0, "n": 1.5, "re": 0.3, "q": 0.7, "pa": 20.0}
    truth = draw(inst, labels, 48)
    flux = 10 ** (-0.4 * (labels["mag"] - inst.spec.zero_point))
    start = params_from_labels([flux * 1.1], [2.0], [3.3], [0.6], [0.5], [23.7], [23.3])
    transfer = np.fft.ifftshift(transfer_function(inst.psf, inst.scale, box_side(48), 3), axes=0)
    rms = inst.rms()
    data = torch.from_numpy(inst.noisy(truth, np.random.default_rng(2)).astype(np.float64))[None]
    spectrum = Spectrum(torch.from_numpy(transfer)[None], 48, 3, 1e-7)
    batch = FitBatch(data, torch.full_like(data, rms**-2), spectrum,
                     torch.tensor([inst.spec.exposure_time]), start)  # fmt: skip
    result = SersicFit(load_group("fit", "auto")).fit(batch)
    fitted = labels_from_params(result.params)
    assert result.converged.all()
    assert fitted["re_px"].item() == pytest.approx(3.0, rel=0.05)
    assert fitted["n"].item() == pytest.approx(1.5, rel=0.1)
    assert (result.chi2 / result.pixels).item() == pytest.approx(1.0, abs=0.1)


def test_drop_problem_removes_only_the_named_problem_and_its_bit():
    from fitnet.flags import BITS
    from fitnet.measure import drop_problem

    row = {"flag": BITS["psf_range"] | BITS["neighbours"],
           "problem": "neighbours: a companion; psf_range: FWHM outside the trained range"}  # fmt: skip
    drop_problem(row, "psf_range", "outside the trained")
    assert row["flag"] == BITS["neighbours"]
    assert row["problem"] == "neighbours: a companion"


def test_drop_problem_keeps_the_bit_while_another_problem_of_its_name_is_left():
    from fitnet.flags import BITS
    from fitnet.measure import drop_problem

    row = {"flag": BITS["psf_range"],
           "problem": "psf_range: FWHM outside the trained range; psf_range: PSFEx model at x"}  # fmt: skip
    drop_problem(row, "psf_range", "outside the trained")
    assert row["flag"] == BITS["psf_range"]
    assert row["problem"] == "psf_range: PSFEx model at x"
