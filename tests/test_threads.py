"""threads=: the cores this process may use, less those other work keeps busy; a number outside
1..cores is refused in one line."""

from __future__ import annotations

import os

import pytest
import torch

from fitnet.runtime import set_threads
from sersic_runtime import cores
from sersic_runtime.errors import UserError
from tests.conftest import run_module


@pytest.fixture(autouse=True)
def keep_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_busy_machine_leaves_fewer_threads():
    assert cores.free_cores(2, busy=1.2) == 1
    assert cores.free_cores(4, busy=7.9) == 1  # never fewer than one
    assert cores.free_cores(4, busy=0.2) == 4


def test_without_proc_stat_the_load_average_counts(monkeypatch):
    monkeypatch.setattr(cores, "busy_elsewhere", lambda: None)
    monkeypatch.setattr(os, "getloadavg", lambda: (1.2, 1.0, 1.0))
    assert cores.free_cores(2) == 1


def test_a_process_spinning_beside_us_is_measured():
    import subprocess
    import sys

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        import time

        time.sleep(0.3)
        assert cores.busy_elsewhere() >= 0.7
    finally:
        spinner.kill()
        spinner.wait()


def test_a_slurm_share_limits_the_cores(monkeypatch):
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")
    assert cores.usable_cores() == 1


def test_a_cgroup_quota_limits_the_cores(monkeypatch, tmp_path):
    (tmp_path / "cpu.max").write_text("100000 100000\n")  # one core's worth
    monkeypatch.setattr(cores, "CGROUP_CPU_MAX", tmp_path / "cpu.max")
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    assert cores.usable_cores() == 1


def test_auto_follows_omp_num_threads_when_the_user_set_it(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert set_threads("auto") == 1 and torch.get_num_threads() == 1


@pytest.mark.parametrize("option", [0, 10_000, "many", 1.5])
def test_a_thread_count_outside_the_cores_is_refused(option):
    with pytest.raises(UserError, match=r"threads=.* is not allowed: give auto or a whole number"):
        set_threads(option)


def test_the_command_refuses_threads_0_in_one_line(tmp_path):
    result = run_module("fitnet.predict", "input=x.h5", "output=o.csv", "threads=0", cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "threads=0 is not allowed" in result.stderr
