"""The instrument presets: each composes with its prior, passes the simulator's checks, cites a
source for every number, and holds its re range inside what the stamps can show."""

import re
from pathlib import Path

import pytest

from sersic_runtime.configs import compose_config
from simulate.config import validate
from simulate.psf_record import build_psf, from_record, record

CONF = Path(__file__).resolve().parents[1] / "conf"
PRESETS = sorted(p.stem for p in (CONF / "instrument").glob("*.yaml") if p.stem != "psf_image")
NUMBERS = ("pixel_scale", "zero_point", "exposure_time", "sky_level", "read_noise")


def test_the_issue_presets_exist():
    assert {
        "candels_h",
        "acs_f814w",
        "euclid_vis",
        "rubin_i",
        "hsc_i",
        "legacy_r",
        "sdss_r",
    } <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_validates_with_its_prior(name):
    cfg = validate(compose_config("simulate", [f"instrument={name}"]))
    assert cfg.instrument.name == name
    prior = (CONF / "prior" / f"{name}.yaml").read_text()
    assert "- default" in prior  # the default prior's shapes, the preset's ranges


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_number_has_a_comment(name):
    text = (CONF / "instrument" / f"{name}.yaml").read_text()
    for key in NUMBERS:
        line = re.search(rf"^{key}:.*$", text, re.MULTILINE)
        assert line is not None, key
        assert "#" in line.group(0), f"{key} has no source or unit comment"


@pytest.mark.parametrize("name", PRESETS)
def test_preset_re_prior_fits_the_stamps(name):
    cfg = compose_config("simulate", [f"instrument={name}"])
    pixel_scale = cfg.instrument.pixel_scale
    re_min_px, re_max_px = cfg.prior.re.min / pixel_scale, cfg.prior.re.max / pixel_scale
    assert 0.95 <= re_min_px <= 2.0
    # at most the default prior's 33 pixels: a 256-pixel stamp holds about 7.5 half-light radii
    assert re_max_px <= cfg.prior.size.max / 7.5


@pytest.mark.parametrize("name", PRESETS)
def test_preset_psf_is_resolved_by_its_pixels(name):
    cfg = compose_config("simulate", [f"instrument={name}"])
    fwhm_px = build_psf(cfg.instrument.psf).calculateFWHM() / cfg.instrument.pixel_scale
    assert 1.0 <= fwhm_px <= 8.0


def test_a_convolved_psf_is_rebuilt_from_its_record():
    # the residual check and the baseline rebuild the PSF from the files' record
    cfg = compose_config("simulate", ["instrument=euclid_vis"])
    psf = build_psf(cfg.instrument.psf)
    rebuilt = from_record(record(psf))
    assert rebuilt.calculateFWHM() == pytest.approx(psf.calculateFWHM(), rel=1e-9)
