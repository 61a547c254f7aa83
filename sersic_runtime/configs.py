"""The packaged Hydra configs: the repository's ``conf/``, installed as ``sersic_runtime.conf``
so that a wheel finds them, and composed as Hydra composes them."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from omegaconf import OmegaConf

CONFIG_MODULE = "sersic_runtime.conf"
CONFIG_PATH = f"pkg://{CONFIG_MODULE}"


def config_dir() -> Path:
    """The folder of the packaged configs (the repository's ``conf/`` in a checkout)."""
    return Path(str(resources.files(CONFIG_MODULE)))


def load_group(group: str, name: str = "default"):
    """One config-group file (e.g. ``inference/default``) as an OmegaConf object, for code that
    runs without Hydra (the Python API); a defaults list of files of the same group (``-
    auto``) is merged under it, as Hydra merges it."""
    data = OmegaConf.load(config_dir() / group / f"{name}.yaml")
    bases = [e for e in data.pop("defaults", []) if isinstance(e, str) and e != "_self_"]
    return OmegaConf.merge(*(load_group(group, base) for base in bases), data)


def group_choices(group: str) -> list[str]:
    """The choices of a config group (its files in the packaged configs)."""
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def compose_packaged(config_name: str, overrides=()):
    """The packaged config ``config_name`` composed with ``overrides``, as Hydra would."""
    from hydra import compose, initialize_config_module

    with initialize_config_module(config_module=CONFIG_MODULE, version_base="1.3"):
        return compose(config_name, overrides=list(overrides))


def compose_config(config_name: str, overrides=()):
    """``compose_packaged``, also from inside a running Hydra application (which has already
    initialised Hydra on the packaged configs, so composing needs no new initialisation)."""
    from hydra import compose
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        return compose(config_name, overrides=list(overrides))
    return compose_packaged(config_name, overrides)
