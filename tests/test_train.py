"""Training end to end on a tiny data set (CPU, one epoch): files, resume, targets, errors."""

from __future__ import annotations

import csv
import json
import math
import shutil

import h5py
import numpy as np
import pytest
import torch
from conftest import compose_config, counted, interrupted, run_module, train_killed_in_second_epoch
from omegaconf import OmegaConf

from fitnet import caching, compute
from fitnet import training as train_module
from fitnet.checkpoint import CheckpointError, load, load_model
from fitnet.data import (
    DataError,
    ImageNorm,
    describe_splits,
    dihedral,
    load_images,
    make_batches,
    split_paths,
)
from fitnet.labels import LabelScaler, TargetError, calibration_scale, parse_targets
from fitnet.models import BoundedOutputs
from fitnet.train import run as train
from fitnet.training import TrainConfigError
from sersic_runtime.errors import UserError


def test_train_all_targets_writes_checkpoints_and_logs(train_config, tmp_path):
    best = train(train_config("target=all"), tmp_path / "run")
    assert math.isfinite(best)
    run = tmp_path / "run"
    for name in ("best.pt", "last.pt", "metrics.csv", "loss_curve.png"):
        assert (run / name).exists(), name
    rows = list(csv.DictReader(open(run / "metrics.csv")))
    assert len(rows) == 1 and {"train_loss", "val_loss", "re_scatter", "n_bias"} <= set(rows[0])
    ckpt = load(run / "best.pt")
    assert ckpt["targets"] == ["mag", "n", "re", "q"]
    assert ckpt["instrument"]["pixel_scale_arcsec"] == 0.06
    assert ckpt["model"]["stamp_size"] == 64 and ckpt["model"]["num_outputs"] == 4
    model, scaler, norm, _ = load_model(run / "best.pt")
    assert scaler.names == ckpt["targets"] and norm.rms > 0
    assert model(torch.zeros(2, 1, 64, 64)).shape == (2, 4)


def test_single_target(train_config, tmp_path):
    train(train_config("target=re"), tmp_path / "run")
    ckpt = load(tmp_path / "run" / "last.pt")
    assert ckpt["targets"] == ["re"] and ckpt["label_scaler"]["transforms"] == ["log"]


def test_target_subset_and_resnet_and_nll(train_config, tmp_path):
    train(train_config("target=[n,re]", "model=resnet", "loss=gaussian_nll"), tmp_path / "run")
    ckpt = load(tmp_path / "run" / "last.pt")
    assert ckpt["targets"] == ["n", "re"] and ckpt["model"]["num_outputs"] == 4


def test_streaming_from_hdf5(train_config, tmp_path):
    best = train(train_config("data.max_memory_gb=0", "data.num_workers=0"), tmp_path / "run")
    assert math.isfinite(best)


@pytest.mark.parametrize("max_memory_gb", [100.0, 0.0], ids=["memory", "stream"])
def test_batches_of_two_folders_hold_both_splits_in_order(tiny_data, tmp_path, max_memory_gb):
    other = tmp_path / "other"
    shutil.copytree(tiny_data, other)
    with h5py.File(other / "train.h5", "r+") as f:  # tell the copies apart
        f["images"][...] = f["images"][()] + 1.0
        f["params/q"][...] = 0.5
    paths = split_paths([str(tiny_data), str(other)], "train")
    attrs = describe_splits(paths, ["q"])
    norm = ImageNorm(rms=attrs["background_rms_e_per_s"], softening=1.0)
    scaler = LabelScaler.fit(["q"], compose_config("train").labels, {"q": np.array([0.2, 0.9])})
    data_cfg = OmegaConf.create({"max_memory_gb": max_memory_gb, "num_workers": 0})
    batches = make_batches(paths, attrs, norm, scaler, 8, torch.device("cpu"), data_cfg)
    images, labels = map(torch.cat, zip(*batches.iterate(None), strict=True))
    assert attrs["n_images"] == len(images) == 64
    expected = torch.cat([load_images([p], norm, torch.device("cpu")) for p in paths])
    torch.testing.assert_close(images, expected)
    q, _ = scaler.decode(labels.numpy())
    assert not np.allclose(q[:32, 0], 0.5) and np.allclose(q[32:, 0], 0.5)


def test_train_on_a_list_of_folders(train_config, tiny_data, tmp_path, caplog):
    other = tmp_path / "other"
    shutil.copytree(tiny_data, other)
    caplog.set_level("INFO", logger="fitnet.training")
    train(train_config(f"data_dir=[{tiny_data},{other}]"), tmp_path / "run")
    assert "64 train / 8 val stamps" in caplog.text
    config = OmegaConf.create(load(tmp_path / "run" / "best.pt")["config"])
    assert list(config.data_dir) == [str(tiny_data), str(other)]


def test_folders_of_other_instruments_raise(train_config, tiny_data, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(tiny_data, other)
    with h5py.File(other / "train.h5", "r+") as f:
        f.attrs["pixel_scale_arcsec"] = 0.1
    with pytest.raises(DataError, match=r"differ in pixel_scale_arcsec: 0\.06 vs 0\.1"):
        train(train_config(f"data_dir=[{tiny_data},{other}]"), tmp_path / "run")


def test_empty_folder_list_raises(train_config, tmp_path):
    with pytest.raises(DataError, match=r"data_dir=\[\] names no folder"):
        train(train_config("data_dir=[]"), tmp_path / "run")


def test_resume_continues_exactly(train_config, tmp_path, monkeypatch):
    straight = tmp_path / "straight"
    train(train_config("epochs=2", "scheduler=cosine"), straight)

    killed = tmp_path / "killed"
    train_killed_in_second_epoch(train_config("epochs=2"), killed, monkeypatch)
    assert load(killed / "last.pt")["epoch"] == 1

    resumed = tmp_path / "resumed"
    train(train_config("epochs=2", f"resume={killed / 'last.pt'}"), resumed)
    a, b = load(straight / "last.pt"), load(resumed / "last.pt")
    assert b["epoch"] == 2 and len(b["history"]) == 2
    for key, value in a["model"]["state_dict"].items():
        assert torch.equal(value, b["model"]["state_dict"][key]), key


def test_multirun_of_two_targets(tiny_data, tmp_path):
    from conftest import TINY_TRAIN

    result = run_module(
        "fitnet.train",
        "-m",
        "target=mag,q",
        f"data_dir={tiny_data}",
        *TINY_TRAIN,
        cwd=tmp_path,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    ckpts = sorted((tmp_path / "outputs").glob("train-multirun/*/*/*/best.pt"))
    assert len(ckpts) == 2
    assert sorted(load(c)["targets"][0] for c in ckpts) == ["mag", "q"]


def test_init_from_starts_from_weights_scaler_and_norm(train_config, tmp_path):
    train(train_config("loss=gaussian_nll"), tmp_path / "first")
    first = load(tmp_path / "first" / "last.pt")
    # A changed image_norm option must not matter: the weights come with their own norm.
    cfg = train_config(
        "loss=gaussian_nll",
        "epochs=1",
        "image_norm.softening=3.0",
        f"init_from={tmp_path / 'first' / 'last.pt'}",
        "optim.lr=0.0",
    )
    train(cfg, tmp_path / "second")
    second = load(tmp_path / "second" / "last.pt")
    assert second["epoch"] == 1 and second["image_norm"] == first["image_norm"]
    assert second["label_scaler"] == first["label_scaler"]
    for key, value in first["model"]["state_dict"].items():  # lr 0: weights unchanged
        assert torch.equal(value, second["model"]["state_dict"][key]), key


def test_init_from_with_other_targets_raises(train_config, tmp_path):
    train(train_config("target=mag"), tmp_path / "first")
    with pytest.raises(TrainConfigError, match=r"init_from: checkpoint has targets \['mag'\]"):
        train(train_config(f"init_from={tmp_path / 'first' / 'last.pt'}"), tmp_path / "run")


def test_init_from_and_resume_together_raise(train_config, tmp_path):
    with pytest.raises(TrainConfigError, match=r"resume and init_from are both set"):
        train(train_config("resume=a.pt", "init_from=b.pt"), tmp_path / "run")


def test_beta_nll_weights_terms_by_sigma_and_keeps_value_at_unit_sigma():
    out = torch.tensor([[0.0, 0.0], [0.0, math.log(2.0)]])  # mean 0; sigma 1 and 2
    y = torch.tensor([[1.0], [1.0]])
    plain = train_module.loss_value(out, y, "gaussian_nll")
    beta = train_module.loss_value(out, y, "gaussian_nll", nll_beta=0.5)
    nll2 = math.log(2.0) + 0.5 * 0.25
    assert plain.item() == pytest.approx((0.5 + nll2) / 2)
    assert beta.item() == pytest.approx((0.5 + 2.0 * nll2) / 2)  # sigma^(2*0.5) = 2


@pytest.mark.parametrize(
    ("override", "error", "match"),
    [
        ("target=pa", TargetError, r"target='pa' does not exist: choose from mag, n, re, q"),
        ("target=[n,n]", TargetError, r"names a label twice"),
        ("loss=huber", TrainConfigError, r"loss='huber' is not allowed"),
        ("device=tpu", UserError, r"device='tpu' is not allowed"),
        ("epochs=0", TrainConfigError, r"epochs=0 is not allowed"),
        ("labels.re=sqrt", TargetError, r"labels\.re='sqrt' is not a transform"),
        ("nll_beta=2", TrainConfigError, r"nll_beta=2 is not allowed: must be in \[0, 1\]"),
        ("calibration.mag_edges=[22,20]", TargetError, r"must be strictly increasing"),
        ("cache_views=0", TrainConfigError, r"cache_views=0 must be >= 1"),
    ],
)
def test_bad_options_raise(train_config, tmp_path, override, error, match):
    with pytest.raises(error, match=match):
        train(train_config(override), tmp_path / "run")


def test_missing_data_raises(train_config, tmp_path):
    with pytest.raises(DataError, match=r"train\.h5 does not exist.*python -m simulate"):
        train(train_config(f"data_dir={tmp_path / 'nowhere'}"), tmp_path / "run")


def test_malformed_data_raises(train_config, tiny_data, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    for split in ("train", "val"):
        with h5py.File(bad / f"{split}.h5", "w") as f:
            f["pixels"] = np.zeros((4, 8, 8))
    with pytest.raises(DataError, match=r"has no /images dataset"):
        train(train_config(f"data_dir={bad}"), tmp_path / "run")


def test_resume_with_other_stamp_size_raises(train_config, tiny_data, tmp_path):
    train(train_config(), tmp_path / "first")
    ckpt = load(tmp_path / "first" / "last.pt")
    ckpt["model"]["stamp_size"] = 128
    torch.save(ckpt, tmp_path / "other.pt")
    with pytest.raises(DataError, match=r"checkpoint expects 128 px stamps, the data has 64"):
        train(train_config(f"resume={tmp_path / 'other.pt'}"), tmp_path / "run")


def test_not_a_checkpoint_raises(tmp_path):
    (tmp_path / "x.pt").write_text("hello")
    with pytest.raises(CheckpointError, match=r"x\.pt is not a readable PyTorch checkpoint"):
        load(tmp_path / "x.pt")


def test_dihedral_keeps_pixels_and_covers_all_symmetries():
    x = torch.arange(16.0).reshape(1, 1, 4, 4).repeat(64, 1, 1, 1)
    out = dihedral(x, torch.Generator().manual_seed(0))
    assert torch.equal(out.flatten(1).sort(dim=1).values, x.flatten(1).sort(dim=1).values)
    assert len({tuple(o.flatten().tolist()) for o in out}) == 8


def test_label_scaler_round_trip():
    labels = {"mag": np.array([19.0, 22.0, 24.5]), "re": np.array([0.1, 0.5, 1.9])}
    scaler = LabelScaler.fit(["mag", "re"], {"mag": "identity", "re": "log"}, labels)
    z = scaler.encode(labels)
    assert np.allclose(z.mean(axis=0), 0, atol=1e-6) and np.allclose(z.std(axis=0), 1, atol=1e-5)
    back, _ = scaler.decode(z)
    assert np.allclose(back, np.stack([labels["mag"], labels["re"]], axis=1), rtol=1e-5)


def test_parse_targets():
    assert parse_targets("all") == ["mag", "n", "re", "q"]
    assert parse_targets(["q", "mag"]) == ["q", "mag"]


def test_full_cpu_experiment_composes():
    from conftest import compose_config

    cfg = compose_config("train", ["experiment=full_cpu"])
    assert cfg.epochs == 3 and cfg.target == "all" and cfg.loss == "gaussian_nll"
    assert cfg.optim._target_ == "torch.optim.AdamW"


def test_optuna_experiment_composes():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    from conftest import CONF
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=optuna"], return_hydra_config=True)
    assert "optuna" in cfg.hydra.sweeper._target_.lower()
    assert "optim.lr" in cfg.hydra.sweeper.params


def test_calibration_scale_makes_68_percent_intervals():
    rng = np.random.default_rng(0)
    true_sigma = np.array([0.5, 2.0])
    z_true = rng.normal(0, true_sigma, size=(20000, 2))
    # the network predicts 0 with sigma 1; the true errors have sigma 0.5 and 2
    scale = calibration_scale(z_true)
    assert scale == pytest.approx(true_sigma, rel=0.03)


def test_nll_training_stores_sigma_calibration(train_config, tmp_path):
    train(train_config("loss=gaussian_nll", "target=[mag,q]"), tmp_path / "run")
    ckpt = load(tmp_path / "run" / "last.pt")
    scale = np.array(ckpt["label_scaler"]["sigma_scale"])
    assert scale.shape == (7, 2) and np.all(scale > 0)  # 6 edges; tiny bins take the overall one
    row = next(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert float(row["q_sigma_scale"]) == pytest.approx(scale[0, 1])
    scaler = LabelScaler.from_state(ckpt["label_scaler"])
    _, sigma = scaler.decode(np.zeros((1, 2)), np.ones((1, 2)))
    assert sigma[0, 1] == pytest.approx(scale[0, 1] * scaler.std[1])


def test_calibration_per_predicted_magnitude_bin():
    rng = np.random.default_rng(1)
    mag = rng.uniform(18, 25, 20000)
    true_sigma = np.where(mag < 21, 0.5, 2.0)  # bright sigmas too large, faint too small
    z_true = rng.normal(0, true_sigma)[:, None]
    scale = calibration_scale(z_true, mag, [21])
    assert scale[:, 0] == pytest.approx([0.5, 2.0], rel=0.05)
    scaler = LabelScaler(["mag"], ["identity"], np.zeros(1), np.ones(1), scale, [21.0])
    _, sigma = scaler.decode(np.array([[19.0], [23.0]]), np.ones((2, 1)))
    assert sigma[:, 0] == pytest.approx(scale[:, 0])


def test_full_cpu_stage2_experiment_composes():
    from conftest import compose_config

    cfg = compose_config("train", ["experiment=full_cpu_stage2", "init_from=x.pt"])
    assert cfg.loss == "gaussian_nll" and cfg.nll_beta == 0.5 and cfg.init_from == "x.pt"
    assert cfg.optim._target_ == "torch.optim.AdamW" and cfg.optim.lr == 5.0e-4


def test_full_cpu_stage3_experiment_composes():
    from conftest import compose_config

    cfg = compose_config("train", ["experiment=full_cpu_stage3", "init_from=x.pt"])
    assert cfg.loss == "gaussian_nll" and cfg.nll_beta == 0.5 and cfg.epochs == 12
    assert cfg.optim._target_ == "torch.optim.AdamW" and cfg.optim.lr == 3.0e-4


@pytest.mark.parametrize(("amp_cpu", "dtype"), [(False, torch.float32), (True, torch.bfloat16)])
def test_cpu_runs_bf16_only_with_amp_cpu(amp_cpu, dtype):
    from conftest import compose_config

    cfg = compose_config("train", [f"amp_cpu={amp_cpu}"])
    layer = torch.nn.Linear(4, 2)
    with compute.autocast(torch.device("cpu"), cfg):
        assert layer(torch.ones(1, 4)).dtype == dtype


def test_bf16_cpu_training_run_is_finite(train_config, tmp_path):
    best = train(train_config("amp_cpu=true", "loss=gaussian_nll"), tmp_path / "run")
    assert math.isfinite(best)


def same_weights(a, b) -> None:
    a, b = load(a)["model"]["state_dict"], load(b)["model"]["state_dict"]
    for key, value in a.items():
        assert torch.equal(value, b[key]), key


def refine_overrides(tmp_path, *extra) -> list[str]:
    """Two refiner epochs on the network that ``train_config("loss=gaussian_nll")`` trained into
    tmp_path/first."""
    return [
        "experiment=refine_photometry",
        "epochs=2",
        f"init_from={tmp_path / 'first' / 'last.pt'}",
        *extra,
    ]


def test_refine_photometry_wraps_the_init_from_network(train_config, tmp_path):
    train(train_config("loss=gaussian_nll"), tmp_path / "first")
    first = load(tmp_path / "first" / "last.pt")
    cfg = train_config(
        "experiment=refine_photometry", "epochs=1", f"init_from={tmp_path / 'first' / 'last.pt'}"
    )
    assert cfg.model.freeze_network and cfg.nll_beta == 0.0
    train(cfg, tmp_path / "second")
    second = load(tmp_path / "second" / "last.pt")
    assert second["model"]["config"]["network"] == first["model"]["config"]
    weights = second["model"]["state_dict"]
    for key, value in first["model"]["state_dict"].items():  # frozen: unchanged
        assert torch.equal(value, weights[f"network.{key}"]), key
    assert weights["refine.4.weight"].abs().sum() > 0  # the refiner learned (it starts at zero)
    model, _, norm, _ = load_model(tmp_path / "second" / "last.pt")
    assert model.image_norm.tolist() == pytest.approx([norm.softening, norm.mean, norm.std])
    assert torch.isfinite(model.feature_std).all() and (model.feature_std > 0).all()


def test_cached_refiner_training_equals_training_on_stamps(train_config, tmp_path):
    """With the network frozen, training on cached encodings is the same computation."""
    train(train_config("loss=gaussian_nll"), tmp_path / "first")
    runs = {}
    for cache in ("true", "false"):
        cfg = train_config(
            *refine_overrides(
                tmp_path,
                "augment=false",  # one view: the cache holds the stamps as they are
                "cache_views=1",
                f"cache_frozen={cache}",
            )
        )
        runs[cache] = train(cfg, tmp_path / cache), load(tmp_path / cache / "last.pt")
    (cached_best, cached), (plain_best, plain) = runs["true"], runs["false"]
    assert cached_best == pytest.approx(plain_best, abs=1e-5)
    for key, value in plain["model"]["state_dict"].items():
        torch.testing.assert_close(cached["model"]["state_dict"][key], value, rtol=1e-4, atol=1e-5)


def test_resumed_cached_refiner_run_continues_exactly(train_config, tmp_path, monkeypatch):
    train(train_config("loss=gaussian_nll"), tmp_path / "first")
    refine = ["experiment=refine_photometry", "epochs=2"]
    start = f"init_from={tmp_path / 'first' / 'last.pt'}"
    train(train_config(*refine, start), tmp_path / "straight")
    train_killed_in_second_epoch(train_config(*refine, start), tmp_path / "killed", monkeypatch)
    train(train_config(*refine, f"resume={tmp_path / 'killed' / 'last.pt'}"), tmp_path / "resumed")
    a, b = load(tmp_path / "straight" / "last.pt"), load(tmp_path / "resumed" / "last.pt")
    assert b["epoch"] == 2
    for key, value in a["model"]["state_dict"].items():
        assert torch.equal(value, b["model"]["state_dict"][key]), key


def test_saved_refiner_cache_is_loaded_by_the_next_run(train_config, tmp_path, monkeypatch):
    train(train_config("loss=gaussian_nll"), tmp_path / "first")
    refine = refine_overrides(tmp_path, f"cache_dir={tmp_path / 'cache'}")
    train(train_config(*refine), tmp_path / "computed")
    assert len(list((tmp_path / "cache").glob("refiner-part-*.pt"))) == 2  # train, val
    computed = counted(monkeypatch, caching, "encode_views")
    train(train_config(*refine), tmp_path / "loaded")
    assert computed == []
    same_weights(tmp_path / "computed" / "last.pt", tmp_path / "loaded" / "last.pt")


def test_refiner_run_killed_while_caching_resumes_at_its_file(train_config, tmp_path, monkeypatch):
    train(train_config("loss=gaussian_nll"), tmp_path / "first")
    refine = refine_overrides(tmp_path)
    train(train_config(*refine), tmp_path / "straight")  # no cache_dir: nothing saved
    cache = f"cache_dir={tmp_path / 'cache'}"
    with interrupted(monkeypatch, caching, "encode_views", at=2):  # the validation file's part
        train(train_config(*refine, cache), tmp_path / "killed")
    computed = counted(monkeypatch, caching, "encode_views")
    train(train_config(*refine, cache), tmp_path / "resumed")
    assert len(computed) == 1  # the training file's part was saved before the interruption
    same_weights(tmp_path / "straight" / "last.pt", tmp_path / "resumed" / "last.pt")


def test_refiner_cache_with_one_more_data_folder_computes_only_its_files(
    train_config, tiny_data, tmp_path, monkeypatch
):
    """The new folder's views follow the generator state saved with the folder before it, so
    the run equals one that computed everything."""
    train(train_config("loss=gaussian_nll"), tmp_path / "first")
    shutil.copytree(tiny_data, tmp_path / "more")
    refine = refine_overrides(tmp_path)
    both = f"data_dir=[{tiny_data},{tmp_path / 'more'}]"
    train(train_config(*refine, both), tmp_path / "straight")
    cache = f"cache_dir={tmp_path / 'cache'}"
    train(train_config(*refine, cache), tmp_path / "one")
    computed = counted(monkeypatch, caching, "encode_views")
    train(train_config(*refine, cache, both), tmp_path / "two")
    assert len(computed) == 2  # the new folder's train and val files
    same_weights(tmp_path / "straight" / "last.pt", tmp_path / "two" / "last.pt")


def test_refiner_cache_of_other_views_is_not_loaded(train_config, tmp_path):
    train(train_config("loss=gaussian_nll"), tmp_path / "first")
    for views in (1, 2):
        cfg = train_config(
            *refine_overrides(tmp_path, f"cache_views={views}", f"cache_dir={tmp_path}")
        )
        train(cfg, tmp_path / f"views{views}")
    saved = [torch.load(p, weights_only=True) for p in tmp_path.glob("refiner-part-*.pt")]
    parts = [(s["encoded"].shape[:2], json.loads(s["inputs"])) for s in saved]
    views = sorted(
        (tuple(shape), inputs["views"]) for shape, inputs in parts if inputs["split"] == "train"
    )
    assert views == [((1, 32), 1), ((2, 32), 2)]  # and each part says what its key was made of


def test_refiner_of_another_seed_loads_the_cache_of_its_cache_seed(
    train_config, tmp_path, monkeypatch
):
    train(train_config("loss=gaussian_nll"), tmp_path / "first")
    cache = f"cache_dir={tmp_path / 'cache'}"
    train(train_config(*refine_overrides(tmp_path, cache)), tmp_path / "seed0")
    computed = counted(monkeypatch, caching, "encode_views")
    train(
        train_config(*refine_overrides(tmp_path, cache, "seed=1", "cache_seed=0")), tmp_path / "s1"
    )
    assert computed == []
    a, b = load(tmp_path / "seed0" / "last.pt"), load(tmp_path / "s1" / "last.pt")
    assert not torch.equal(
        a["model"]["state_dict"]["refine.0.weight"], b["model"]["state_dict"]["refine.0.weight"]
    )


def test_cache_seed_must_be_an_integer(train_config, tmp_path):
    with pytest.raises(TrainConfigError, match=r"cache_seed='abc' must be an integer or null"):
        train(train_config("cache_seed=abc"), tmp_path / "run")


def test_a_bounded_head_keeps_any_prediction_inside_the_prior(train_config, tmp_path):
    train(train_config("bounded_head=true", "head_margin=0.05"), tmp_path / "run")
    model, scaler, norm, payload = load_model(tmp_path / "run" / "last.pt")
    assert isinstance(model, BoundedOutputs) and len(payload["output_bounds"]) == 4
    extreme = torch.cat([torch.full((1, 1, 64, 64), v) for v in (-1e4, 0.0, 1e2, 1e4)])
    with torch.no_grad():
        out = model(norm(extreme)).numpy()
    pred, _ = scaler.decode(out[:, : len(scaler.names)])
    for j, name in enumerate(scaler.names):
        lo, hi = payload["prior"][name]
        f = np.log if scaler.transforms[j] == "log" else (lambda v: v)
        reach = 0.05 * (f(hi) - f(lo)) + 1e-5
        assert np.all((f(pred[:, j]) >= f(lo) - reach) & (f(pred[:, j]) <= f(hi) + reach)), name
    assert np.all(pred[:, scaler.names.index("q")] <= 1.0)


def test_an_unbounded_head_is_recorded_as_such(train_config, tmp_path):
    train(train_config("bounded_head=false"), tmp_path / "run")
    model, _, _, payload = load_model(tmp_path / "run" / "last.pt")
    assert payload["output_bounds"] is None and not isinstance(model, BoundedOutputs)


def test_the_progress_bar_follows_the_epochs_running_loss(train_config, tmp_path, monkeypatch):
    shown = []

    class Bar:
        def __init__(self, iterable, **kwargs):
            self.iterable = iterable

        def __iter__(self):
            return iter(self.iterable)

        def set_postfix(self, **values):
            shown.append(values["loss"])

    monkeypatch.setattr(train_module, "tqdm", Bar)
    train(train_config("progress=true"), tmp_path / "run")
    assert len(shown) >= 4 and len(set(shown)) > 1  # 32 stamps in batches of 8: every batch
