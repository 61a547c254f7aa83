"""Checkpoints: the registered model name and the older format stay readable."""

from __future__ import annotations

import pytest
import torch

from fitnet.checkpoint import load, load_model, save
from fitnet.models import DeepLegato, model_name


def rewritten(source, path, change) -> str:
    payload = torch.load(source, weights_only=False)
    change(payload)
    save(path, payload)
    return path


def as_format_1(payload):
    """The layout written before registered names: image_size, a class path, no data_dirs, no
    bounded head."""
    model = payload["model"]
    model["image_size"] = model.pop("stamp_size")
    del model["name"]
    model["config"] = {
        "_target_": "fitnet.models.DeepLegato",
        **{k: v for k, v in model["config"].items() if k != "name"},
    }
    del payload["data_dirs"]
    del payload["output_bounds"]
    payload["format_version"] = 1


def test_a_format_1_checkpoint_loads(tiny_ckpt, tmp_path):
    path = rewritten(tiny_ckpt, tmp_path / "old.pt", as_format_1)
    model, *_, payload = load_model(path)
    assert isinstance(model, DeepLegato) and payload["model"]["stamp_size"] == 64
    assert payload["model"]["name"] == "deeplegato"
    assert payload["data_dirs"] == load(tiny_ckpt)["data_dirs"]  # from its config text


def test_the_registered_name_outlives_a_renamed_class(tiny_ckpt, tmp_path):
    def renamed(payload):
        payload["model"]["config"]["_target_"] = "fitnet.models.ClassThatWasRenamed"

    model, *_ = load_model(rewritten(tiny_ckpt, tmp_path / "renamed.pt", renamed))
    assert isinstance(model.model, DeepLegato)  # inside its bounded head


def test_an_unregistered_model_is_named():
    with pytest.raises(ValueError, match=r"'transformer' is not a registered model"):
        model_name({"name": "transformer"})
