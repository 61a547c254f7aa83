"""The optimiser and learning-rate schedule of a training run, from registered names only.

``conf/optim`` and ``conf/scheduler`` name a class in ``_target_``; only the names registered
here reach a constructor (a config cannot make training call anything else). The other keys
are the class's keyword arguments.
"""

from __future__ import annotations

import torch
from omegaconf import OmegaConf

from sersic_runtime.errors import UserError

OPTIMIZERS = {
    "torch.optim.SGD": torch.optim.SGD,
    "torch.optim.Adam": torch.optim.Adam,
    "torch.optim.AdamW": torch.optim.AdamW,
}
SCHEDULERS = {
    "torch.optim.lr_scheduler.ConstantLR": torch.optim.lr_scheduler.ConstantLR,
    "torch.optim.lr_scheduler.CosineAnnealingLR": torch.optim.lr_scheduler.CosineAnnealingLR,
    "torch.optim.lr_scheduler.ReduceLROnPlateau": torch.optim.lr_scheduler.ReduceLROnPlateau,
    "torch.optim.lr_scheduler.StepLR": torch.optim.lr_scheduler.StepLR,
    "torch.optim.lr_scheduler.ExponentialLR": torch.optim.lr_scheduler.ExponentialLR,
}


def _construct(spec, registry: dict, key: str, first):
    spec = OmegaConf.to_container(spec, resolve=True) if OmegaConf.is_config(spec) else dict(spec)
    target = spec.pop("_target_", None)
    if target not in registry:
        raise UserError(
            f"{key}._target_={target!r} is not allowed: choose from {', '.join(registry)}"
        )
    try:
        return registry[target](first, **spec)
    except TypeError as err:
        raise UserError(f"{key}: {target} does not take these options ({err})") from None


def make_optimizer(spec, parameters) -> torch.optim.Optimizer:
    """The optimiser of ``spec`` (conf/optim) over ``parameters``."""
    return _construct(spec, OPTIMIZERS, "optim", parameters)


def make_scheduler(spec, optimizer):
    """The learning-rate schedule of ``spec`` (conf/scheduler) of ``optimizer``."""
    return _construct(spec, SCHEDULERS, "scheduler", optimizer)
