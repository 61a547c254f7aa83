"""Fresh noise (train fresh_noise=true): the simulator's noise model, drawn anew each time."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_TRAIN, compose_config, train_killed_in_second_epoch
from omegaconf import OmegaConf

from fitnet.checkpoint import load
from fitnet.data import DataError, ImageNorm, describe_splits, make_batches, split_paths
from fitnet.labels import LabelScaler
from fitnet.noise import CCDNoise
from fitnet.train import run as train
from simulate.noise import background_rms, variance_map


def instrument_noise(ins) -> CCDNoise:
    return CCDNoise(ins.exposure_time, ins.sky_level, ins.read_noise)


def test_fresh_noise_has_the_simulator_variance_and_mean(sim_config):
    ins = sim_config().instrument
    y, x = np.mgrid[:16, :16]
    stamp = 2.0 * np.exp(-((x - 7.5) ** 2 + (y - 7.5) ** 2) / 8.0)  # e-/s per pixel, peak 2
    noiseless = torch.tensor(stamp, dtype=torch.float32).expand(4000, 16, 16)
    noisy = instrument_noise(ins)(noiseless, torch.Generator().manual_seed(0)).numpy()
    np.testing.assert_allclose(noisy.var(0), variance_map(stamp, ins), rtol=0.1)
    standard_error = np.sqrt(variance_map(stamp, ins) / 4000)
    assert np.all(np.abs(noisy.mean(0) - stamp) < 5 * standard_error)


def test_fresh_noise_of_an_empty_stamp_is_the_background_rms(sim_config):
    ins = sim_config().instrument
    noisy = instrument_noise(ins)(torch.zeros(256, 256), torch.Generator().manual_seed(1))
    assert noisy.std().item() == pytest.approx(background_rms(ins), rel=0.02)


@pytest.mark.parametrize("max_memory_gb", [100.0, 0.0], ids=["memory", "stream"])
def test_batches_with_fresh_noise_differ_each_time(tiny_noiseless_data, max_memory_gb):
    paths = split_paths(str(tiny_noiseless_data), "train")
    attrs = describe_splits(paths, ["mag"])
    norm = ImageNorm(rms=attrs["background_rms_e_per_s"], softening=1.0)
    scaler = LabelScaler.fit(["mag"], compose_config("train").labels, {"mag": np.array([20, 24])})
    data_cfg = OmegaConf.create({"max_memory_gb": max_memory_gb, "num_workers": 0})
    noise, draws = CCDNoise.from_attrs(attrs), torch.Generator().manual_seed(0)
    batches = make_batches(
        paths, attrs, norm, scaler, 8, torch.device("cpu"), data_cfg, noise, draws
    )
    first, second = (torch.cat([x for x, _ in batches.iterate(None)]) for _ in range(2))
    assert first.shape == (32, 1, 64, 64) and not torch.equal(first, second)
    stored = make_batches(paths, attrs, norm, scaler, 8, torch.device("cpu"), data_cfg)
    stored = torch.cat([x for x, _ in stored.iterate(None)])
    # the same galaxies in the same order as the stored noisy images: closer to them than to
    # the next galaxy's
    assert (first - stored).abs().mean() < (first - stored.roll(1, 0)).abs().mean()


def test_fresh_noise_needs_noiseless_stamps(train_config, tmp_path):
    with pytest.raises(DataError, match=r"has no /noiseless stamps.*simulate noiseless=true"):
        train(train_config("fresh_noise=true"), tmp_path / "run")


def test_fresh_noise_run_resumes_exactly(tiny_noiseless_data, tmp_path, monkeypatch):
    def config(name, *overrides):
        return compose_config(
            "train",
            [
                *TINY_TRAIN,
                "epochs=2",
                "fresh_noise=true",
                f"data_dir={tiny_noiseless_data}",
                f"output_dir={tmp_path / name}",
                *overrides,
            ],
        )

    train(config("straight"), tmp_path / "straight")
    train_killed_in_second_epoch(config("killed"), tmp_path / "killed", monkeypatch)
    train(config("resumed", f"resume={tmp_path / 'killed' / 'last.pt'}"), tmp_path / "resumed")
    a, b = load(tmp_path / "straight" / "last.pt"), load(tmp_path / "resumed" / "last.pt")
    for key, value in a["model"]["state_dict"].items():
        assert torch.equal(value, b["model"]["state_dict"][key]), key


def test_fresh_noise_training_differs_from_stored_noise(tiny_noiseless_data, tmp_path):
    runs = {}
    for fresh in ("true", "false"):
        cfg = compose_config(
            "train",
            [*TINY_TRAIN, f"fresh_noise={fresh}", f"data_dir={tiny_noiseless_data}"],
        )
        train(cfg, tmp_path / fresh)
        runs[fresh] = load(tmp_path / fresh / "last.pt")["model"]["state_dict"]
    assert any(not torch.equal(v, runs["false"][k]) for k, v in runs["true"].items())
