"""The commands as a user runs them: one clear line for anticipated errors, their own --help."""

from __future__ import annotations

import os

import pytest
from conftest import TINY_SIM, run_module


def failed_with_one_line(result, match: str) -> str:
    """The error line of a command that stopped on an anticipated error (status 2)."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result.stderr
    assert match in errors[0], errors[0]
    return errors[0]


def test_a_misspelt_option_names_the_closest_one(tmp_path):
    result = run_module("simulate", "nn=100", cwd=tmp_path)
    line = failed_with_one_line(result, "'nn' is not an option of python -m simulate")
    assert "did you mean n?" in line and "+nn" not in line


def test_an_unknown_group_choice_lists_the_choices(tmp_path):
    result = run_module("simulate", "instrument=hubble", cwd=tmp_path)
    failed_with_one_line(
        result, "instrument=hubble: no such choice; choose from acs_f814w, candels_h, euclid_vis"
    )


def test_a_bad_psf_class_fails_at_once_with_workers(tmp_path):
    # Before, every pool worker crashed building the PSF and was restarted for ever.
    result = run_module(
        "simulate", *TINY_SIM, "workers=2", "instrument.psf._target_=galsim.Gaussian",
        cwd=tmp_path, timeout=60,
    )  # fmt: skip
    failed_with_one_line(result, "GalSim could not build it")
    assert "beta" in result.stderr  # the keyword Gaussian does not take


def test_a_negative_psf_size_is_refused(tmp_path):
    result = run_module("simulate", "instrument.psf.fwhm=-0.1", cwd=tmp_path)
    failed_with_one_line(result, "instrument.psf.fwhm=-0.1 is not allowed: must be a size > 0")


def test_a_failed_run_leaves_no_empty_output_folder(tmp_path):
    result = run_module("fitnet.predict", "input=missing.fits", "output=c.csv", cwd=tmp_path)
    failed_with_one_line(result, "input missing.fits does not exist")
    assert not (tmp_path / "outputs").exists()


def test_a_failed_multirun_keeps_each_jobs_log(tmp_path):
    result = run_module(
        "fitnet.predict", "-m", "input=missing.fits", "output=c.csv",
        f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 2
    assert (
        "input missing.fits does not exist"
        in (tmp_path / "sweep" / "0" / "predict.log").read_text()
    )


def test_a_required_option_is_named(tmp_path):
    result = run_module("fitnet.predict", "input=x.fits", cwd=tmp_path)
    failed_with_one_line(result, "output is required")


@pytest.mark.parametrize(
    ("value", "match"),
    [("abc", "input_scale='abc' is not allowed"), ("-1", "input_scale=-1 is not allowed")],
)
def test_input_scale_must_be_a_positive_number(tmp_path, value, match):
    result = run_module(
        "fitnet.predict", "input=x.fits", "output=c.csv", f"input_scale={value}", cwd=tmp_path
    )
    failed_with_one_line(result, match)


def test_full_error_shows_the_traceback(tmp_path):
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    result = run_module(
        "fitnet.predict", "input=missing.fits", "output=c.csv", cwd=tmp_path, env=env
    )
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_help_lists_the_commands_own_options(tmp_path):
    result = run_module("fitnet.predict", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    text = result.stdout
    for option in (
        "input:",
        "output:",
        "input_scale:",
        "pixel_scale:",
        "batch_size:",
        "amp:",
        "quality.min_significance:",
    ):
        assert option in text, option
    assert "arcsec / pixel" in text and "Example:" in text
    for unrelated in ("optim", "scheduler", "prior= :", "experiment"):
        assert unrelated not in text, unrelated


def test_help_of_train_lists_its_groups_and_choices(tmp_path):
    result = run_module("fitnet.train", "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (
        "model= : one of deeplegato, densenet, photometric, psf_conditioned, resnet (default deeplegato)"
        in result.stdout
    )
    assert "epochs:" in result.stdout and "optim.lr:" in result.stdout


@pytest.mark.parametrize(
    ("module", "args", "key", "close"),
    [
        ("fitnet.predict", ["input=cutouts/", "outptu=cat.csv"], "outptu", "output"),
        ("fitnet.merge", ["input=cats/", "outptu=all.fits"], "outptu", "output"),
        ("fitnet.calibrate", ["dat=a.h5", "output=c.pt"], "dat", "data"),
        ("fitnet.baseline", ["outptu=fits.csv"], "outptu", "output"),
    ],
)
def test_a_misspelt_option_of_a_command_with_required_options(tmp_path, module, args, key, close):
    result = run_module(module, *args, cwd=tmp_path)
    line = failed_with_one_line(result, f"'{key}' is not an option of python -m {module}")
    assert f"did you mean {close}" in line


def test_a_double_dash_option_says_options_are_key_value(tmp_path):
    result = run_module("fitnet.predict", "--input", "x.fits", cwd=tmp_path)
    failed_with_one_line(result, "--input: options are key=value, e.g. input=...")


def test_a_bare_word_is_offered_as_the_first_required_option(tmp_path):
    result = run_module("fitnet.pretrained", "best.pt", cwd=tmp_path)
    failed_with_one_line(result, "best.pt: options are key=value, e.g. ckpt=best.pt")


def test_a_glob_with_brackets_says_how_to_quote_it(tmp_path):
    result = run_module("fitnet.predict", "input=tiles/t[0-3].fits", "output=c.csv", cwd=tmp_path)
    failed_with_one_line(result, """'input="tiles/t[0-3].fits"'""")


def test_a_quoted_glob_with_brackets_is_read(tmp_path):
    (tmp_path / "tiles").mkdir()
    result = run_module("fitnet.predict", 'input="tiles/t[0-3].fits"', "output=c.csv", cwd=tmp_path)
    failed_with_one_line(result, "input tiles/t[0-3].fits does not exist")
