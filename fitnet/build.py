"""``python -m fitnet.build instrument=euclid_vis [budget.galaxies=50000 budget.hours=2 ...]``:
from an instrument to a packaged model in one resumable pipeline.

The steps, each writing into ``out_dir`` (default ``builds/<instrument>``):

1. ``simulate``: the network's train/val/test (``data/``, Cramer-Rao bounds on test), the
   refiner's stamps (``refine-data/``) and the calibration galaxies (``calibrate-data/``), three
   master seeds, all with the build's instrument and prior.
2. ``train``: the network, one stage per entry of ``stages`` (``train/<k>-<experiment>/``),
   each starting from the weights of the stage before.
3. ``refine``: the network, frozen, inside the photometric refiner (``refine/``).
4. ``calibrate``: the sigma scale factors measured again on the calibration galaxies.
5. ``evaluate``: accuracy on the test split against its Cramer-Rao bound (``evaluate/``).
6. ``package``: ``<instrument>.pt``, a prediction-only checkpoint, and ``MODEL.md``.

``build.json`` records every finished step with its wall time. The same command run again skips
finished steps, resumes a killed training stage from its last.pt and a killed simulation from
its parts; a folder that holds a build of another configuration is refused.

Example: python -m fitnet.build instrument=euclid_vis budget.galaxies=15000 budget.hours=0.4
"""

from __future__ import annotations

import csv
import json
import logging
import math
import time
from datetime import datetime, timezone
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sersic_runtime.commands import command
from sersic_runtime.configs import compose_config, group_choices
from sersic_runtime.errors import ConfigError, UserError
from sersic_runtime.files import atomic_path
from sersic_runtime.options import positive

from . import calibrate, evaluate, train
from .pretrained import export

log = logging.getLogger(__name__)

STATE_FILE = "build.json"  # the finished steps and their wall times
CONFIG_FILE = "build.yaml"  # the configuration the folder's build was started with
#: Options that may change between runs of one build: how long and how verbosely, not what.
FREE_KEYS = (("budget", "hours"), ("progress",))
#: Sub-folders of the three simulated sets, and the budget keys that size them.
SETS = {"network": "data", "refine": "refine-data", "calibrate": "calibrate-data"}
BUDGET_KEYS = {"network": "budget.galaxies", "refine": "budget.refine_galaxies",
               "calibrate": "budget.calibrate_galaxies"}  # fmt: skip


class BuildError(UserError):
    """A build option has a value that is not allowed, or the folder holds another build."""


def validate(cfg: DictConfig) -> dict[str, DictConfig]:
    """Check the build's own options and every simulate configuration it will run, before any
    work; return those configurations by set name."""
    stages, epochs = list(cfg.stages), list(cfg.budget.epochs)
    if not stages:
        raise BuildError("stages=[] is empty: give at least one conf/experiment to train")
    if len(epochs) != len(stages) or not all(isinstance(e, int) and e >= 1 for e in epochs):
        raise BuildError(
            f"budget.epochs={epochs} is not allowed: one integer >= 1 per entry of stages={stages}"
        )
    known = group_choices("experiment")
    for name in [*stages, cfg.refiner]:
        if name not in known:
            raise BuildError(f"experiment {name!r} is not in conf/experiment: choose from {known}")
    for key in ("refine_galaxies", "calibrate_galaxies", "refine_epochs"):
        value = cfg.budget[key]
        if not (isinstance(value, int) and value >= 0):
            raise BuildError(f"budget.{key}={value!r} is not allowed: must be an integer >= 0")
    positive("budget.hours", cfg.budget.hours, allow_null=True)
    positive("mag_bin", cfg.mag_bin)
    from simulate.config import validate as validate_simulation  # GalSim: not for --help

    configs = {}
    for name in active_sets(cfg):
        try:
            configs[name] = validate_simulation(simulate_config(cfg, name))
        except ConfigError as err:
            raise BuildError(f"the {name} set ({BUDGET_KEYS[name]}): {err}") from err
    return configs


def active_sets(cfg: DictConfig) -> list[str]:
    """The simulated sets this build needs (a zero budget drops the refiner's or the
    calibration's)."""
    wanted = {"refine": cfg.budget.refine_galaxies, "calibrate": cfg.budget.calibrate_galaxies}
    return ["network", *(name for name, count in wanted.items() if count > 0)]


def simulate_config(cfg: DictConfig, name: str) -> DictConfig:
    """The ``python -m simulate`` configuration of set ``name`` (network, refine, calibrate),
    with the build's instrument and prior as given (command-line changes included)."""
    out = Path(cfg.out_dir) / SETS[name]
    count = OmegaConf.select(cfg, BUDGET_KEYS[name])
    overrides = [f"n={count}", f"seed={cfg.seeds[name]}", f"out_dir={out}"]
    if name != "network":  # bounds only for the test split of the network's set; no montage
        overrides += ["bounds.splits=[]", "montage=0"]
    if name == "refine":
        overrides += [f"splits.{key}={value}" for key, value in cfg.refine_splits.items()]
    sim = compose_config("simulate", [*overrides, *cfg.simulate_overrides])
    sim.instrument = OmegaConf.to_container(cfg.instrument, resolve=True)
    sim.prior = OmegaConf.to_container(cfg.prior, resolve=True)
    sim.noise = OmegaConf.to_container(cfg.noise, resolve=True)
    return sim


def defining_config(cfg: DictConfig) -> dict:
    """The build's configuration without the options that may change between its runs."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    for path in FREE_KEYS:
        node = plain
        for key in path[:-1]:
            node = node.get(key, {})
        node.pop(path[-1], None)
    return plain


def _flatten(node, prefix="") -> dict:
    if not isinstance(node, dict):
        return {prefix: node}
    out = {}
    for key, value in node.items():
        out.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
    return out


class Build:
    """The build folder: its configuration and the record of finished steps."""

    def __init__(self, cfg: DictConfig):
        self.cfg, self.out = cfg, Path(cfg.out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        wanted = defining_config(cfg)
        stored_path = self.out / CONFIG_FILE
        if stored_path.exists():
            stored = OmegaConf.to_container(OmegaConf.load(stored_path))
            a, b = _flatten(stored), _flatten(wanted)
            differ = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
            if differ:
                raise BuildError(
                    f"{self.out} holds a build of another configuration (it differs in "
                    f"{', '.join(differ[:6])}): choose another out_dir, or delete the folder"
                )
        else:
            with atomic_path(stored_path) as tmp:
                tmp.write_text(OmegaConf.to_yaml(OmegaConf.create(wanted)))
        path = self.out / STATE_FILE
        self.steps: dict = json.loads(path.read_text())["steps"] if path.exists() else {}

    def done(self, step: str) -> bool:
        return step in self.steps

    def record(self, step: str, seconds: float, **extra) -> None:
        """Mark ``step`` finished after ``seconds`` of wall time; rewrite build.json."""
        self.steps[step] = {
            "seconds": round(seconds, 1),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **extra,
        }
        state = {"instrument": self.cfg.instrument.name, "steps": self.steps}
        with atomic_path(self.out / STATE_FILE) as tmp:
            tmp.write_text(json.dumps(state, indent=2) + "\n")

    def step(self, name: str, work) -> dict:
        """Run ``work()`` (returning a dict of facts to record) unless ``name`` is finished."""
        if self.done(name):
            log.info("build: %s already done (%s)", name, self.out / STATE_FILE)
            return self.steps[name]
        log.info("build: %s", name)
        start = time.monotonic()
        facts = work() or {}
        self.record(name, time.monotonic() - start, **facts)
        return self.steps[name]


def simulate_sets(build: Build, configs: dict[str, DictConfig]) -> None:
    from simulate.pipeline import run_simulation

    for name, sim in configs.items():
        folder = build.out / SETS[name]
        build.step(
            f"simulate-{name}",
            lambda sim=sim, folder=folder: {
                "galaxies": int(sim.n),
                "folder": str(folder),
                "rate_per_s": round(run_simulation(sim, out_dir=folder)["rate"], 2),
            },
        )


def spent_minutes(folder: Path) -> float:
    """Minutes of the epochs a (killed) training run in ``folder`` already finished."""
    path = folder / "metrics.csv"
    if not path.exists():
        return 0.0
    with path.open() as fh:
        return sum(float(row["seconds"]) for row in csv.DictReader(fh)) / 60


def train_once(build: Build, folder: Path, overrides: list[str], init_from: Path | None) -> Path:
    """One training run into ``folder`` (resumed from its last.pt if a killed run left one);
    return its best.pt."""
    last = folder / "last.pt"
    if last.exists():
        overrides = [*overrides, f"resume={last}"]
    elif init_from is not None:
        overrides = [*overrides, f"init_from={init_from}"]
    overrides += [f"progress={build.cfg.progress}", *build.cfg.train_overrides]
    train.run(compose_config("train", overrides), output_dir=folder)
    return folder / "best.pt"


def train_stages(build: Build) -> Path:
    """The network's training stages; return the last stage's best.pt."""
    cfg, ckpt = build.cfg, None
    budget = None if cfg.budget.hours is None else 60 * float(cfg.budget.hours)  # minutes
    for k, (experiment, epochs) in enumerate(zip(cfg.stages, cfg.budget.epochs, strict=True)):
        folder, name = build.out / "train" / f"{k + 1}-{experiment}", f"train-{k + 1}"
        overrides = [f"experiment={experiment}", f"epochs={epochs}",
                     f"data_dir={build.out / SETS['network']}"]  # fmt: skip
        if budget is not None and not build.done(name):
            used = sum(s["seconds"] for n, s in build.steps.items() if n.startswith("train-"))
            left = budget - used / 60 - spent_minutes(folder)
            if left <= 0 and k > 0:
                log.info("build: budget.hours spent; skipping training stage %d", k + 1)
                build.record(name, 0.0, skipped="budget.hours spent")
                continue
            overrides.append(f"max_minutes={max(left, 1e-3):.4g}")  # the first stage: one epoch
        if build.steps.get(name, {}).get("skipped"):
            continue
        ckpt_in = ckpt
        build.step(name, lambda f=folder, o=overrides, i=ckpt_in: {
            "checkpoint": str(train_once(build, f, o, i))})  # fmt: skip
        ckpt = folder / "best.pt"
    return ckpt


def refine(build: Build, network: Path) -> Path:
    cfg, folder = build.cfg, build.out / "refine"
    overrides = [f"experiment={cfg.refiner}", f"epochs={cfg.budget.refine_epochs}",
                 f"data_dir={build.out / SETS['refine']}",
                 f"cache_dir={build.out / 'refiner-cache'}"]  # fmt: skip
    build.step("refine", lambda: {"checkpoint": str(train_once(build, folder, overrides, network))})
    return folder / "best.pt"


def calibrate_sigmas(build: Build, ckpt: Path) -> Path:
    data = build.out / SETS["calibrate"]
    output = build.out / "calibrated.pt"
    files = ",".join(str(data / f"{split}.h5") for split in ("train", "val", "test"))
    overrides = [f"ckpt={ckpt}", f"data=[{files}]", f"output={output}",
                 f"progress={build.cfg.progress}"]  # fmt: skip
    build.step("calibrate", lambda: calibrate.run(compose_config("calibrate", overrides)))
    return output


def evaluate_model(build: Build, ckpt: Path) -> Path:
    """Accuracy on the network's test split, per magnitude bin of the prior, against the CRB."""
    prior, width, folder = build.cfg.prior.mag, build.cfg.mag_bin, build.out / "evaluate"
    first, count = math.floor(prior.min), math.ceil((prior.max - math.floor(prior.min)) / width)
    edges = [f"{first + k * width:g}" for k in range(count + 1)]
    overrides = [f"ckpt={ckpt}", f"data={build.out / SETS['network'] / 'test.h5'}",
                 f"output_dir={folder}", f"mag_bins=[{','.join(edges)}]",
                 f"progress={build.cfg.progress}"]  # fmt: skip

    def work():
        summary = evaluate.run(compose_config("evaluate", overrides))
        return {"evaluated": summary["evaluated"], "flagged": summary["flagged"]}

    build.step("evaluate", work)
    return folder / "metrics.md"


def package(build: Build, ckpt: Path, metrics: Path) -> Path:
    """``<instrument>.pt`` (prediction-only) and ``MODEL.md`` in the build folder."""
    name = build.cfg.instrument.name
    model = build.out / f"{name}.pt"

    def work():
        export(ckpt, model)
        with atomic_path(build.out / "MODEL.md") as tmp:
            tmp.write_text(model_card(build, model, metrics))
        return {"model": str(model)}

    build.step("package", work)
    return model


def model_card(build: Build, model: Path, metrics: Path) -> str:
    """A short model card: what the model is for, how it was built and how well it does."""
    cfg = build.cfg
    ins = OmegaConf.to_yaml(
        {"instrument": cfg.instrument, "noise": cfg.noise}, resolve=True
    ).strip()
    prior = OmegaConf.to_yaml(cfg.prior, resolve=True).strip()
    rows = "\n".join(f"| {step} | {s['seconds'] / 60:.1f} | {s.get('skipped', '')} |"
                     for step, s in build.steps.items())  # fmt: skip
    return (
        f"# Model card: `{model.name}`\n\nBuilt by `python -m fitnet.build` in `{build.out}`. "
        f"Predict with `python -m fitnet.predict ckpt={model} input=...`.\n\n"
        f"## Instrument\n\n```yaml\n{ins}\n```\n\n## Training prior\n\n```yaml\n{prior}\n```\n\n"
        f"## Steps\n\n| step | minutes | note |\n| --- | --- | --- |\n{rows}\n\n"
        f"## Accuracy on the test split\n\n{metrics.read_text()}\n"
    )


def run(cfg: DictConfig) -> Path:
    """Build the model of ``cfg.instrument``; return the path of the packaged checkpoint."""
    configs = validate(cfg)
    build = Build(cfg)
    simulate_sets(build, configs)
    ckpt = train_stages(build)
    if cfg.budget.refine_galaxies > 0:
        ckpt = refine(build, ckpt)
    if cfg.budget.calibrate_galaxies > 0:
        ckpt = calibrate_sigmas(build, ckpt)
    model = package(build, ckpt, evaluate_model(build, ckpt))
    log.info("build: %s is ready; its steps and times are in %s", model, build.out / STATE_FILE)
    return model


main = command("fitnet.build", "build", __doc__)(run)

if __name__ == "__main__":
    main()
