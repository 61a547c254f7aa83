"""python -m fitnet.build: simulate, train, refine, calibrate, evaluate and package in one
resumable pipeline (a tiny budget)."""

from __future__ import annotations

import json

import pytest
from conftest import TINY_SIM, compose_config, counted, run_module

from fitnet import build, training
from fitnet.checkpoint import load

#: The simulate overrides of TINY_SIM that are not the prior's (the build sets its prior).
SIM = [o for o in TINY_SIM if not o.startswith(("n=", "prior."))]
PRIOR = [o for o in TINY_SIM if o.startswith("prior.")]


def tiny_build(out, *extra):
    return compose_config(
        "build",
        [f"out_dir={out}", "budget.galaxies=40", "budget.epochs=[1,1]",
         "stages=[full_cpu,full_cpu_stage2]", "budget.refine_galaxies=60",
         "budget.refine_epochs=2", "budget.calibrate_galaxies=30", "progress=false",
         f"simulate_overrides=[{','.join(repr(o) for o in SIM)}]",
         "train_overrides=['batch_size=8','device=cpu']",
         *PRIOR, *extra],
    )  # fmt: skip


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("build") / "candels"
    model = build.run(tiny_build(out))
    return out, model


def test_a_build_packages_a_calibrated_model_with_its_card(built):
    out, model = built
    assert model == out / "candels_h.pt" and model.is_file()
    payload = load(model)
    assert "calibration" in payload and "optimizer" not in payload
    steps = json.loads((out / "build.json").read_text())["steps"]
    assert list(steps) == [
        "simulate-network", "simulate-refine", "simulate-calibrate", "train-1", "train-2",
        "refine", "calibrate", "evaluate", "package",
    ]  # fmt: skip
    card = (out / "MODEL.md").read_text()
    assert "## Accuracy on the test split" in card and "candels_h" in card


def test_a_finished_build_run_again_does_nothing(built, monkeypatch):
    out, _ = built
    before = (out / "build.json").read_text()
    calls = counted(monkeypatch, training, "train")
    build.run(tiny_build(out))
    assert calls == [] and (out / "build.json").read_text() == before


def test_a_folder_with_another_build_is_refused(built):
    out, _ = built
    with pytest.raises(build.BuildError, match=r"another configuration .*budget\.galaxies"):
        build.run(tiny_build(out, "budget.galaxies=50"))


def test_a_killed_training_stage_resumes_from_its_last_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "b"
    cfg = tiny_build(out, "budget.refine_galaxies=0", "budget.calibrate_galaxies=0",
                     "budget.epochs=[2,1]")  # fmt: skip
    with monkeypatch.context() as m:
        counted(m, training, "fit_epoch", interrupt_at=2)  # Ctrl-C in the first stage's 2nd epoch
        with pytest.raises(KeyboardInterrupt):
            build.run(cfg)
    assert (out / "train" / "1-full_cpu" / "last.pt").is_file()
    calls = counted(monkeypatch, training, "fit_epoch")
    build.run(cfg)
    assert len(calls) == 2  # the first stage's second epoch, the second stage's one
    assert load(out / "train" / "1-full_cpu" / "last.pt")["epoch"] == 2


def test_the_time_budget_ends_a_stage_after_an_epoch_and_skips_the_next(tmp_path):
    out = tmp_path / "b"
    cfg = tiny_build(out, "budget.refine_galaxies=0", "budget.calibrate_galaxies=0",
                     "budget.epochs=[3,2]", "budget.hours=0.00001")  # fmt: skip
    build.run(cfg)
    steps = json.loads((out / "build.json").read_text())["steps"]
    assert load(out / "train" / "1-full_cpu" / "last.pt")["epoch"] == 1
    assert steps["train-2"]["skipped"] == "budget.hours spent"


def test_epochs_must_match_the_stages(tmp_path):
    with pytest.raises(build.BuildError, match=r"budget\.epochs=\[1\] .* one integer >= 1 per"):
        build.validate(tiny_build(tmp_path, "budget.epochs=[1]"))


def test_an_unknown_experiment_is_refused(tmp_path):
    with pytest.raises(build.BuildError, match=r"experiment 'nope' is not in conf/experiment"):
        build.validate(tiny_build(tmp_path, "stages=[nope,full_cpu]"))


def test_a_bad_simulation_value_is_refused_before_any_work(tmp_path):
    with pytest.raises(build.BuildError, match=r"network set .*prior\.q\.max=1\.5 is not allowed"):
        build.validate(tiny_build(tmp_path, "prior.q.max=1.5"))
    assert not (tmp_path / "data").exists()


def test_the_command_prints_one_line_for_a_bad_option(tmp_path):
    result = run_module("fitnet.build", f"out_dir={tmp_path}", "budget.refine_galaxies=-1",
                        cwd=tmp_path)  # fmt: skip
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        .splitlines()[-1]
        .startswith("error: budget.refine_galaxies=-1 is not allowed")
    )


def test_out_of_time_counts_the_next_epoch():
    import time

    now = time.monotonic()
    assert not training.out_of_time(None, now - 1e6, {"seconds": 1e6})
    assert training.out_of_time(1.0, now - 30, {"seconds": 40})  # 30 s + 40 s > 60 s
    assert not training.out_of_time(1.0, now - 10, {"seconds": 20})
