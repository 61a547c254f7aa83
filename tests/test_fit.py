"""The batched Sersic fit: its model is GalSim's across the prior, its Jacobian is the model's
derivative, and it recovers galaxies with errors its covariance predicts."""

from __future__ import annotations

import math

import galsim
import numpy as np
import pytest
import torch

from fitnet.fit import (
    FitBatch,
    SersicFit,
    Spectrum,
    box_side,
    label_covariance,
    labels_from_params,
    params_from_labels,
)
from sersic_runtime.configs import load_group
from simulate.render import transfer_function


@pytest.fixture(scope="module")
def fitter():
    return SersicFit(load_group("fit", "auto"))


def spectrum(psf, window, oversample=1):
    array = transfer_function(psf, 1.0, box_side(window), oversample)
    return Spectrum(
        torch.from_numpy(np.fft.ifftshift(array, axes=0))[None], window, oversample, 1e-7
    )


def galsim_image(psf, window, flux, n, re, q, pa, x, y):
    """GalSim's drawImage of the galaxy through ``psf`` (pixel units), centred at (x, y)."""
    galaxy = galsim.Sersic(n=n, half_light_radius=re * math.sqrt(q), flux=flux)
    galaxy = galaxy.shear(q=q, beta=pa * galsim.radians)
    offset = (x - (window - 1) / 2, y - (window - 1) / 2)
    return (
        galsim.Convolve(galaxy, psf).drawImage(nx=window, ny=window, scale=1.0, offset=offset).array
    )


@pytest.mark.parametrize(
    ("fwhm", "window", "n", "re", "q", "oversample"),
    [
        (3.0, 64, 1.0, 4.0, 0.7, 1),  # a disc
        (3.0, 64, 4.0, 5.0, 0.5, 1),  # a de Vaucouleurs galaxy
        (3.0, 64, 6.2, 2.0, 0.9, 1),  # the highest n GalSim draws
        (3.0, 64, 0.3, 3.0, 0.4, 1),  # the lowest
        (1.5, 32, 2.0, 0.4, 0.6, 3),  # smaller than a pixel, an undersampled PSF
        (4.0, 256, 2.5, 30.0, 0.8, 1),  # a large galaxy
    ],
    ids=["disc", "devauc", "n6", "n03", "undersampled", "large"],
)
def test_the_model_is_galsims_drawimage(fitter, fwhm, window, n, re, q, oversample):
    psf = galsim.Moffat(beta=3.0, fwhm=fwhm)
    x, y = window / 2 - 0.7, window / 2 + 0.3
    truth = galsim_image(psf, window, 1000.0, n, re, q, 0.4, x, y)
    params = params_from_labels([1000.0], [n], [re], [q], [0.4], [x], [y])
    model, _ = fitter.render(params, spectrum(psf, window, oversample))
    # within 1e-3 of the peak: 0.3 noise rms at the peak of a galaxy at S/N 1000
    assert np.abs(model[0].numpy() - truth).max() < 1e-3 * truth.max()


def test_the_jacobian_is_the_models_derivative(fitter):
    psf = galsim.Moffat(beta=3.0, fwhm=3.0)
    params = params_from_labels([500.0], [2.3], [4.0], [0.6], [0.8], [31.2], [32.4])
    tr = spectrum(psf, 64)
    _, jac = fitter.render(params, tr, jacobian=True)
    for k in range(params.shape[1]):
        step = torch.zeros_like(params)
        step[0, k] = 1e-3  # the images are single precision
        up, _ = fitter.render(params + step, tr)
        down, _ = fitter.render(params - step, tr)
        numeric = (up - down) / 2e-3
        assert torch.allclose(jac[0, k], numeric[0], atol=2e-3 * numeric.abs().max()), k


def test_labels_and_parameters_are_one_another(fitter):
    params = params_from_labels(
        [10.0, 20.0], [1.0, 4.0], [3.0, 0.5], [0.5, 1.0], [2.0, 0.1], [1, 2], [3, 4]
    )
    labels = labels_from_params(params)
    assert labels["re_px"].numpy() == pytest.approx([3.0, 0.5])
    assert labels["q"].numpy() == pytest.approx([0.5, 1.0])
    assert labels["pa"][0].item() == pytest.approx(2.0 - math.pi)  # the same axis, in (-pi/2, pi/2]


def test_the_fit_recovers_galaxies_with_the_errors_it_states(fitter):
    rng = np.random.default_rng(3)
    psf, window, count = galsim.Moffat(beta=3.0, fwhm=3.0), 48, 24
    truth = {"flux": rng.uniform(300, 3000, count), "n": np.exp(rng.uniform(-0.7, 1.5, count)),
             "re": np.exp(rng.uniform(0.0, 1.8, count)), "q": rng.uniform(0.25, 1.0, count),
             "pa": rng.uniform(0, math.pi, count), "x": 23.5 + rng.uniform(-1, 1, count),
             "y": 23.5 + rng.uniform(-1, 1, count)}  # fmt: skip
    data = np.array(
        [galsim_image(psf, window, *(truth[k][i] for k in truth)) for i in range(count)]
    )
    data += rng.normal(0.0, 1.0, data.shape)
    start = params_from_labels(truth["flux"] * 1.2, truth["n"] * 0.8, truth["re"] * 1.2,
                               np.clip(truth["q"] + 0.1, 0, 1), truth["pa"] + 0.2,
                               truth["x"] + 0.5, truth["y"] - 0.5)  # fmt: skip
    batch = FitBatch(torch.tensor(data), torch.ones(data.shape, dtype=torch.float64),
                     spectrum(psf, window), torch.zeros(count), start)  # fmt: skip
    result = fitter.fit(batch)
    assert result.converged.all()
    assert float((result.chi2 / result.pixels).median()) == pytest.approx(1.0, abs=0.05)
    labels, errors = (
        labels_from_params(result.params),
        label_covariance(result.params, result.covariance),
    )
    for name, true in (("flux", "flux"), ("n", "n"), ("re_px", "re"), ("x", "x"), ("y", "y")):
        pull = (labels[name].numpy() - truth[true]) / errors[name].numpy()
        assert abs(np.median(pull)) < 0.6 and 0.6 < np.std(pull) < 1.5, (name, pull)


def test_a_galaxy_larger_than_its_cutout_is_fitted_to_its_true_size(fitter):
    # only the central 96 px are data; the window (the FFT box) holds the whole galaxy, so
    # its outer light does not fold back onto the pixels
    rng = np.random.default_rng(5)
    psf, window, cut = galsim.Moffat(beta=3.0, fwhm=3.0), 256, 96
    true = dict(flux=2e5, n=2.5, re=40.0, q=0.75, pa=0.3, x=127.2, y=127.6)
    data = galsim_image(psf, window, *true.values()) + rng.normal(0.0, 1.0, (window, window))
    weight = np.zeros((window, window))
    lo = (window - cut) // 2
    weight[lo : lo + cut, lo : lo + cut] = 1.0
    start = params_from_labels([1.5e5], [2.0], [30.0], [0.7], [0.35], [127.0], [128.0])
    batch = FitBatch(torch.tensor(data * weight)[None], torch.tensor(weight)[None],
                     spectrum(psf, window), torch.zeros(1), start)  # fmt: skip
    labels = labels_from_params(fitter.fit(batch).params)
    assert labels["re_px"].item() == pytest.approx(40.0, rel=0.03)
    assert labels["n"].item() == pytest.approx(2.5, rel=0.05)


def test_the_fft_box_holds_the_whole_galaxy_even_beyond_its_cutout():
    from types import SimpleNamespace

    from fitnet.fit import make_region

    cutout = SimpleNamespace(data=np.zeros((96, 96)), mask=None, padding=None, others=None,
                             rms=None, pixel_scale=0.4)  # fmt: skip
    stamp = SimpleNamespace(cutout=cutout, profile=galsim.Moffat(beta=3.0, fwhm=1.2),
                            rms=1.0, neighbours=None)  # fmt: skip
    start = dict(flux=2e5, n=2.5, re_px=40.0, q=0.75, pa=0.3, x=47.5, y=47.5)
    region = make_region(stamp, start, load_group("fit", "auto"))
    side = region.data.shape[0]
    assert 96 <= side <= 128  # the window: the cutout's pixels, no more
    # the box reaches past the galaxy's light (re 40 px, n 2.5: beyond 4 re) on every side
    assert region.box - side / 2 > 4 * 40.0


def test_a_start_without_a_number_never_converges(fitter):
    psf, window = galsim.Moffat(beta=3.0, fwhm=3.0), 32
    data = torch.tensor(galsim_image(psf, window, 500.0, 1.5, 3.0, 0.7, 0.3, 15.5, 15.5))[None]
    start = params_from_labels([-50.0], [1.0], [3.0], [0.7], [0.3], [15.5], [15.5])  # ln(-50)
    batch = FitBatch(data, torch.ones_like(data), spectrum(psf, window), torch.zeros(1), start)
    result = fitter.fit(batch)
    assert not result.converged[0] and result.iterations[0] == 0
