"""Runtime helpers of fitnet's commands: the device a command runs on, and which checkpoint
files a ``ckpt=`` option names (a path, a list of them, or a shipped model by name). The
command wrapper, the packaged configs and the errors are ``sersic_runtime``'s, which
``simulate`` shares."""

from __future__ import annotations

from pathlib import Path

from sersic_runtime.errors import UserError
from sersic_runtime.options import as_list

DEVICES = ("auto", "cpu", "cuda")
PRETRAINED = Path(__file__).with_name("pretrained")
#: name -> shipped checkpoint (``ckpt=<name>``; the files ship in ``fitnet/pretrained/``)
SHIPPED = {"candels_h": PRETRAINED / "candels_h.pt", "generalist": PRETRAINED / "generalist.pt"}
DEFAULT_MODEL = "candels_h"  # ckpt=null


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


def set_threads(option) -> int:
    """Set PyTorch's CPU threads for ``threads=``: a number from 1 to the cores this process
    may use, or ``auto``: ``OMP_NUM_THREADS`` when the user set it, else the usable cores that
    other work leaves free (``sersic_runtime.cores``). Returns the number set."""
    import os

    import torch

    from sersic_runtime.cores import free_cores, usable_cores

    cores = usable_cores()
    if option == "auto":
        given = os.environ.get("OMP_NUM_THREADS", "")
        threads = int(given) if given.isdigit() and int(given) > 0 else free_cores(cores)
    elif isinstance(option, int) and not isinstance(option, bool) and 1 <= option <= cores:
        threads = option
    else:
        raise UserError(f"threads={option!r} is not allowed: give auto or a whole number from 1 "
                        f"to {cores} (the cores this process may use)")  # fmt: skip
    torch.set_num_threads(threads)
    return threads


def shipped_checkpoint(name: str) -> Path:
    """Path of the shipped model ``name`` (a key of ``SHIPPED``); a clear error if this
    installation lacks its file."""
    path = SHIPPED[name]
    if not path.is_file():
        raise UserError(
            f"ckpt={name}: this installation has no {path}; pass ckpt=PATH to a best.pt"
        )
    return path


def checkpoint_paths(ckpt) -> list:
    """The ``ckpt`` option as a list of paths; null means the shipped default model
    (``DEFAULT_MODEL``), and a shipped model's name (``SHIPPED``) its file."""
    if ckpt is None:
        return [shipped_checkpoint(DEFAULT_MODEL)]
    return [shipped_checkpoint(c) if str(c) in SHIPPED else c for c in as_list(ckpt)]
