"""Evaluation: files, finite metrics, and the metric code on a perfect predictor."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from conftest import compose_config, other_simulators_copy, read_params, run_module

from fitnet import pretrained, runtime
from fitnet.evaluate import run as run_evaluate
from fitnet.metrics import binned, report, summarize


def evaluate_config(*overrides):
    return compose_config(
        "evaluate", ["device=cpu", "progress=false", "gallery=4", "batch_size.cpu=16", *overrides]
    )


def test_evaluate_writes_metrics_tables_and_plots(tiny_ckpt, tiny_data, tmp_path):
    summary = run_evaluate(
        evaluate_config(f"ckpt={tiny_ckpt}", f"data={tiny_data / 'test.h5'}"), tmp_path
    )
    for name in ("metrics.json", "metrics.md", "predictions.csv", "gallery.png", "loss_curve.png"):
        assert (tmp_path / name).exists(), name
    for label in ("mag", "n", "re", "q"):
        assert (tmp_path / f"residuals_{label}.png").exists()
        overall = summary["labels"][label]["all"]
        assert overall["count"] == 4
        assert math.isfinite(overall["bias"]) and math.isfinite(overall["scatter"])
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["evaluated"] == 4 and "mag_bins" in saved["labels"]["re"]
    assert "| bin | N | bias | scatter |" in (tmp_path / "metrics.md").read_text()


def test_default_data_is_the_training_test_split(tiny_ckpt, tmp_path):
    summary = run_evaluate(evaluate_config(f"ckpt={tiny_ckpt}"), tmp_path)
    assert summary["data"].endswith("test.h5")


def test_shipped_model_defaults_to_the_default_data_set(
    tiny_ckpt, tiny_data, tmp_path, monkeypatch
):
    monkeypatch.setitem(
        runtime.SHIPPED,
        runtime.DEFAULT_MODEL,
        pretrained.export(tiny_ckpt, tmp_path / "shipped.pt"),
    )
    other = tmp_path / "other"  # not the folder the checkpoint was trained on
    other.mkdir()
    shutil.copy(tiny_data / "test.h5", other / "test.h5")
    summary = run_evaluate(evaluate_config(f"paths.data_dir={other}"), tmp_path / "eval")
    assert summary["data"] == str(other / "test.h5")


def test_perfect_predictor_has_zero_bias_and_scatter():
    rng = np.random.default_rng(0)
    true = {
        "mag": rng.uniform(18, 25, 500),
        "n": rng.uniform(0.3, 6, 500),
        "re": rng.uniform(0.06, 2, 500),
        "q": rng.uniform(0.1, 1, 500),
    }
    out = report(
        true, true, true["mag"], rng.uniform(1, 1000, 500), [18, 20, 22, 25], [0, 100, 2000]
    )
    for label in true:
        for row in [out[label]["all"], *out[label]["mag_bins"], *out[label]["snr_bins"]]:
            assert row["bias"] == 0 and row["scatter"] == 0 and row["outlier_frac"] == 0


def test_metric_definitions():
    errors = np.array([-1.0, 0.0, 0.1, 0.2, 3.0])
    m = summarize(errors)
    assert m["bias"] == pytest.approx(0.1)
    assert m["scatter"] == pytest.approx(
        0.5 * (np.percentile(errors, 84) - np.percentile(errors, 16))
    )
    assert m["outlier_frac"] == pytest.approx(0.4)
    rows = binned(errors, np.array([18.5, 18.5, 19.5, 19.5, 30.0]), [18, 19, 20])
    assert [r["count"] for r in rows] == [2, 2]


def test_combined_single_target_checkpoints(train_config, tiny_data, tmp_path):
    from fitnet.train import run as train

    train(train_config("target=re"), tmp_path / "re")
    train(train_config("target=[mag,q]"), tmp_path / "magq")
    cfg = evaluate_config(f"ckpt=[{tmp_path / 're' / 'best.pt'},{tmp_path / 'magq' / 'best.pt'}]")
    summary = run_evaluate(cfg, tmp_path / "eval")
    assert sorted(summary["labels"]) == ["mag", "q", "re"]
    assert (tmp_path / "eval" / "loss_curve_1.png").exists()


def test_command_line(tiny_ckpt, tmp_path):
    result = run_module(
        "fitnet.evaluate", f"ckpt={tiny_ckpt}", "device=cpu", "gallery=2", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert list((tmp_path / "outputs").glob("evaluate/*/*/metrics.md"))


def test_side_by_side_with_baseline_and_calibration(train_config, tiny_data, tmp_path):
    """A gaussian_nll checkpoint gets coverage columns; a fitter catalogue is compared row by row."""
    from astropy.table import Table

    from fitnet.train import run as train

    train(train_config("loss=gaussian_nll"), tmp_path / "nll")
    true = read_params(tiny_data / "test.h5")
    fake = Table(
        {
            "row": np.arange(3),
            "mag": true["mag"][:3] + 0.1,
            "n": true["n"][:3],
            "re": true["re"][:3],
            "q": true["q"][:3],
            "seconds": np.full(3, 2.0),
            "flag": np.array([0, 0, 16]),
        }
    )
    fake.write(tmp_path / "fits.csv")
    summary = run_evaluate(
        evaluate_config(
            f"ckpt={tmp_path / 'nll' / 'best.pt'}", f"baseline={tmp_path / 'fits.csv'}"
        ),
        tmp_path / "eval",
    )
    overall = summary["labels"]["re"]["all"]
    assert 0 <= overall["cover68"] <= 1 and 0 <= overall["cover95"] <= 1
    assert overall["scatter_over_crb"] > 0  # the tiny test split carries Cramer-Rao bounds
    base = summary["baseline"]
    assert base["fitted"] == 3 and base["failed"] == 1
    assert base["fitter"]["mag"]["all"]["bias"] == pytest.approx(0.1, abs=1e-5)
    assert base["fitter"]["n"]["all"]["scatter"] == 0
    text = (tmp_path / "eval" / "metrics.md").read_text()
    assert "pyimfit, mag" in text and "in 68%" in text and "scatter / CRB" in text


def test_coverage_of_exact_gaussian_errors():
    from fitnet.metrics import calibration, standard_scores

    rng = np.random.default_rng(1)
    true = rng.uniform(0.1, 2.0, 20000)
    sigma_ln = 0.1
    pred = true * np.exp(rng.normal(0, sigma_ln, true.size))
    z = standard_scores("re", pred, true, pred * sigma_ln, "log")
    cover = calibration(z)
    assert cover["cover68"] == pytest.approx(0.6827, abs=0.01)
    assert cover["cover95"] == pytest.approx(0.95, abs=0.005)


def test_file_without_snr_gets_magnitude_bins_only(tiny_ckpt, tiny_data, tmp_path):
    import shutil

    import h5py

    data = tmp_path / "no_snr.h5"
    shutil.copy(tiny_data / "test.h5", data)
    with h5py.File(data, "a") as f:
        del f["params/snr"]
    summary = run_evaluate(evaluate_config(f"ckpt={tiny_ckpt}", f"data={data}"), tmp_path / "e")
    mag = summary["labels"]["mag"]
    assert sum(b["count"] for b in mag["snr_bins"]) == 0
    assert mag["all"]["count"] == 4 and math.isfinite(mag["all"]["scatter"])


def test_file_from_another_simulator_needs_only_images_and_labels(tiny_ckpt, tiny_data, tmp_path):
    # pixel scale in arcsec / pixel under another simulator's attribute name
    other = other_simulators_copy(tiny_data / "test.h5", tmp_path / "other.h5", pixscale=0.06)
    summary = run_evaluate(evaluate_config(f"ckpt={tiny_ckpt}", f"data={other}"), tmp_path / "e")
    assert summary["evaluated"] == 4
    assert summary["labels"]["mag"]["snr_bins"][0]["count"] == 0  # no S/N in the file
