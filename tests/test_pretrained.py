"""The shipped pretrained model: slim export, default for predict, clear error when absent."""

from __future__ import annotations

import pytest
from conftest import compose_config, run_module

from fitnet import pretrained, runtime
from fitnet.checkpoint import load
from fitnet.predict import run as run_predict
from sersic_runtime.errors import UserError


def test_export_drops_resume_state(tiny_ckpt, tmp_path):
    path = pretrained.export(tiny_ckpt, tmp_path / "slim.pt")
    payload = load(path)
    assert not set(pretrained.RESUME_ONLY) & set(payload)
    assert payload["targets"] == ["mag", "n", "re", "q"] and "state_dict" in payload["model"]
    assert path.stat().st_size < tiny_ckpt.stat().st_size


def test_predict_without_ckpt_uses_the_shipped_model(tiny_ckpt, tiny_data, tmp_path, monkeypatch):
    slim = pretrained.export(tiny_ckpt, tmp_path / "shipped.pt")
    monkeypatch.setitem(runtime.SHIPPED, runtime.DEFAULT_MODEL, slim)
    cfg = compose_config(
        "predict",
        [
            "device=cpu",
            "progress=false",
            f"input={tiny_data / 'val.h5'}",
            f"output={tmp_path / 'cat.csv'}",
        ],
    )
    assert len(run_predict(cfg)) == 4


def test_missing_shipped_model_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(runtime.SHIPPED, runtime.DEFAULT_MODEL, tmp_path / "none.pt")
    with pytest.raises(UserError, match=r"ckpt=candels_h: this installation has no .*none\.pt"):
        runtime.checkpoint_paths(None)


@pytest.mark.parametrize("name", sorted(runtime.SHIPPED))
def test_every_shipped_model_loads_with_what_prediction_reads(name):
    ckpt = load(runtime.shipped_checkpoint(name))
    assert ckpt["targets"] and "optimizer" not in ckpt
    if name == "generalist":  # its PSF range flags PSFs it was not trained on
        lo, hi = ckpt["instrument"]["psf_fwhm_range_px"]
        assert 1.0 < lo < hi < 10.0


def test_the_command_writes_only_the_file_it_is_given(tiny_ckpt, tmp_path):
    shipped = {name: path.read_bytes() for name, path in runtime.SHIPPED.items()}
    result = run_module("fitnet.pretrained", f"ckpt={tiny_ckpt}", "output=mine.pt", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert load(tmp_path / "mine.pt")["exported_from"] == str(tiny_ckpt)
    assert {name: path.read_bytes() for name, path in runtime.SHIPPED.items()} == shipped


def test_the_command_needs_an_output(tiny_ckpt, tmp_path):
    result = run_module("fitnet.pretrained", f"ckpt={tiny_ckpt}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: output is required")


def test_the_command_never_replaces_a_file_unasked(tiny_ckpt, tmp_path):
    (tmp_path / "mine.pt").write_bytes(b"keep me")
    result = run_module("fitnet.pretrained", f"ckpt={tiny_ckpt}", "output=mine.pt", cwd=tmp_path)
    assert result.returncode == 2 and "overwrite=true" in result.stderr
    assert (tmp_path / "mine.pt").read_bytes() == b"keep me"
