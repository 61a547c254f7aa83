"""k-fold cross-validation (``cv.folds``) and ensembles of its models (``ensemble=true``)."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from astropy.table import Table
from conftest import TINY_TRAIN, compose_config, run_module
from omegaconf import OmegaConf

from fitnet import checkpoint
from fitnet.crossval import fold_rows
from fitnet.train import run as train
from sersic_runtime.errors import UserError

NLL = ["loss=gaussian_nll", "epochs=2"]


@pytest.fixture(scope="module")
def folds(tiny_data, tmp_path_factory):
    """Three folds of two epochs on the tiny data set."""
    out = tmp_path_factory.mktemp("cv")
    train(compose_config("train", [*TINY_TRAIN, *NLL, f"data_dir={tiny_data}", "cv.folds=3",
                                   f"output_dir={out}"]), out)  # fmt: skip
    return out


def cv_rows(folder) -> dict:
    with open(folder / "cv_metrics.csv") as fh:
        return {row["metric"]: row for row in csv.DictReader(fh)}


def test_three_folds_write_three_models_a_figure_and_a_table(folds):
    assert all((folds / f"fold{k}" / "best.pt").exists() for k in range(3))
    assert (folds / "cv_loss_curves.png").stat().st_size > 0
    rows = cv_rows(folds)
    values = [float(rows["val_loss"][f"fold{k}"]) for k in range(3)]
    assert float(rows["val_loss"]["mean"]) == pytest.approx(np.mean(values), rel=1e-5)
    assert float(rows["val_loss"]["std"]) == pytest.approx(np.std(values, ddof=1), rel=1e-4)
    assert {"mag_scatter", "re_scatter", "train_loss"} <= set(rows)


def test_each_checkpoint_records_its_fold(folds):
    recorded = [OmegaConf.create(checkpoint.load(folds / f"fold{k}" / "best.pt")["config"]).cv
                for k in range(3)]  # fmt: skip
    assert [(c.fold, c.folds) for c in recorded] == [(0, 3), (1, 3), (2, 3)]


def test_folds_hold_out_disjoint_parts_that_cover_the_training_split():
    parts = [fold_rows(k, 3, 32) for k in range(3)]
    held = np.concatenate([p.held for p in parts])
    assert np.array_equal(np.sort(held), np.arange(32))
    for p in parts:
        assert not set(p.held) & set(p.train) and len(p.held) + len(p.train) == 32


def test_a_finished_cross_validation_is_not_trained_again(folds, tiny_data):
    before = [(folds / f"fold{k}" / "best.pt").stat().st_mtime_ns for k in range(3)]
    train(compose_config("train", [*TINY_TRAIN, *NLL, f"data_dir={tiny_data}", "cv.folds=3",
                                   f"output_dir={folds}"]), folds)  # fmt: skip
    assert before == [(folds / f"fold{k}" / "best.pt").stat().st_mtime_ns for k in range(3)]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["cv.folds=1"], r"cv.folds=1 is not allowed: 0 \(no cross-validation\) or >= 2"),
        (["cv.folds=33"], "cv.folds=33 is not allowed: the training split holds only 32 stamps"),
        (["cv.folds=3", "cv.fold=3"], r"cv.fold=3 is not allowed: must lie in \[0, cv.folds=3\)"),
    ],
)
def test_bad_fold_options_are_refused(train_config, tmp_path, overrides, message):
    with pytest.raises(UserError, match=message):
        train(train_config(*overrides), tmp_path / "run")


def test_folds_as_a_multirun_write_the_summary(tiny_data, tmp_path):
    out = tmp_path / "cv"
    result = run_module("fitnet.train", "-m", *TINY_TRAIN, f"data_dir={tiny_data}",
                        f"output_dir={out}", "cv.folds=2", "cv.fold=0,1", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert set(cv_rows(out)["val_loss"]) >= {"fold0", "fold1"}


def ensemble_predict(ckpts, data, out, cwd, *extra):
    return run_module("fitnet.predict", f"ckpt=[{','.join(map(str, ckpts))}]", "ensemble=true",
                      f"input={data}", f"output={out}", "progress=false", *extra, cwd=cwd)  # fmt: skip


def test_an_ensemble_is_the_mean_with_the_spread_in_its_sigma(folds, tiny_data, tmp_path):
    ckpts = [folds / f"fold{k}" / "best.pt" for k in range(3)]
    data = tiny_data / "test.h5"
    # the networks' own answers (fit=none): the fit would replace some with the pixels'
    result = ensemble_predict(
        ckpts, data, tmp_path / "ens.ecsv", tmp_path, "quality=none", "fit=none"
    )
    assert result.returncode == 0, result.stderr
    members = []
    for k, ckpt in enumerate(ckpts):
        one = run_module("fitnet.predict", f"ckpt={ckpt}", f"input={data}", "quality=none", "fit=none",
                         f"output={tmp_path / f'm{k}.ecsv'}", "progress=false", cwd=tmp_path)  # fmt: skip
        assert one.returncode == 0, one.stderr
        members.append(Table.read(tmp_path / f"m{k}.ecsv"))
    ens = Table.read(tmp_path / "ens.ecsv")
    for name in ("mag", "n", "re", "q"):
        means = np.array([np.asarray(m[name]) for m in members])
        sig = np.array([np.asarray(m[f"{name}_err"]) for m in members])
        assert np.allclose(ens[name], means.mean(0), rtol=1e-5)
        expected = np.sqrt(means.var(0) + (sig**2).mean(0))
        assert np.allclose(ens[f"{name}_err"], expected, rtol=1e-4)


def test_an_ensemble_of_models_of_other_labels_is_refused(folds, tiny_data, tmp_path):
    other = tmp_path / "mag"
    train(compose_config("train", [*TINY_TRAIN, f"data_dir={tiny_data}", "target=mag",
                                   f"output_dir={other}"]), other)  # fmt: skip
    result = ensemble_predict([folds / "fold0" / "best.pt", other / "best.pt"],
                              tiny_data / "test.h5", tmp_path / "e.csv", tmp_path)  # fmt: skip
    assert result.returncode != 0
    assert "an ensemble averages models of the same labels" in result.stderr


def test_an_ensemble_of_one_model_is_refused(folds, tiny_data, tmp_path):
    result = ensemble_predict([folds / "fold0" / "best.pt"], tiny_data / "test.h5",
                              tmp_path / "e.csv", tmp_path)  # fmt: skip
    assert result.returncode != 0
    assert "ensemble=true needs two or more checkpoints" in result.stderr
