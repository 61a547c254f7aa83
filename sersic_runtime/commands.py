"""``command``: the wrapper that gives each ``python -m`` entry point of ``simulate`` and
``fitnet`` its ``--help`` and its one-line errors.

Anticipated errors (a bad option, a missing or malformed input, a checkpoint that does not fit)
are ``UserError`` subclasses or ``ValueError``/``FileNotFoundError`` raised by the project's
checks: the command prints one line, ``error: <what> (<hint>)``, writes it to the run's log and
exits with status 2, and removes the run's output folder when the failed run left nothing in it
but Hydra's own files. ``HYDRA_FULL_ERROR=1`` shows the traceback instead. Anything else is a
bug and keeps its traceback.

Options are ``key=value``; a ``--key`` or a bare word is answered with one line saying so
(Hydra's usage text otherwise). Commands import what their work needs inside ``run``, so that
``--help`` answers without loading PyTorch, GalSim or astropy.
"""

from __future__ import annotations

import difflib
import functools
import logging
import os
import re
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .configs import CONFIG_PATH, compose_packaged, config_dir, group_choices
from .errors import UserError

log = logging.getLogger(__name__)

#: Exit status of a command stopped by an anticipated error (argparse's convention).
EXIT_USER_ERROR = 2
#: Hydra's own flags, and which of them take a value (the next word).
HYDRA_FLAGS = {"-h", "--help", "--hydra-help", "--version", "-m", "--multirun", "-r", "--run",
               "--resolve", "-sc", "--shell-completion", "-i", "--info"}  # fmt: skip
HYDRA_VALUE_FLAGS = {"-c", "--cfg", "-p", "--package", "-cp", "--config-path", "-cn",
                     "--config-name", "-cd", "--config-dir", "--experimental-rerun"}  # fmt: skip
#: Packages whose ValueError subclasses are the project's checks (anticipated, one line).
OWN_PACKAGES = ("fitnet", "simulate", "sersic_runtime")


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
    """The command line's Hydra overrides: key=value, +key=value and ~key."""
    return [a for a in argv if ("=" in a and not a.startswith("-")) or a.startswith("~")]


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
    bracket = next((o for o in overrides if "[" in o.split("=", 1)[-1] and "'" not in o
                    and '"' not in o and not o.split("=", 1)[-1].startswith("[")), None)  # fmt: skip
    if bracket is not None:
        key, value = bracket.split("=", 1)
        return (f"{bracket}: a value with brackets must be quoted for Hydra, inside the shell's "
                f"quotes: '{key}=\"{value}\"' ({hint})")  # fmt: skip
    return f"cannot read the options {' '.join(overrides)}: {first} ({hint})"


def _known_keys(config_name: str) -> list[str]:
    """Every option of ``config_name`` (dotted), without reading any value (a required
    ``???`` option would raise)."""
    cfg = compose_packaged(config_name)
    tree = OmegaConf.to_container(cfg, resolve=False, throw_on_missing=False)
    keys = []

    def walk(node, prefix):
        for key, value in node.items():
            if key == "hydra":
                continue
            name = f"{prefix}{key}"
            keys.append(name)
            if isinstance(value, dict):
                walk(value, f"{name}.")

    walk(tree, "")
    return keys


def anticipated(err: BaseException) -> bool:
    """Whether ``err`` is a problem with the user's input rather than a bug."""
    from omegaconf.errors import MissingMandatoryValue

    if isinstance(err, (UserError, MissingMandatoryValue, FileNotFoundError, FileExistsError)):
        return True
    # The project's checks raise ValueError subclasses (DataError, InputError, ConfigError, ...)
    # defined in its own modules; a ValueError from a library is a bug until proven otherwise.
    module = type(err).__module__ or ""
    return isinstance(err, ValueError) and module.split(".")[0] in OWN_PACKAGES


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
                remove_empty_run_dir()
                raise SystemExit(EXIT_USER_ERROR) from None

        @functools.wraps(run)
        def main():
            argv = sys.argv[1:]
            if any(a in ("-h", "--help") for a in argv):
                print(help_text(module, config_name, doc))
                return None
            try:
                check_words(argv, module, config_name)
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


def check_words(argv: list[str], module: str, config_name: str) -> None:
    """UserError for a word of the command line that is neither ``key=value`` nor one of
    Hydra's flags (``--input x``, a bare path): options are ``key=value``."""
    words = iter(argv)
    for word in words:
        if word in HYDRA_VALUE_FLAGS:
            next(words, None)
            continue
        if (
            word in HYDRA_FLAGS
            or (not word.startswith("-") and "=" in word)
            or word.startswith("~")
        ):
            continue  # a flag, key=value, or ~key (Hydra's deletion of a key)
        if word.startswith("-"):
            key, value = word.lstrip("-").split("=", 1)[0] or "key", "..."
        else:  # a bare value: the command's first required option is the likeliest
            key, value = next(iter(_required_keys(config_name)), "key"), word
        raise UserError(
            f"{word}: options are key=value, e.g. {key}={value} (python -m {module} --help "
            "lists them)"
        )


def _required_keys(config_name: str) -> list[str]:
    """The options of ``config_name`` that have no default (``???``)."""
    data = OmegaConf.load(config_dir() / f"{config_name}.yaml")
    return [k for k in data if k not in ("defaults", "hydra") and OmegaConf.is_missing(data, k)]


def remove_empty_run_dir() -> None:
    """Remove this run's output folder (and its empty parents) when it holds nothing but
    Hydra's own files: a run that failed at once leaves no empty ``outputs/...`` behind."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        hc = HydraConfig.get()
    except ValueError:  # not inside a Hydra run
        return
    if hc.mode == RunMode.MULTIRUN:
        return
    folder = Path(hc.runtime.output_dir)
    own = {hc.output_subdir, f"{hc.job.name}.log"} - {None}
    if not folder.is_dir() or any(p.name not in own for p in folder.iterdir()):
        return
    logging.shutdown()  # the log file is closed before its folder goes
    shutil.rmtree(folder, ignore_errors=True)
    stop = Path.cwd().resolve()
    for parent in folder.resolve().parents:
        if parent == stop or stop not in parent.parents or any(parent.iterdir()):
            break
        parent.rmdir()
