"""DDP training through torchrun on 2 CPU processes (gloo): the same steps as one process,
one checkpoint and one metrics file, resume, and refusals."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import TINY_TRAIN, run_module

from fitnet import checkpoint

#: The relative difference allowed between the losses of a 2-process and a 1-process epoch of
#: the same global batches: the two differ only in the order of float sums (the gradient mean
#: of 8 stamps against the mean of two means of 4).
TOLERANCE = 1e-3


def torchrun(*args, cwd, processes=2):
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc_per_node={processes}", "-m", "fitnet.train", *args],
        cwd=cwd, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def metrics(folder) -> list[dict]:
    with open(folder / "metrics.csv") as fh:
        return list(csv.DictReader(fh))


def common(data, out, *extra):
    return [*TINY_TRAIN, f"data_dir={data}", f"output_dir={out}", *extra]


def test_two_processes_take_the_steps_of_one(tiny_data, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    result = run_module("fitnet.train", *common(tiny_data, one, "epochs=2"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    result = torchrun(*common(tiny_data, two, "epochs=2"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for a, b in zip(metrics(one), metrics(two), strict=True):
        for key in ("train_loss", "val_loss"):
            assert float(b[key]) == pytest.approx(float(a[key]), rel=TOLERANCE), key


def test_rank_zero_writes_one_checkpoint_and_a_ddp_run_resumes(tiny_data, tmp_path):
    out = tmp_path / "run"
    result = torchrun(*common(tiny_data, out, "epochs=1"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir() if p.suffix in (".pt", ".csv")) == [
        "best.pt", "last.pt", "metrics.csv"]  # fmt: skip
    ckpt = checkpoint.load(out / "last.pt")
    assert ckpt["ddp_processes"] == 2
    assert not any(k.startswith("module.") for k in ckpt["model"]["state_dict"])
    result = torchrun(*common(tiny_data, out, "epochs=2", f"resume={out / 'last.pt'}"),
                      cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [row["epoch"] for row in metrics(out)] == ["1", "2"]
    assert torch.load(out / "last.pt", weights_only=True)["epoch"] == 2


def test_a_global_batch_that_does_not_divide_is_refused(tiny_data, tmp_path):
    result = torchrun(*common(tiny_data, tmp_path / "run", "batch_size=7"), cwd=tmp_path)
    assert result.returncode != 0
    assert "batch_size=7 is not allowed with 2 DDP processes" in result.stderr


def test_ranks_with_different_data_files_are_refused(tiny_data, tmp_path):
    for rank in (0, 1):
        shutil.copytree(tiny_data, tmp_path / f"data{rank}")
    result = torchrun(*TINY_TRAIN, f"data_dir={tmp_path}/data${{oc.env:RANK}}",
                      f"output_dir={tmp_path / 'run'}", cwd=tmp_path)  # fmt: skip
    assert result.returncode != 0
    assert "the ranks of this DDP run see different data files" in result.stderr
