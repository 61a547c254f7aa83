"""Runtime helpers every command shares: the packaged configs, the device, checkpoint
resolution, and ``command``, the wrapper that gives each ``python -m`` entry point its own
``--help`` and one-line errors.

Anticipated errors (a bad option, a missing or malformed input, a checkpoint that does not fit)
are ``UserError`` subclasses or ``ValueError``/``FileNotFoundError`` raised by the project's
checks: the command prints one line, ``error: <what> (<hint>)``, writes it to the run's log and
exits with status 2. ``HYDRA_FULL_ERROR=1`` shows the traceback instead. Anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

import difflib
import functools
import logging
import math
import os
import re
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

log = logging.getLogger(__name__)

#: The Hydra configs ship inside the package as ``fitnet.conf`` (the repository's ``conf/``).
CONFIG_MODULE = "fitnet.conf"
CONFIG_PATH = f"pkg://{CONFIG_MODULE}"
DEVICES = ("auto", "cpu", "cuda")
#: Exit status of a command stopped by an anticipated error (argparse's convention).
EXIT_USER_ERROR = 2


class UserError(ValueError):
    """An anticipated problem with what the user gave (an option, a file); the message names
    the value, what is allowed and, where it helps, what to do."""


def config_dir() -> Path:
    """The folder of the packaged configs (the repository's ``conf/`` in a checkout)."""
    return Path(str(resources.files(CONFIG_MODULE)))


def load_group(group: str, name: str = "default"):
    """One config-group file (e.g. ``inference/default``) as an OmegaConf object, for code that
    runs without Hydra (the Python API)."""
    return OmegaConf.load(config_dir() / group / f"{name}.yaml")


def resolve_device(name: str):
    """``auto`` (CUDA when PyTorch sees a GPU, else the CPU), ``cpu`` or ``cuda``."""
    import torch

    if name not in DEVICES:
        raise UserError(f"device={name!r} is not allowed: choose from {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device=cuda but PyTorch sees no CUDA GPU; use device=auto or cpu")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def positive(key: str, value, allow_null: bool = False) -> float | None:
    """``value`` of option ``key`` as a finite number > 0 (None when ``allow_null`` and null);
    UserError naming it otherwise."""
    if value is None and allow_null:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not (math.isfinite(number) and number > 0):
        allowed = "a number > 0" + (" or null" if allow_null else "")
        raise UserError(f"{key}={value!r} is not allowed: must be {allowed}")
    return number


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


def as_list(value) -> list:
    """A config value that may be one item or a list of them, as a list."""
    if OmegaConf.is_list(value):
        return list(OmegaConf.to_container(value))
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def checkpoint_paths(ckpt) -> list:
    """The ``ckpt`` option as a list of paths; null means the shipped pretrained model, and a
    shipped model's name (``fitnet.pretrained.SHIPPED``: candels_h, generalist) its file."""
    from .pretrained import SHIPPED, default_checkpoint, shipped_checkpoint

    if ckpt is None:
        return [default_checkpoint()]
    return [shipped_checkpoint(c) if str(c) in SHIPPED else c for c in as_list(ckpt)]


def help_text(module: str, config_name: str, doc: str) -> str:
    """``--help`` of a command: its docstring, then its config file and the files of the config
    groups it uses, whose comments give each option's meaning, unit and default."""
    root = config_dir()
    primary = (root / f"{config_name}.yaml").read_text()
    lines = [doc.strip(), "", f"usage: python -m {module} [key=value ...]", ""]
    lines += [f"Options (conf/{config_name}.yaml; override any as key=value):", ""]
    lines += [line for line in _without_hydra_block(primary).splitlines() if line.strip()]
    for group, choice in _default_groups(config_name):
        choices = group_choices(group)
        lines += ["", f"{group}= : one of {', '.join(choices)} (default {choice})"]
        if choice in choices:
            text = (root / group / f"{choice}.yaml").read_text()
            body = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("# @")]
            prefix = "" if "@package _global_" in text else f"{group}."
            lines += [f"  {prefix}{ln}" if not ln.startswith("#") else f"  {ln}" for ln in body]
    lines += ["", "Hydra's own options: --hydra-help.  Full tracebacks: HYDRA_FULL_ERROR=1."]
    return "\n".join(lines)


def _without_hydra_block(text: str) -> str:
    """A config file without its ``hydra:`` block and defaults list (not user options)."""
    out, skip = [], False
    for line in text.splitlines():
        top = line and not line[0].isspace() and not line.startswith("#")
        if top:
            skip = line.startswith(("hydra:", "defaults:"))
        if not skip:
            out.append(line)
    return "\n".join(out)


def _default_groups(config_name: str) -> list[tuple[str, str]]:
    """(group, default choice) of a primary config's defaults list (``_self_`` and nulls out)."""
    data = OmegaConf.to_container(OmegaConf.load(config_dir() / f"{config_name}.yaml"))
    groups = []
    for entry in data.get("defaults", []):
        if isinstance(entry, dict):
            for group, choice in entry.items():
                if choice is not None and not group.startswith("override"):
                    groups.append((group.split("@")[0], str(choice)))
    return groups


def _overrides(argv: list[str]) -> list[str]:
    return [a for a in argv if "=" in a and not a.startswith("-")]


def check_overrides(config_name: str, argv: list[str], module: str) -> None:
    """Compose the config with the command line's overrides before Hydra does, to turn a typo
    or an unknown choice into one line that names it (Hydra suggests ``+key=value``, which
    adds a key no code reads). A multirun's sweeps are left to Hydra."""
    from hydra.errors import HydraException

    overrides = _overrides(argv)
    if any(a in ("-m", "--multirun") for a in argv) or not overrides:
        return
    try:
        compose_packaged(config_name, overrides)
    except (HydraException, OmegaConfBaseException) as err:
        raise UserError(describe_override_error(err, config_name, overrides, module)) from err


def describe_override_error(err: Exception, config_name: str, overrides, module: str) -> str:
    """One line for a composition error of ``overrides``."""
    text = str(err)
    hint = f"python -m {module} --help lists the options"
    unknown = re.search(r"Could not override '([^']+)'", text)
    if unknown is None:
        unknown = re.search(r"Key '([^']+)' is not in struct", text)
    if unknown is not None:
        key = unknown.group(1)
        given = next((o for o in overrides if o.split("=", 1)[0].lstrip("+~") == key), key)
        close = difflib.get_close_matches(key, _known_keys(config_name), n=3)
        maybe = f"; did you mean {' or '.join(close)}?" if close else ""
        return f"{given}: {key!r} is not an option of python -m {module}{maybe} ({hint})"
    missing = re.search(r"Could not find '([^']+)/([^']+)'", text)
    if missing is not None:
        group, choice = missing.groups()
        choices = ", ".join(group_choices(group))
        return f"{group}={choice}: no such choice; choose from {choices} ({hint})"
    first = text.strip().splitlines()[0] if text.strip() else type(err).__name__
    return f"cannot read the options {' '.join(overrides)}: {first} ({hint})"


def _known_keys(config_name: str) -> list[str]:
    cfg = compose_packaged(config_name)
    keys = []

    def walk(node, prefix):
        for key, value in node.items():
            if key == "hydra":
                continue
            name = f"{prefix}{key}"
            keys.append(name)
            if OmegaConf.is_dict(value):
                walk(value, f"{name}.")

    walk(cfg, "")
    return keys


def anticipated(err: BaseException) -> bool:
    """Whether ``err`` is a problem with the user's input rather than a bug."""
    from omegaconf.errors import MissingMandatoryValue

    if isinstance(err, (UserError, MissingMandatoryValue, FileNotFoundError, FileExistsError)):
        return True
    # The project's checks raise ValueError subclasses (DataError, InputError, ConfigError, ...)
    # defined in its own modules; a ValueError from a library is a bug until proven otherwise.
    module = type(err).__module__ or ""
    return isinstance(err, ValueError) and module.split(".")[0] in ("fitnet", "simulate")


def message_of(err: BaseException) -> str:
    from omegaconf.errors import MissingMandatoryValue

    if isinstance(err, MissingMandatoryValue):
        key = getattr(err, "full_key", None) or "an option"
        return f"{key} is required: give {key}=... on the command line (see --help)"
    return " ".join(str(err).split()) or type(err).__name__


def report(err: BaseException) -> None:
    """Print ``err`` as one line and write it to the run's log files."""
    line = f"error: {message_of(err)}"
    record = logging.LogRecord(log.name, logging.ERROR, __file__, 0, line, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
    print(line, file=sys.stderr)


def command(module: str, config_name: str, doc: str) -> Callable:
    """Decorate ``run(cfg)`` into the ``main()`` of ``python -m <module>``: Hydra on the
    packaged config ``config_name``, ``--help`` from the config's comments, one-line errors."""
    import hydra

    def decorate(run: Callable) -> Callable:
        @hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=config_name)
        def task(cfg):
            try:
                return run(cfg)
            except Exception as err:
                if full_error() or not anticipated(err):
                    raise
                report(err)
                raise SystemExit(EXIT_USER_ERROR) from None

        @functools.wraps(run)
        def main():
            argv = sys.argv[1:]
            if any(a in ("-h", "--help") for a in argv):
                print(help_text(module, config_name, doc))
                return None
            try:
                check_overrides(config_name, argv, module)
            except UserError as err:
                if full_error():
                    raise
                report(err)
                raise SystemExit(EXIT_USER_ERROR) from None
            if not any(a.startswith("hydra.job.name=") for a in argv):
                # Hydra names the job (and its log file) after the file of the task function,
                # which is this one: name it after the command instead.
                sys.argv.append(f"hydra.job.name={config_name}")
            return task()

        return main

    return decorate


def full_error() -> bool:
    return os.environ.get("HYDRA_FULL_ERROR") == "1"
