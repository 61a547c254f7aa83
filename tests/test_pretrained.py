"""The shipped pretrained model: slim export, default for predict, clear error when absent."""

from __future__ import annotations

import pytest
from conftest import compose_config

from fitnet import pretrained
from fitnet.checkpoint import CheckpointError, load
from fitnet.predict import run as run_predict


def test_export_drops_resume_state(tiny_ckpt, tmp_path):
    path = pretrained.export(tiny_ckpt, tmp_path / "slim.pt")
    payload = load(path)
    assert not set(pretrained.RESUME_ONLY) & set(payload)
    assert payload["targets"] == ["mag", "n", "re", "q"] and "state_dict" in payload["model"]
    assert path.stat().st_size < tiny_ckpt.stat().st_size


def test_predict_without_ckpt_uses_the_shipped_model(tiny_ckpt, tiny_data, tmp_path, monkeypatch):
    monkeypatch.setattr(
        pretrained, "DEFAULT", pretrained.export(tiny_ckpt, tmp_path / "shipped.pt")
    )
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
    monkeypatch.setattr(pretrained, "DEFAULT", tmp_path / "none.pt")
    with pytest.raises(CheckpointError, match=r"no pretrained model at .*none\.pt; pass ckpt=PATH"):
        pretrained.default_checkpoint()


@pytest.mark.parametrize("name", sorted(pretrained.SHIPPED))
def test_every_shipped_model_loads_with_what_prediction_reads(name):
    ckpt = load(pretrained.shipped_checkpoint(name))
    assert ckpt["targets"] and "optimizer" not in ckpt
    if name == "generalist":  # its PSF range flags PSFs it was not trained on
        lo, hi = ckpt["instrument"]["psf_fwhm_range_px"]
        assert 1.0 < lo < hi < 10.0
