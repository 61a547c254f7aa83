"""Shared fixtures: the real Hydra configs, composed with tiny overrides."""

from __future__ import annotations

import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import h5py
import pytest
from hydra import compose, initialize_config_dir

from sersic_runtime.configs import config_dir
from simulate.priors import FIT_LABELS

#: The configs as the installed package has them (the repository's conf/).
CONF = config_dir()

#: Small but complete simulations: 64 x 64 stamps, a coarse n grid, one process.
TINY_SIM = [
    "n=30",
    "workers=1",
    "montage=4",
    "render.stamp_size=64",
    "render.fft_size=128",
    "render.n_grid_points=10",
    "render.block_size=8",
    "prior.size.min=40",
    "prior.size.max=90",
    "prior.re.max=0.6",
]


def run_module(module: str, *args, cwd, timeout=300, env=None) -> subprocess.CompletedProcess:
    """``python -m module args...`` in ``cwd``, as a user runs it; output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def compose_config(name: str, overrides=()) -> object:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(name, overrides=list(overrides))


def other_simulators_copy(source: Path, path: Path, **attrs) -> Path:
    """``source``'s images and fitted labels in a file as another simulator might write it:
    /images and /params/<label> only, with ``attrs`` (its own names) on the root."""
    with h5py.File(source) as src, h5py.File(path, "w") as dst:
        dst["images"] = src["images"][()]
        for name in FIT_LABELS:
            dst[f"params/{name}"] = src["params"][name][()]
        dst.attrs.update(attrs)
    return path


def read_params(path: Path, names=None) -> dict:
    """The /params columns (all, or ``names``) of a split file as numpy arrays."""
    with h5py.File(path, "r") as f:
        group = f["params"]
        return {name: group[name][()] for name in (names or list(group))}


def counted(monkeypatch, owner, name: str, interrupt_at: int | None = None) -> list:
    """Wrap ``owner.name`` (for the rest of the test, or of a ``monkeypatch.context()``) so
    that each call appends its arguments to the returned list; call number ``interrupt_at``
    (1-based) raises KeyboardInterrupt instead, as a user's Ctrl-C would."""
    real, calls = getattr(owner, name), []

    def wrapper(*args, **kwargs):
        calls.append(args)
        if len(calls) == interrupt_at:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)
    return calls


@contextmanager
def interrupted(monkeypatch, owner, name: str, at: int):
    """A block that must end in the KeyboardInterrupt of call ``at`` of ``owner.name``; the
    original is back after it."""
    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        counted(patch, owner, name, interrupt_at=at)
        yield


def train_killed_in_second_epoch(cfg, output_dir, monkeypatch) -> None:
    """Run ``train`` and interrupt it (KeyboardInterrupt) as its second epoch starts."""
    from fitnet import train, training

    with interrupted(monkeypatch, training, "_train_epoch", at=2):
        train.run(cfg, output_dir)


@pytest.fixture
def sim_config(tmp_path):
    """Compose conf/simulate.yaml with TINY_SIM, writing into tmp_path, plus extra overrides."""

    def make(*overrides, out_dir=None):
        out = out_dir or tmp_path / "data"
        return compose_config("simulate", [*TINY_SIM, f"out_dir={out}", *overrides])

    return make


#: Training runs that take seconds on a CPU: one epoch, small batches, no progress bar.
TINY_TRAIN = [
    "epochs=1",
    "batch_size=8",
    "device=cpu",
    "progress=false",
    "image_norm.stats_images=16",
    "data.eval_batch_size=16",
]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory):
    """A 40-galaxy data set of 64 x 64 stamps (train/val/test = 32/4/4), made once per session."""
    from simulate.pipeline import run_simulation

    out = tmp_path_factory.mktemp("tiny") / "data"
    cfg = compose_config("simulate", [*TINY_SIM, "n=40", "montage=0", f"out_dir={out}"])
    run_simulation(cfg, progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_noiseless_data(tmp_path_factory):
    """The tiny data set of ``tiny_data`` with /noiseless stamps too (fresh_noise=true)."""
    from simulate.pipeline import run_simulation

    out = tmp_path_factory.mktemp("tiny_noiseless") / "data"
    overrides = [*TINY_SIM, "n=40", "montage=0", "noiseless=true", f"out_dir={out}"]
    run_simulation(compose_config("simulate", overrides), progress=False)
    return out


@pytest.fixture
def train_config(tiny_data, tmp_path):
    """Compose conf/train.yaml on the tiny data set, writing into tmp_path/run."""

    def make(*overrides):
        return compose_config(
            "train",
            [*TINY_TRAIN, f"data_dir={tiny_data}", f"output_dir={tmp_path / 'run'}", *overrides],
        )

    return make


@pytest.fixture(scope="session")
def tiny_ckpt(tiny_data, tmp_path_factory):
    """A checkpoint trained for one epoch on the tiny data set (all four targets)."""
    from fitnet.train import run as train

    out = tmp_path_factory.mktemp("tiny_run")
    train(compose_config("train", [*TINY_TRAIN, f"data_dir={tiny_data}", f"output_dir={out}"]), out)
    return out / "best.pt"
