"""python -m fitnet.calibrate: sigma scale factors measured again on independent galaxies."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from conftest import TINY_SIM, TINY_TRAIN, compose_config, other_simulators_copy, run_module

from fitnet.calibrate import run as run_calibrate
from fitnet.checkpoint import CheckpointError, load
from fitnet.data import DataError, read_labels
from fitnet.inference import Predictor
from fitnet.labels import ONE_SIGMA_COVERAGE
from fitnet.metrics import standard_scores


@pytest.fixture(scope="module")
def nll_ckpt(tiny_data, tmp_path_factory):
    """A gaussian_nll checkpoint trained for one epoch on the tiny data set."""
    from fitnet.train import run as train

    out = tmp_path_factory.mktemp("nll_run")
    overrides = [*TINY_TRAIN, f"data_dir={tiny_data}", f"output_dir={out}", "loss=gaussian_nll"]
    train(compose_config("train", overrides), out)
    return out / "best.pt"


@pytest.fixture(scope="module")
def calib_data(tmp_path_factory):
    """60 galaxies made with another master seed than the training set (no shared galaxies)."""
    from simulate.pipeline import run_simulation

    out = tmp_path_factory.mktemp("calib") / "data"
    overrides = [*TINY_SIM, "n=60", "seed=7", "montage=0", "bounds.splits=[]", f"out_dir={out}"]
    run_simulation(compose_config("simulate", overrides), progress=False)
    return out


def calibrate_config(*overrides):
    return compose_config(
        "calibrate", ["device=cpu", "progress=false", "batch_size.cpu=16", *overrides]
    )


def test_calibrated_checkpoint_covers_68_percent_of_its_calibration_set(
    nll_ckpt, calib_data, tmp_path
):
    files = [calib_data / f"{s}.h5" for s in ("train", "val", "test")]
    out = tmp_path / "calibrated.pt"
    record = run_calibrate(
        calibrate_config(
            f"ckpt={nll_ckpt}",
            f"data=[{','.join(map(str, files))}]",
            f"output={out}",
            "calibration.mag_edges=[]",
        )
    )
    assert record["n_galaxies"] == 60
    # the calibrated copy, read back and applied through predict's decode path
    predictor = Predictor(out, torch.device("cpu"))
    covered = []
    for path in files:
        true = read_labels(path, predictor.labels)
        with h5py.File(path, "r") as f:
            pred, sigma = predictor.predict(f["images"][()])
        covered.append(
            np.stack(
                [
                    standard_scores(n, pred[n], true[n], sigma[n], predictor.transforms[n])
                    for n in predictor.labels
                ],
                axis=1,
            )
        )
    fraction = np.mean(np.abs(np.concatenate(covered)) < 1, axis=0)
    assert fraction == pytest.approx(ONE_SIGMA_COVERAGE, abs=1.5 / 60)
    assert load(out)["calibration"]["cover68_after"]["q"] == pytest.approx(fraction[3])


def test_calibration_per_magnitude_bin_is_stored(nll_ckpt, calib_data, tmp_path):
    out = tmp_path / "calibrated.pt"
    run_calibrate(
        calibrate_config(
            f"ckpt={nll_ckpt}",
            f"data={calib_data / 'train.h5'}",
            f"output={out}",
            "calibration.mag_edges=[22]",
            "calibration.min_count=1",
        )
    )
    scaler = load(out)["label_scaler"]
    assert np.array(scaler["sigma_scale"]).shape == (2, 4) and scaler["sigma_mag_edges"] == [22]


def test_training_galaxies_are_refused(nll_ckpt, tiny_data, tmp_path):
    with pytest.raises(DataError, match="overlap the training split"):
        run_calibrate(
            calibrate_config(
                f"ckpt={nll_ckpt}", f"data={tiny_data / 'train.h5'}", f"output={tmp_path / 'c.pt'}"
            )
        )


def test_model_without_sigmas_is_refused(tiny_ckpt, calib_data, tmp_path):
    with pytest.raises(CheckpointError, match="only gaussian_nll models"):
        run_calibrate(
            calibrate_config(
                f"ckpt={tiny_ckpt}", f"data={calib_data / 'val.h5'}", f"output={tmp_path / 'c.pt'}"
            )
        )


def test_command_line(nll_ckpt, calib_data, tmp_path):
    out = tmp_path / "calibrated.pt"
    result = run_module(
        "fitnet.calibrate",
        f"ckpt={nll_ckpt}",
        f"data=[{calib_data / 'val.h5'},{calib_data / 'test.h5'}]",
        f"output={out}",
        "device=cpu",
        "calibration.min_count=5",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert load(out)["calibration"]["n_galaxies"] == 12


def test_file_from_another_simulator_needs_only_images_and_labels(nll_ckpt, calib_data, tmp_path):
    other = other_simulators_copy(calib_data / "train.h5", tmp_path / "other.h5")
    record = run_calibrate(
        calibrate_config(
            f"ckpt={nll_ckpt}",
            f"data={other}",
            f"output={tmp_path / 'c.pt'}",
            "calibration.mag_edges=[]",
        )
    )
    assert record["n_galaxies"] == 48
