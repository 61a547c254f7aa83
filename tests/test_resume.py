"""A killed prediction resumes where it stopped: the same command run again measures only the
rows the first run did not save, and writes the catalogue an uninterrupted run writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from tests.conftest import run_module

#: small batches and parts, so that a run of 40 rows saves several parts before it ends
SMALL = ["batch_size.cpu=4", "fit.batch_rows=4", "resume_rows=4", "progress=false"]


@pytest.fixture(scope="module")
def stamps(tiny_data, tmp_path_factory):
    """One HDF5 file of the tiny set's 40 stamps (train, val and test together)."""
    path = tmp_path_factory.mktemp("resume") / "stamps.h5"
    images = []
    for split in ("train", "val", "test"):
        with h5py.File(tiny_data / f"{split}.h5") as f:
            images.append(f["images"][()])
    with h5py.File(path, "w") as f:
        f["images"] = np.concatenate(images)
    return path


def parts_of(output: Path) -> Path:
    return output.parent / f".{output.name}.parts"


def kill_after_first_part(args: list[str], output: Path, cwd: Path) -> None:
    """Start ``python -m fitnet.predict args`` and SIGKILL it once it has saved a part."""
    process = subprocess.Popen([sys.executable, "-m", "fitnet.predict", *args], cwd=cwd,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 300
    while not list(parts_of(output).glob("rows-*.json")):
        assert process.poll() is None, "the run ended before it saved a part"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


@pytest.fixture(scope="module")
def uninterrupted(stamps):
    output = stamps.parent / "whole.ecsv"
    result = run_module("fitnet.predict", f"input={stamps}", f"output={output}", *SMALL,
                        cwd=stamps.parent)  # fmt: skip
    assert result.returncode == 0, result.stderr
    return output


def test_a_killed_run_resumes_to_the_uninterrupted_catalogue(stamps, uninterrupted):
    output = stamps.parent / "killed.ecsv"
    args = [f"input={stamps}", f"output={output}", *SMALL]
    kill_after_first_part(args, output, stamps.parent)
    assert not output.exists() and parts_of(output).exists()
    result = run_module("fitnet.predict", *args, cwd=stamps.parent)
    assert result.returncode == 0, result.stderr
    log = result.stdout + result.stderr
    resumed = int(log.split("resuming: ")[1].split()[0])
    assert 4 <= resumed < 40  # the rerun measured fewer rows than the whole
    assert output.read_text() == uninterrupted.read_text()
    assert not parts_of(output).exists()


def test_parts_of_another_configuration_are_replaced(stamps, uninterrupted):
    output = stamps.parent / "other.ecsv"
    kill_after_first_part([f"input={stamps}", f"output={output}", "pad_seed=5", *SMALL], output,
                          stamps.parent)  # fmt: skip
    result = run_module("fitnet.predict", f"input={stamps}", f"output={output}", *SMALL,
                        cwd=stamps.parent)  # fmt: skip
    assert result.returncode == 0, result.stderr
    log = result.stdout + result.stderr
    assert "holds rows of another run" in log and "resuming" not in log
    assert output.read_text() == uninterrupted.read_text()


def test_resume_false_saves_no_parts(stamps, tmp_path):
    output = tmp_path / "plain.ecsv"
    result = run_module("fitnet.predict", f"input={stamps}", f"output={output}", "resume=false",
                        *SMALL, cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert output.exists() and not parts_of(output).exists()


def test_the_api_resumes_a_call_with_an_output(stamps, uninterrupted, tmp_path, monkeypatch):
    import fitnet
    from fitnet import measure

    with h5py.File(stamps) as f:
        images = f["images"][()]
    output = tmp_path / "api.ecsv"
    model = fitnet.load()
    model.batch_size, model.resume_rows = 4, 4
    from fitnet import api
    from sersic_runtime.configs import load_group

    def small_steps(group, name="default"):
        cfg = load_group(group, name)
        if group == "fit":
            cfg.batch_rows = 4  # rows measured together: four a step
        return cfg

    monkeypatch.setattr(api, "load_group", small_steps)
    calls = []
    original = measure.Measurer.rows

    def rows_then_stop(self, batch):
        calls.append(len(batch))
        if len(calls) == 3:
            raise KeyboardInterrupt  # stopped after two batches of four
        return original(self, batch)

    monkeypatch.setattr(measure.Measurer, "rows", rows_then_stop)
    with pytest.raises(KeyboardInterrupt):
        model.predict(images, pixel_scale=0.06, output=output)
    assert not output.exists()
    calls.clear()
    monkeypatch.setattr(
        measure.Measurer,
        "rows",
        lambda self, batch: calls.append(len(batch)) or original(self, batch),
    )
    table = model.predict(images, pixel_scale=0.06, output=output)
    assert sum(calls) == 40 - 8  # the two saved batches were not measured again
    assert len(table) == 40 and output.exists() and not parts_of(output).exists()
