"""End-to-end behaviour of `simulate`: determinism, splits, resume, file layout, CLI."""

from __future__ import annotations

import hashlib
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import interrupted, read_params, run_module

from simulate import pipeline
from simulate.io import SPLITS
from simulate.noise import add_noise
from simulate.pipeline import run_simulation
from simulate.priors import LABEL_UNITS

REPO = Path(__file__).resolve().parents[1]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_one_and_two_workers_write_identical_files(sim_config, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run_simulation(sim_config("workers=1", out_dir=a), progress=False)
    run_simulation(sim_config("workers=2", out_dir=b), progress=False)
    for split in SPLITS:
        assert digest(a / f"{split}.h5") == digest(b / f"{split}.h5")


def test_seed_changes_data(sim_config, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    run_simulation(sim_config("seed=1", "montage=0", out_dir=a), progress=False)
    run_simulation(sim_config("seed=2", "montage=0", out_dir=b), progress=False)
    with h5py.File(a / "test.h5") as fa, h5py.File(b / "test.h5") as fb:
        assert not np.array_equal(fa["images"][:], fb["images"][:])


def test_splits_share_no_galaxy(sim_config, tmp_path):
    run_simulation(sim_config("n=40", "montage=0"), progress=False)
    indices = [read_params(tmp_path / "data" / f"{s}.h5", ["index"])["index"] for s in SPLITS]
    assert [len(i) for i in indices] == [32, 4, 4]
    merged = np.concatenate(indices)
    assert len(np.unique(merged)) == 40
    assert np.array_equal(np.sort(merged), np.arange(40))


def test_labels_follow_the_conventions(sim_config, tmp_path):
    cfg = sim_config("montage=0")
    run_simulation(cfg, progress=False)
    p = read_params(tmp_path / "data" / "train.h5")
    zp = cfg.instrument.zero_point
    assert np.allclose(p["mag"], zp - 2.5 * np.log10(p["flux"]), atol=1e-5)
    grid = np.geomspace(cfg.prior.n.min, cfg.prior.n.max, cfg.render.n_grid_points)
    assert np.all(np.isclose(p["n"][:, None], grid[None, :], rtol=1e-6).any(axis=1))
    assert np.all((p["q"] > 0) & (p["q"] <= 1)) and np.all((p["pa"] >= 0) & (p["pa"] < 180))
    assert np.all((p["size"] >= cfg.prior.size.min) & (p["size"] <= cfg.prior.size.max))


def test_interrupted_run_resumes_to_identical_files(sim_config, tmp_path, monkeypatch):
    reference = tmp_path / "reference"
    run_simulation(sim_config("montage=0", out_dir=reference), progress=False)

    out = tmp_path / "resumed"
    with interrupted(monkeypatch, pipeline, "_render_part", at=3):  # after two blocks
        run_simulation(sim_config("montage=0", out_dir=out), progress=False)
    assert not any((out / f"{s}.h5").exists() for s in SPLITS)  # nothing looks complete
    parts = list(out.glob(".parts-*/*.npz"))
    assert len(parts) == 2

    summary = run_simulation(sim_config("montage=0", out_dir=out), progress=False)
    assert summary["galaxies"] == 30 - 2 * 8  # only the missing blocks were rendered
    for split in SPLITS:
        assert digest(out / f"{split}.h5") == digest(reference / f"{split}.h5")
    assert not list(out.glob(".parts-*"))


def test_rerun_is_a_no_op_and_other_config_is_refused(sim_config, tmp_path):
    run_simulation(sim_config("montage=0"), progress=False)
    assert run_simulation(sim_config("montage=0"), progress=False)["skipped"]
    with pytest.raises(FileExistsError, match="overwrite=true"):
        run_simulation(sim_config("montage=0", "seed=5"), progress=False)
    run_simulation(sim_config("montage=0", "seed=5", "overwrite=true"), progress=False)


def test_files_describe_themselves(sim_config, tmp_path):
    run_simulation(sim_config(), progress=False)
    with h5py.File(tmp_path / "data" / "val.h5") as f:
        images = f["images"]
        assert images.dtype == np.float32 and images.shape == (3, 64, 64)
        assert images.chunks == (1, 64, 64)
        assert images.attrs["units"] == "e-/s per pixel"
        for label, units in LABEL_UNITS.items():
            assert f["params"][label].attrs["units"] == units
            assert f["params"][label].shape == (3,)
        attrs = dict(f.attrs)
        assert attrs["pixel_scale_arcsec"] == 0.06
        assert attrs["zero_point_mag"] == 25.94
        assert attrs["exposure_time_s"] == 3000.0
        assert attrs["sky_level_e_per_s_per_pixel"] == 0.5
        assert attrs["read_noise_e"] == 20.0
        assert "Moffat" in attrs["psf"] and attrs["psf_fwhm_arcsec"] == pytest.approx(
            0.18, rel=1e-3
        )
        assert attrs["master_seed"] == 20260101 and attrs["split"] == "val"
        assert attrs["galsim_version"] and attrs["package_version"]
        assert "pixel_scale: 0.06" in f["config"][()].decode()
    assert (tmp_path / "data" / "montage.png").stat().st_size > 0


def run_cli(*args, cwd):
    return run_module("simulate", *args, cwd=cwd)


def test_command_line_run(tmp_path):
    from conftest import TINY_SIM

    result = run_cli(*TINY_SIM, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    data = tmp_path / "data" / "sersic"  # the default out_dir, relative to the launch folder
    assert all((data / f"{s}.h5").exists() for s in SPLITS)
    assert "galaxies/s" in result.stderr + result.stdout


def test_command_line_bad_value_names_the_key(tmp_path):
    result = run_cli("prior.q.max=1.5", cwd=tmp_path)
    assert result.returncode != 0
    assert "prior.q.max=1.5" in result.stderr


def test_multirun_writes_separate_data_sets(tmp_path):
    from conftest import TINY_SIM

    result = run_cli("-m", "instrument.psf.fwhm=0.12,0.18", *TINY_SIM, "montage=0", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    folders = sorted(p.parent for p in (tmp_path / "data" / "sersic").glob("*/train.h5"))
    assert len(folders) == 2
    fwhm = sorted(h5py.File(f / "train.h5").attrs["psf_fwhm_arcsec"] for f in folders)
    assert fwhm == pytest.approx([0.12, 0.18], rel=1e-3)


def test_noiseless_stamps_with_their_noise_seeds_give_the_images(sim_config, tmp_path):
    cfg = sim_config("noiseless=true", "montage=0")
    run_simulation(cfg, progress=False)
    with h5py.File(tmp_path / "data" / "train.h5", "r") as f:
        images, noiseless = f["images"][()], f["noiseless"][()]
        seeds = f["params/noise_seed"][()]
    for i in range(len(images)):
        again = add_noise(noiseless[i].astype(np.float64), cfg.instrument, seeds[i])
        np.testing.assert_allclose(images[i], again.astype(np.float32), rtol=0, atol=1e-6)


def test_noiseless_is_off_by_default_and_keeps_the_digest(sim_config, tmp_path):
    cfg = sim_config("montage=0")
    run_simulation(cfg, progress=False)
    with h5py.File(tmp_path / "data" / "train.h5", "r") as f:
        assert "noiseless" not in f
    assert "noiseless" not in pipeline.data_config(cfg)  # digests of earlier data sets hold
    assert "noiseless" in pipeline.data_config(sim_config("noiseless=true"))


def test_companions_add_light_but_leave_the_galaxy_as_it_was(sim_config, tmp_path):
    plain, crowded = tmp_path / "plain", tmp_path / "crowded"
    run_simulation(sim_config("montage=0", "noiseless=true", out_dir=plain), progress=False)
    run_simulation(
        sim_config("montage=0", "noiseless=true", "companions.mean_count=2", out_dir=crowded),
        progress=False,
    )
    a, b = read_params(plain / "train.h5"), read_params(crowded / "train.h5")
    for name in ("mag", "n", "re", "q", "snr", "noise_seed"):
        assert np.array_equal(a[name], b[name]), name  # the galaxy, its noise seed, its S/N
    assert "n_companions" not in a and b["n_companions"].mean() > 0.5
    with h5py.File(plain / "train.h5") as fa, h5py.File(crowded / "train.h5") as fb:
        assert np.array_equal(fa["noiseless"][()], fb["noiseless"][()])
        extra = fb["images"][()].sum(axis=(1, 2)) - fa["images"][()].sum(axis=(1, 2))
    with_any = b["n_companions"] > 0
    assert np.all(extra[with_any] > 0) and np.allclose(extra[~with_any], 0)


def test_companions_off_leave_the_digest_unchanged(sim_config):
    from simulate.pipeline import config_digest

    base = config_digest(sim_config())
    assert config_digest(sim_config("companions.distance_px=[5,9]")) == base
    assert config_digest(sim_config("companions.mean_count=1")) != base


def test_bad_companion_ranges_are_refused(sim_config):
    from sersic_runtime.errors import ConfigError
    from simulate.config import validate

    with pytest.raises(ConfigError, match=r"companions\.distance_px=\[9\.0, 5\.0\]"):
        validate(sim_config("companions.distance_px=[9,5]"))
