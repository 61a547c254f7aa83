"""The README's tour, run as a new user runs it: every command of its bash and Python blocks,
as written, in order, in an empty folder; all but installing, the test suite itself, the
documentation build and the builds that take an hour or more (``NOT_RUN``)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
#: Commands of the README this test does not run, and why.
NOT_RUN = {
    r"^pip install": "installing: the test runs in the installed project",
    r"^python -m pytest": "the test suite itself",
    r"^bash \.ci/run": "CI itself",
    r"^ruff ": "the linter",
    r"python -m sphinx": "the documentation build",
    r"^python -m fitnet\.build instrument=euclid_vis$": "the full recipe (hours)",
    r"^python -m fitnet\.build .*budget\.hours=0\.4$": "the small budget (about an hour)",
}
BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```", re.M | re.S)


def readme_steps() -> list[tuple[str, str]]:
    """(language, command or Python block) of the README, in order, comments stripped."""
    steps = []
    for language, body in BLOCK.findall(README.read_text()):
        if language == "python":
            steps.append(("python", body))
            continue
        for line in body.splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            if command and not any(re.search(p, command) for p in NOT_RUN):
                steps.append(("bash", command))
    return steps


def test_every_skipped_command_is_one_the_readme_has():
    commands = [
        re.sub(r"\s+#.*$", "", line).strip()
        for language, body in BLOCK.findall(README.read_text())
        if language == "bash"
        for line in body.splitlines()
    ]
    for pattern in NOT_RUN:
        assert any(re.search(pattern, c) for c in commands), pattern


def test_the_readme_tour_runs_as_written(tmp_path):
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    env.pop("HYDRA_FULL_ERROR", None)
    seconds = []
    for language, step in readme_steps():
        started = time.monotonic()
        if language == "bash":
            args = ["bash", "-c", step]
        else:
            (tmp_path / "step.py").write_text(step)
            args = [sys.executable, "step.py"]
        result = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=900)  # fmt: skip
        assert result.returncode == 0, f"{step}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
        seconds.append((time.monotonic() - started, step[:60]))
    for path in ("data/sersic/test.h5", "runs/demo/best.pt", "catalogue.csv", "mosaic.fits",
                 "ground.ecsv", "builds/tryout/euclid_vis.pt", "survey.fits"):  # fmt: skip
        assert (tmp_path / path).is_file(), path
    print("\n".join(f"{s:6.1f} s  {step}" for s, step in seconds))


@pytest.fixture(autouse=True)
def _no_display(monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
