"""Prediction at scale: a folder run (one catalogue per input, shards) and fitnet.merge."""

from __future__ import annotations

import shutil

import h5py
import pytest
from astropy.table import Table
from conftest import run_module

SPLITS = ("train", "val", "test")


@pytest.fixture
def inputs(tiny_data, tmp_path):
    """The tiny data set's three splits as three inputs, tiles/{train,val,test}.h5."""
    folder = tmp_path / "tiles"
    folder.mkdir()
    for split in SPLITS:
        shutil.copy(tiny_data / f"{split}.h5", folder / f"{split}.h5")
    return folder


def predict(ckpt, cwd, *args):
    return run_module("fitnet.predict", *args, f"ckpt={ckpt}", "progress=false", cwd=cwd)


def rows(path) -> int:
    with h5py.File(path) as f:
        return len(f["images"])


def test_shards_write_one_catalogue_per_input_and_merge_joins_them(tiny_ckpt, inputs, tmp_path):
    cats = tmp_path / "cats"
    for shard in (0, 1):
        result = predict(tiny_ckpt, tmp_path, f"input={inputs}/*.h5", f"output={cats}/",
                         "shards=2", f"shard={shard}")  # fmt: skip
        assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in cats.glob("*.ecsv")) == ["test.ecsv", "train.ecsv", "val.ecsv"]
    result = run_module("fitnet.merge", f"input={cats}", f"output={tmp_path / 'all.fits'}",
                        cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    merged = Table.read(tmp_path / "all.fits")
    expected = [str(inputs / f"{s}.h5") for s in sorted(SPLITS)]  # the glob's order
    assert len(merged) == sum(rows(p) for p in expected)
    assert list(dict.fromkeys(merged["input"])) == expected
    assert str(merged["re"].unit) == "arcsec"


def test_a_rerun_measures_only_the_missing_inputs(tiny_ckpt, inputs, tmp_path):
    cats = tmp_path / "cats"
    assert predict(tiny_ckpt, tmp_path, f"input={inputs}/*.h5", f"output={cats}/").returncode == 0
    (cats / "val.ecsv").unlink()
    before = (cats / "test.ecsv").stat().st_mtime_ns
    assert predict(tiny_ckpt, tmp_path, f"input={inputs}/*.h5", f"output={cats}/").returncode == 0
    assert (cats / "val.ecsv").exists() and (cats / "test.ecsv").stat().st_mtime_ns == before


def test_shards_as_a_multirun(tiny_ckpt, inputs, tmp_path):
    cats = tmp_path / "cats"
    result = predict(tiny_ckpt, tmp_path, "-m", f"input={inputs}/*.h5", f"output={cats}/",
                     "shards=3", "shard=0,1,2")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(list(cats.glob("*.ecsv"))) == 3


def test_merge_refuses_a_folder_with_a_missing_catalogue(tiny_ckpt, inputs, tmp_path):
    cats = tmp_path / "cats"
    predict(tiny_ckpt, tmp_path, f"input={inputs}/*.h5", f"output={cats}/", "shards=3", "shard=0")
    result = run_module("fitnet.merge", f"input={cats}", f"output={tmp_path / 'all.fits'}",
                        cwd=tmp_path)  # fmt: skip
    assert result.returncode != 0
    assert "2 of 3 inputs have no catalogue" in result.stderr
    assert not (tmp_path / "all.fits").exists()


def test_merge_refuses_a_folder_without_a_manifest(tmp_path):
    result = run_module("fitnet.merge", f"input={tmp_path}", "output=all.fits", cwd=tmp_path)
    assert result.returncode != 0 and "has no inputs.json" in result.stderr


def test_inputs_of_the_same_name_are_refused(tiny_ckpt, inputs, tmp_path):
    (tmp_path / "other").mkdir()
    shutil.copy(inputs / "val.h5", tmp_path / "other" / "val.h5")
    result = predict(tiny_ckpt, tmp_path, f"input=[{inputs}/val.h5,{tmp_path}/other/val.h5]",
                     f"output={tmp_path}/cats/")  # fmt: skip
    assert result.returncode != 0 and "inputs share the name 'val'" in result.stderr


def test_a_map_per_input_must_match_the_inputs(tiny_ckpt, inputs, tmp_path):
    result = predict(tiny_ckpt, tmp_path, f"input={inputs}/*.h5", f"output={tmp_path}/cats/",
                     f"mask={inputs}/val.h5")  # fmt: skip
    assert result.returncode != 0
    assert "mask= names 1 file(s) for 3 input(s)" in result.stderr


def test_shard_without_a_folder_output_is_refused(tiny_ckpt, inputs, tmp_path):
    result = predict(tiny_ckpt, tmp_path, f"input={inputs}/val.h5", "output=x.csv", "shard=0")
    assert result.returncode != 0 and "shard=0 is for output= a folder" in result.stderr
