"""Every model gives the right output shape, finite values, and a gradient to every parameter."""

from __future__ import annotations

import pytest
import torch
from conftest import compose_config
from omegaconf import OmegaConf

from fitnet.models import BoundedOutputs, build_model


@pytest.mark.parametrize("model", ["deeplegato", "resnet", "densenet"])
@pytest.mark.parametrize("stamp_size", [64, 128])
def test_output_shape_finite_and_gradients(model, stamp_size):
    cfg = compose_config("train", [f"model={model}"])
    net = build_model(
        OmegaConf.to_container(cfg.model), in_chans=1, num_outputs=3, stamp_size=stamp_size
    )
    net.train()
    x = torch.randn(4, 1, stamp_size, stamp_size, generator=torch.Generator().manual_seed(1))
    out = net(x)
    assert out.shape == (4, 3)
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    missing = [
        name for name, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert not missing


def test_models_split_features_and_head():
    cfg = compose_config("train")
    net = build_model(OmegaConf.to_container(cfg.model), in_chans=2, num_outputs=5, stamp_size=64)
    features = net.features(torch.zeros(1, 2, 64, 64))
    assert net.head(features).shape == (1, 5)


def test_input_noise_only_while_training():
    cfg = compose_config("train")
    net = build_model(OmegaConf.to_container(cfg.model), in_chans=1, num_outputs=1, stamp_size=64)
    x = torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    net.eval()
    assert torch.equal(net(x), net(x))


def test_a_bounded_head_is_the_identity_inside_the_prior_and_bounded_beyond():
    head = BoundedOutputs(torch.nn.Identity(), [-1.0, -1.0], [1.0, 1.0], [0.1, 0.1], [0.1, 0.0])
    inside = torch.tensor([[0.5, -0.99], [-1.0, 1.0]])
    assert torch.equal(head(inside), inside)
    far = head(torch.tensor([[1e6, 1e6], [-1e6, -1e6]]))
    assert torch.allclose(far, torch.tensor([[1.1, 1.0], [-1.1, -1.1]]))
    # sigma outputs (the second half for gaussian_nll) pass unchanged
    assert torch.equal(
        head(torch.tensor([[0.0, 0.0, 7.0, -7.0]]))[:, 2:], torch.tensor([[7.0, -7.0]])
    )


def test_densenet_compression_outside_its_range_is_refused():
    cfg = compose_config("train", ["model=densenet", "model.compression=1.5"])
    with pytest.raises(ValueError, match=r"model.compression 1.5 must be in \(0, 1\]"):
        build_model(OmegaConf.to_container(cfg.model), in_chans=1, num_outputs=3, stamp_size=64)
