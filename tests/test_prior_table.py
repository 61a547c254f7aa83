"""A joint prior resampled from a reference table (simulate prior_table)."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table
from conftest import TINY_SIM, compose_config, read_params

from sersic_runtime.errors import ConfigError
from simulate.config import validate
from simulate.pipeline import config_digest, run_simulation
from simulate.priors import ReferenceTable, draw_parameters, reflect

ROWS = {
    "mag": [20.0, 22.5, 30.0],
    "n": [1.0, 4.0, 2.0],
    "re": [0.2, 0.4, 0.3],
    "q": [0.5, 0.9, 0.6],
}


@pytest.fixture
def table(tmp_path):
    path = tmp_path / "ref.ecsv"
    Table(ROWS).write(path)  # the third row (mag 30) lies outside the default prior
    return path


def test_without_jitter_every_galaxy_is_a_row_inside_the_prior(table):
    cfg = compose_config("simulate", ["prior_table.jitter.mag=0", "prior_table.jitter.n=0",
                                      "prior_table.jitter.re=0", "prior_table.jitter.q=0"])  # fmt: skip
    ref = ReferenceTable.read(table, cfg.prior_table.jitter, cfg.prior)
    drawn = draw_parameters(7, np.arange(200), cfg.prior, 0, ref)
    pairs = set(zip(drawn["mag"], drawn["q"], strict=True))
    assert pairs == {(20.0, 0.5), (22.5, 0.9)}


def test_the_other_labels_and_the_noise_are_those_of_independent_draws(table):
    cfg = compose_config("simulate")
    ref = ReferenceTable.read(table, cfg.prior_table.jitter, cfg.prior)
    plain = draw_parameters(7, np.arange(50), cfg.prior, 0)
    joint = draw_parameters(7, np.arange(50), cfg.prior, 0, ref)
    for name in ("pa", "dx", "dy", "size", "noise_seed"):
        assert np.array_equal(plain[name], joint[name])
    assert not np.array_equal(plain["mag"], joint["mag"])


def test_jittered_values_stay_inside_the_prior(table):
    cfg = compose_config("simulate", ["prior_table.jitter.q=0.5", "prior_table.jitter.re=3"])
    ref = ReferenceTable.read(table, cfg.prior_table.jitter, cfg.prior)
    drawn = draw_parameters(3, np.arange(500), cfg.prior, 0, ref)
    for name in ("mag", "n", "re", "q"):
        assert cfg.prior[name].min <= drawn[name].min() <= drawn[name].max() <= cfg.prior[name].max


@pytest.mark.parametrize("value", [-3.7, 0.2, 1.4, 2.9, 11.3])
def test_reflect_folds_any_value_into_the_range(value):
    assert 0.0 <= reflect(value, 0.0, 1.0) <= 1.0


def test_a_simulation_draws_from_the_table(table, tmp_path):
    cfg = compose_config(
        "simulate",
        [*TINY_SIM, f"prior_table.file={table}", f"out_dir={tmp_path}", "bounds.splits=[]"],
    )
    run_simulation(cfg, progress=False)
    mag = read_params(tmp_path / "train.h5", ["mag"])["mag"]
    near = np.min(np.abs(mag[:, None] - np.array([20.0, 22.5])[None]), axis=1)
    assert near.max() < 5 * cfg.prior_table.jitter.mag


def test_the_digest_follows_the_table_contents(table):
    cfg = compose_config("simulate", [f"prior_table.file={table}"])
    before = config_digest(cfg)
    Table({**ROWS, "mag": [21.0, 22.5, 30.0]}).write(table, overwrite=True)
    assert config_digest(cfg) != before
    assert config_digest(compose_config("simulate")) != before


def test_a_table_without_the_columns_is_refused(tmp_path):
    Table({"mag": [20.0], "n": [1.0]}).write(tmp_path / "t.csv")
    cfg = compose_config("simulate")
    with pytest.raises(ValueError, match=r"lacks the columns \['re', 'q'\]"):
        ReferenceTable.read(tmp_path / "t.csv", cfg.prior_table.jitter, cfg.prior)


def test_a_table_with_no_row_inside_the_prior_is_refused(tmp_path):
    Table({"mag": [30.0], "n": [1.0], "re": [0.2], "q": [0.5]}).write(tmp_path / "t.csv")
    cfg = compose_config("simulate")
    with pytest.raises(ValueError, match=r"none of its 1 rows lies inside the prior"):
        ReferenceTable.read(tmp_path / "t.csv", cfg.prior_table.jitter, cfg.prior)


def test_a_missing_table_file_is_refused(tmp_path):
    cfg = compose_config("simulate", [f"prior_table.file={tmp_path / 'nope.fits'}"])
    with pytest.raises(ConfigError, match=r"prior_table\.file=.*nope\.fits.* must be an existing"):
        validate(cfg)
