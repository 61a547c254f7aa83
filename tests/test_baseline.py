"""The pyimfit baseline: a catalogue in predict's format, resumable."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table
from conftest import compose_config, interrupted, other_simulators_copy, read_params

pytest.importorskip("pyimfit")

from fitnet import baseline_fits  # noqa: E402
from fitnet.baseline import run as run_baseline  # noqa: E402
from fitnet.data import DataError  # noqa: E402


def baseline_config(tiny_data, out, *overrides):
    return compose_config(
        "baseline",
        [
            f"data={tiny_data / 'test.h5'}",
            f"output={out}",
            "workers=1",
            "chunk=2",
            "progress=false",
            *overrides,
        ],
    )


def test_fits_land_near_the_truth(tiny_data, tmp_path):
    table = run_baseline(baseline_config(tiny_data, tmp_path / "fits.csv", "limit=3"))
    assert list(table["row"]) == [0, 1, 2]
    assert {"mag", "n", "re", "q", "flag", "seconds"} <= set(
        Table.read(tmp_path / "fits.csv").colnames
    )
    true = read_params(tiny_data / "test.h5")
    assert np.all(np.abs(table["mag"] - true["mag"][:3]) < 1.0)
    assert np.all(table["seconds"] > 0)


def test_resumes_after_interruption(tiny_data, tmp_path, monkeypatch):
    with interrupted(monkeypatch, baseline_fits, "_fit_chunk", at=2):
        run_baseline(baseline_config(tiny_data, tmp_path / "fits.csv", "limit=4"))
    assert not (tmp_path / "fits.csv").exists()
    table = run_baseline(baseline_config(tiny_data, tmp_path / "fits.csv", "limit=4"))
    assert list(table["row"]) == [0, 1, 2, 3]


def test_file_from_elsewhere_is_fitted_with_the_named_instrument(tiny_data, tmp_path):
    other = other_simulators_copy(tiny_data / "test.h5", tmp_path / "other.h5", pixel_scale=0.06)
    with pytest.raises(DataError, match=r"other\.h5 has no /config.*pass instrument=<name>"):
        run_baseline(baseline_config(tiny_data, tmp_path / "a.csv", f"data={other}", "limit=2"))
    table = run_baseline(
        baseline_config(
            tiny_data, tmp_path / "b.csv", f"data={other}", "limit=2", "instrument=candels_h"
        )
    )
    true = read_params(tiny_data / "test.h5")
    assert np.all(np.abs(table["mag"] - true["mag"][:2]) < 1.0)


def test_file_from_elsewhere_at_another_pixel_scale_is_refused(tiny_data, tmp_path):
    other = other_simulators_copy(tiny_data / "test.h5", tmp_path / "other.h5", PIXSCALE=0.1)
    with pytest.raises(DataError, match=r"pixel scale 0\.1 arcsec/pixel differs from instrument"):
        run_baseline(
            baseline_config(tiny_data, tmp_path / "c.csv", f"data={other}", "instrument=candels_h")
        )
