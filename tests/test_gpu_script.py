"""benchmarks/gpu.py, the prepared GPU run, in its reduced CPU form."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


@pytest.mark.slow  # about a minute and a half: the whole prepared run, reduced
def test_the_reduced_form_writes_every_figure_on_the_cpu(tmp_path):
    out = tmp_path / "figures"
    result = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--reduced",
                             "--galaxies", "200"], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr
    figures = json.loads((out / "gpu.json").read_text())
    assert figures["reduced"] and figures["ddp"]["backend"] == "gloo"
    assert figures["train_images_per_s"]["synthetic batch on device"] > 0
    assert figures["fits_per_s"]["fit, cpu"] > 0
    assert figures["train_seconds_per_epoch"][0] > 0 and figures["ddp"]["train_loss"] > 0
    assert "| DDP 2 x gloo" in (out / "gpu.md").read_text()
