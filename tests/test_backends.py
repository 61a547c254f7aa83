"""The network's engine and precision: ONNX Runtime gives PyTorch's numbers, bad choices are
refused in one line, and automatic choices fall back where the hardware or package is absent."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from fitnet import backends
from fitnet.inference import Predictor
from sersic_runtime.errors import UserError

CPU = torch.device("cpu")


def stamps(predictor, count=6):
    rng = np.random.default_rng(3)
    size = predictor.stamp_size
    return rng.normal(0, predictor.noise_rms, (count, size, size)).astype(np.float32) + 0.5


def test_onnx_gives_the_torch_predictions(tiny_ckpt):
    reference = Predictor(tiny_ckpt, CPU, backend="torch")
    onnx = Predictor(tiny_ckpt, CPU, backend="onnx")
    assert onnx.backend == "onnx"
    images = stamps(reference)
    (values, sigmas), (values_onnx, sigmas_onnx) = reference.predict(images), onnx.predict(images)
    assert set(values) == set(reference.labels) and set(sigmas_onnx) == set(sigmas)
    for name in values:
        np.testing.assert_allclose(values_onnx[name], values[name], rtol=1e-4, atol=1e-5)
    for name in sigmas:
        np.testing.assert_allclose(sigmas_onnx[name], sigmas[name], rtol=1e-4, atol=1e-6)


def test_the_shipped_refiner_runs_its_convolutions_in_onnx():
    predictor = Predictor("fitnet/pretrained/candels_h.pt", CPU, backend="onnx")
    model = predictor.members[0][0]
    assert isinstance(model.network.features, backends.OnnxTrunk)
    values, _ = predictor.predict(stamps(predictor, 2))
    assert all(np.isfinite(v).all() for v in values.values())


def test_auto_is_onnx_on_a_cpu_where_it_is_installed():
    assert backends.resolve_backend("auto", CPU, amp=False) == "onnx"
    assert backends.resolve_backend("auto", CPU, amp=True) == "torch"
    assert backends.resolve_backend("auto", torch.device("cuda"), amp=False) == "torch"


def test_auto_falls_back_to_torch_without_onnxruntime(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnxruntime" else real(name, *a))  # fmt: skip
    assert backends.resolve_backend("auto", CPU, amp=False) == "torch"
    with pytest.raises(UserError, match=r"backend=onnx needs onnxruntime and onnx.*\[onnx\]"):
        backends.resolve_backend("onnx", CPU, amp=False)


def test_an_unknown_backend_is_refused():
    with pytest.raises(
        UserError, match=r"backend='tensorrt' is not allowed: choose from auto, torch, onnx"
    ):
        backends.resolve_backend("tensorrt", CPU, amp=False)


def test_onnx_with_bf16_is_refused():
    with pytest.raises(UserError, match=r"backend=onnx runs float32 on the CPU"):
        backends.resolve_backend("onnx", CPU, amp=True)


def test_amp_auto_follows_the_hardware(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert backends.resolve_amp("auto", CPU) is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert backends.resolve_amp("auto", CPU) is True


def test_a_bad_amp_value_is_refused():
    with pytest.raises(
        UserError, match=r"amp='fast' is not allowed: choose from auto, true, false"
    ):
        backends.resolve_amp("fast", CPU)
