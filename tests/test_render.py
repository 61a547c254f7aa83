"""Physics invariants of the noiseless renderer (flux, centroid, size and angle conventions)."""

from __future__ import annotations

import galsim
import numpy as np
import pytest

from simulate.render import StampRenderer, flux_from_mag, make_psf, sersic_profile
from simulate.stamps import pad_or_crop


@pytest.fixture(scope="module")
def renderer():
    from conftest import compose_config

    cfg = compose_config("simulate")
    return StampRenderer(cfg.instrument, cfg.render), cfg


def moments(image):
    y, x = np.indices(image.shape)
    total = image.sum()
    xc, yc = (image * x).sum() / total, (image * y).sum() / total
    ixx = (image * (x - xc) ** 2).sum() / total
    iyy = (image * (y - yc) ** 2).sum() / total
    ixy = (image * (x - xc) * (y - yc)).sum() / total
    return xc, yc, ixx, iyy, ixy


def test_magnitude_convention():
    zp = 25.94
    assert flux_from_mag(zp, zp) == pytest.approx(1.0)
    assert flux_from_mag(zp - 2.5, zp) == pytest.approx(10.0)


def test_stamp_flux_matches_magnitude(renderer):
    r, cfg = renderer
    stamp = r.render(n=1.5, re=0.2, q=0.7, pa=20.0, mag=21.0, dx=0.3, dy=-0.2, size=256)
    expected = 10 ** (-0.4 * (21.0 - cfg.instrument.zero_point))  # e-/s
    assert stamp.sum() == pytest.approx(expected, rel=2e-3)


@pytest.mark.parametrize("size", [63, 64, 127, 200, 201])
def test_centroid_sits_at_offset(renderer, size):
    r, _ = renderer
    dx, dy = 0.37, -0.61
    stamp = r.render(n=1.0, re=0.1, q=1.0, pa=0.0, mag=20.0, dx=dx, dy=dy, size=size)
    xc, yc, *_ = moments(stamp)
    gx, gy = r.centre(dx, dy, size)
    assert (xc, yc) == pytest.approx((gx, gy), abs=0.01)
    # stored-stamp centre for an even stamp is the corner between the two middle pixels
    offset = 0.5 * (size % 2)
    assert gx == pytest.approx(63.5 + offset + dx)


@pytest.mark.parametrize("pa", [30.0, 120.0])
def test_position_angle_counter_clockwise_from_x(renderer, pa):
    r, _ = renderer
    stamp = r.render(n=1.0, re=0.5, q=0.3, pa=pa, mag=19.0, dx=0.0, dy=0.0, size=128)
    *_, ixx, iyy, ixy = moments(stamp)
    angle = np.degrees(0.5 * np.arctan2(2 * ixy, ixx - iyy)) % 180
    assert angle == pytest.approx(pa, abs=1.0)


@pytest.mark.parametrize("n", [0.7, 1.0, 3.0])
def test_half_light_ellipse_uses_semi_major_axis(n):
    re, q, pa = 0.5, 0.35, 30.0  # arcsec, -, deg
    scale = re / 40
    profile = sersic_profile(n, re, q, pa, flux=1.0)  # no PSF, no pixel
    image = profile.drawImage(nx=1601, ny=1601, scale=scale, method="no_pixel").array
    y, x = (np.indices(image.shape) - 800) * scale
    c, s = np.cos(np.radians(pa)), np.sin(np.radians(pa))
    r_ell = np.hypot(c * x + s * y, (-s * x + c * y) / q)
    inside = image[r_ell < re].sum() / image.sum()
    assert inside == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize(
    "params",
    [
        dict(n=4.0, re=0.3, q=0.5, pa=70.0, mag=20.0, dx=0.4, dy=-0.3, size=101),
        dict(n=1.0, re=1.5, q=0.8, pa=10.0, mag=20.0, dx=-0.7, dy=0.2, size=200),
        dict(n=5.5, re=1.0, q=0.3, pa=150.0, mag=20.0, dx=0.1, dy=0.9, size=128),
    ],
)
def test_matches_galsim_draw_image(renderer, params):
    """The FFT-box renderer agrees with GalSim's own drawImage on the size x size stamp."""
    r, cfg = renderer
    ours = r.render(**params)
    gal = sersic_profile(
        params["n"],
        params["re"],
        params["q"],
        params["pa"],
        float(flux_from_mag(params["mag"], cfg.instrument.zero_point)),
    )
    gsp = galsim.GSParams(folding_threshold=1e-3, maximum_fft_size=16384)
    obj = galsim.Convolve(gal.withGSParams(gsp), make_psf(cfg.instrument).withGSParams(gsp))
    ref = obj.drawImage(
        nx=params["size"],
        ny=params["size"],
        scale=cfg.instrument.pixel_scale,
        offset=(params["dx"], params["dy"]),
    ).array
    ref = pad_or_crop(ref, cfg.render.stamp_size)
    assert np.abs(ours - ref).max() < 1e-2 * ref.max()
    assert ours.sum() == pytest.approx(ref.sum(), rel=2e-3)
