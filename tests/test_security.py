"""Files from others never run code: each way a file could make the project run code carries a
payload that would leave a marker folder; the marker never appears, and the command answers
with one line."""

from __future__ import annotations

import os
import shutil

import galsim
import h5py
import numpy as np
import pytest
import torch
from conftest import compose_config, run_module

from fitnet.checkpoint import FORMAT, CheckpointError, load, save
from fitnet.optimizers import make_optimizer
from sersic_runtime.errors import ConfigError, UserError
from simulate.config import validate
from simulate.psf_record import PSFRecordError, build_psf, from_record, record

#: A PSF "record" that reaches os through Python's object graph in one expression.
SUBCLASSES = "().__class__.__base__.__subclasses__()"


class MakesFolder:
    """Unpickling this calls os.makedirs(path): the classic pickle payload."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.makedirs, (self.path,))


def one_line_error(result) -> str:
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return lines[-1]


def test_a_pickled_payload_in_a_checkpoint_never_runs(tiny_data, tmp_path):
    marker = tmp_path / "marker"
    torch.save(
        {"format": FORMAT, "format_version": 3, "x": MakesFolder(marker)}, tmp_path / "their.pt"
    )
    result = run_module(
        "fitnet.predict", f"ckpt={tmp_path / 'their.pt'}", f"input={tiny_data / 'test.h5'}",
        f"output={tmp_path / 'cat.csv'}", "progress=false", cwd=tmp_path,
    )  # fmt: skip
    line = one_line_error(result)
    assert "their.pt is refused: it asks to load posix.makedirs" in line or "os.makedirs" in line
    assert not marker.exists()
    assert not (tmp_path / "cat.csv").exists()


def test_a_checkpoint_is_plain_data(tiny_ckpt):
    payload = torch.load(tiny_ckpt, weights_only=True)  # raises on anything but plain data
    assert payload["format_version"] == 3
    assert from_record(payload["instrument"]["psf"]).calculateFWHM() > 0


def test_a_psf_record_that_is_code_is_refused_on_loading(tiny_ckpt, tmp_path):
    payload = torch.load(tiny_ckpt, weights_only=True)
    payload["instrument"]["psf"] = f"galsim.Moffat(beta={SUBCLASSES})"
    save(tmp_path / "psf.pt", payload)
    with pytest.raises(CheckpointError, match=r"psf.pt: instrument psf is refused"):
        load(tmp_path / "psf.pt")


def test_an_older_checkpoint_is_read_through_the_upgrade(tiny_ckpt, tmp_path):
    # format 2 pickled PyTorch's version string and numpy floats, and the PSF as GalSim's repr
    payload = torch.load(tiny_ckpt, weights_only=True)
    payload["format_version"] = 2
    payload["torch_version"] = torch.__version__
    payload["history"][0]["mag_sigma_scale"] = np.float64(1.25)
    psf = from_record(payload["instrument"]["psf"])
    payload["instrument"]["psf"] = repr(psf)
    torch.save(payload, tmp_path / "old.pt")
    loaded = load(tmp_path / "old.pt")
    assert loaded["format_version"] == 3
    assert type(loaded["history"][0]["mag_sigma_scale"]) is float
    assert from_record(loaded["instrument"]["psf"]) == psf


def test_a_data_files_config_is_never_built(tiny_data, tmp_path):
    pytest.importorskip("pyimfit")
    marker = tmp_path / "marker"
    path = shutil.copy(tiny_data / "test.h5", tmp_path / "their.h5")
    with h5py.File(path, "a") as f:
        del f["config"]
        f["config"] = f"instrument:\n  psf:\n    _target_: os.makedirs\n    name: {marker}\n"
        f.attrs["psf"] = f"galsim.Gaussian(sigma={SUBCLASSES})"
    result = run_module(
        "fitnet.baseline", f"data={path}", f"output={tmp_path / 'fits.csv'}", "limit=2",
        "workers=1", "progress=false", cwd=tmp_path,
    )  # fmt: skip
    line = one_line_error(result)
    assert "their.h5: root attribute psf is refused" in line
    assert not marker.exists()


@pytest.mark.parametrize(
    "text",
    [
        SUBCLASSES,
        f"galsim.Moffat(beta=3, flux={SUBCLASSES}[0])",
        "__import__('os').makedirs('m')",
        "galsim.Moffat(**{'beta': 3})",
        "os.makedirs('m')",
        '{"profile": {"type": "os.makedirs", "args": ["m"]}}',
        '{"profile": {"type": "galsim.Gaussian", "kwargs": {"sigma": {"type": "eval"}}}}',
        "[c for c in ()]",
        "lambda: 0",
    ],
)
def test_psf_records_outside_the_allow_list_are_refused(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PSFRecordError, match="the PSF record"):
        from_record(text)
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize(
    "psf",
    [
        galsim.Moffat(beta=3.0, fwhm=0.18),
        galsim.Convolve(
            galsim.Airy(lam_over_diam=0.12, obscuration=0.35), galsim.Gaussian(fwhm=0.1)
        ),
        galsim.Kolmogorov(fwhm=0.7).shear(g=0.05, beta=0.3 * galsim.radians),
        galsim.Sum(galsim.Gaussian(sigma=0.1), galsim.Moffat(beta=2.5, fwhm=0.2, trunc=1.0)),
        galsim.OpticalPSF(lam_over_diam=0.07, coma1=0.2, obscuration=0.3, nstruts=4),
        galsim.Convolve(
            galsim.InterpolatedImage(
                galsim.Image(np.random.default_rng(1).random((15, 15)) + 1, scale=0.03),
                x_interpolant="lanczos7",
                offset=galsim.PositionD(0.1, 0.2),
            ),
            galsim.Deconvolve(galsim.Pixel(0.06)),
        ),
    ],
    ids=["moffat", "airy_gaussian", "sheared_kolmogorov", "sum", "optical", "image"],
)
def test_a_record_rebuilds_the_psf_exactly(psf):
    rebuilt = from_record(record(psf))
    draw = {"nx": 33, "ny": 33, "scale": 0.05}
    np.testing.assert_array_equal(rebuilt.drawImage(**draw).array, psf.drawImage(**draw).array)


def test_a_config_names_only_allowed_psf_classes(tmp_path):
    marker = tmp_path / "marker"
    cfg = compose_config("simulate", ["instrument.psf._target_=os.makedirs", f"+instrument.psf.name={marker}"])  # fmt: skip
    with pytest.raises(ConfigError, match=r"instrument.psf._target_='os.makedirs' is not allowed"):
        validate(cfg)
    assert not marker.exists()


def test_the_packaged_psf_configs_build():
    psf = build_psf({"_target_": "galsim.Convolve", "_args_": [
        {"_target_": "galsim.Airy", "lam": 718.0, "diam": 1.2, "scale_unit": "arcsec"},
        {"_target_": "galsim.Gaussian", "fwhm": 0.115}]})  # fmt: skip
    assert isinstance(psf, galsim.Convolution)


def test_an_optimiser_outside_the_registry_is_refused(tmp_path):
    marker = tmp_path / "marker"
    with pytest.raises(UserError, match=r"optim._target_='os.makedirs' is not allowed"):
        make_optimizer({"_target_": "os.makedirs", "exist_ok": True}, str(marker))
    assert not marker.exists()
