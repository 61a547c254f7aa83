"""Sharded simulation: ``shards=K shard=i`` jobs render their blocks; a run without ``shard``
assembles files identical to an unsharded run."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from conftest import TINY_SIM, run_module

from sersic_runtime.errors import UserError
from simulate.io import SPLITS
from simulate.pipeline import run_simulation


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def same_files(a: Path, b: Path) -> bool:
    return all(digest(a / f"{s}.h5") == digest(b / f"{s}.h5") for s in SPLITS)


@pytest.fixture
def reference(sim_config, tmp_path) -> Path:
    out = tmp_path / "reference"
    run_simulation(sim_config("montage=0", out_dir=out), progress=False)
    return out


def test_shards_then_assembly_equal_an_unsharded_run(sim_config, tmp_path, reference):
    out = tmp_path / "sharded"
    rendered = [
        run_simulation(sim_config("montage=0", "shards=3", f"shard={i}", out_dir=out),
                       progress=False)["galaxies"]
        for i in range(3)
    ]  # fmt: skip
    assert sum(rendered) == 30 and min(rendered) > 0
    assert not any((out / f"{s}.h5").exists() for s in SPLITS)  # a shard does not assemble
    summary = run_simulation(sim_config("montage=0", "shards=3", out_dir=out), progress=False)
    assert summary["galaxies"] == 0
    assert same_files(out, reference)


def test_assembly_renders_what_the_missing_shards_left(sim_config, tmp_path, reference):
    out = tmp_path / "sharded"
    first = run_simulation(sim_config("montage=0", "shards=2", "shard=0", out_dir=out),
                           progress=False)  # fmt: skip
    summary = run_simulation(sim_config("montage=0", out_dir=out), progress=False)
    assert summary["galaxies"] == 30 - first["galaxies"]
    assert same_files(out, reference)


def test_a_rerun_shard_renders_nothing(sim_config, tmp_path):
    out = tmp_path / "sharded"
    run_simulation(sim_config("montage=0", "shards=2", "shard=1", out_dir=out), progress=False)
    again = run_simulation(sim_config("montage=0", "shards=2", "shard=1", out_dir=out),
                           progress=False)  # fmt: skip
    assert again["galaxies"] == 0


@pytest.mark.parametrize("shard", ["-1", "3"])
def test_shard_outside_its_range_is_refused(sim_config, shard):
    with pytest.raises(
        UserError, match=rf"shard={shard} is not allowed: must lie in \[0, shards=3\)"
    ):
        run_simulation(sim_config("shards=3", f"shard={shard}"), progress=False)


def test_shards_below_one_is_refused(sim_config):
    with pytest.raises(UserError, match="shards=0 is not allowed"):
        run_simulation(sim_config("shards=0"), progress=False)


def test_shards_with_another_shard_count_are_refused(sim_config, tmp_path):
    out = tmp_path / "sharded"
    run_simulation(sim_config("montage=0", "shards=2", "shard=0", out_dir=out), progress=False)
    with pytest.raises(FileExistsError, match="shards=3 is not allowed: .* shards=2 jobs"):
        run_simulation(sim_config("montage=0", "shards=3", "shard=1", out_dir=out),
                       progress=False)  # fmt: skip


def test_parts_of_another_configuration_are_refused(sim_config, tmp_path, reference):
    out = tmp_path / "sharded"
    run_simulation(sim_config("montage=0", "seed=9", "shards=2", "shard=0", out_dir=out),
                   progress=False)  # fmt: skip
    with pytest.raises(FileExistsError, match="parts of a run with another configuration"):
        run_simulation(sim_config("montage=0", "shards=2", "shard=1", out_dir=out),
                       progress=False)  # fmt: skip
    run_simulation(sim_config("montage=0", "overwrite=true", out_dir=out), progress=False)
    assert same_files(out, reference) and len(list(out.glob(".parts-*"))) == 0


def test_shards_as_a_submitit_multirun_equal_an_unsharded_run(tmp_path, reference):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    out = tmp_path / "sharded"
    common = [*TINY_SIM, "montage=0", f"out_dir={out}", "shards=2"]
    result = run_module("simulate", "-m", "hydra/launcher=submitit_local", "shard=0,1", *common,
                        cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(list(out.glob(".parts-*/*.npz"))) > 0
    result = run_module("simulate", *common, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert same_files(out, reference)
