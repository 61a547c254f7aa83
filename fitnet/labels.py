"""Targets, their transforms and standardisation (fitted on the training split)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulate.priors import LABEL_UNITS

#: Labels the network can regress, with units (SPEC section 2). Flips and 90-degree rotations
#: of a stamp leave all of them unchanged, so augmentation needs no label update.
TARGETS = {name: LABEL_UNITS[name] for name in ("mag", "n", "re", "q")}
TRANSFORMS = ("identity", "log")


class TargetError(ValueError):
    """A requested target or transform does not exist."""


def parse_targets(target) -> list[str]:
    """``all``, one name, or a list of names -> ordered list of target names."""
    if isinstance(target, str):
        names = list(TARGETS) if target == "all" else [target]
    else:
        names = list(target)
    if not names:
        raise TargetError("target is empty: choose from mag, n, re, q or all")
    for name in names:
        if name not in TARGETS:
            raise TargetError(
                f"target={name!r} does not exist: choose from {', '.join(TARGETS)}, a list of them, or all"
            )
    if len(set(names)) != len(names):
        raise TargetError(f"target={names} names a label twice")
    return names


@dataclass
class LabelScaler:
    """Per-label transform then standardisation: ``z = (f(y) - mean) / std``."""

    names: list[str]
    transforms: list[str]
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, names: list[str], transforms: dict, labels: dict[str, np.ndarray]) -> LabelScaler:
        tf = []
        for name in names:
            t = transforms[name]
            if t not in TRANSFORMS:
                raise TargetError(
                    f"labels.{name}={t!r} is not a transform: choose from {TRANSFORMS}"
                )
            tf.append(t)
        scaler = cls(names, tf, np.zeros(len(names)), np.ones(len(names)))
        z = scaler._forward(np.stack([np.asarray(labels[n], dtype=float) for n in names], axis=1))
        scaler.mean, scaler.std = z.mean(axis=0), z.std(axis=0)
        scaler.std[scaler.std == 0] = 1.0
        return scaler

    def _forward(self, y: np.ndarray) -> np.ndarray:
        out = np.array(y, dtype=float)
        for j, t in enumerate(self.transforms):
            if t == "log":
                if np.any(out[:, j] <= 0):
                    raise ValueError(f"label {self.names[j]} has values <= 0; cannot take its log")
                out[:, j] = np.log(out[:, j])
        return out

    def encode(self, labels: dict[str, np.ndarray]) -> np.ndarray:
        """Physical labels -> standardised array (N, T), float32."""
        y = np.stack([np.asarray(labels[n], dtype=float) for n in self.names], axis=1)
        return ((self._forward(y) - self.mean) / self.std).astype(np.float32)

    def decode(self, z: np.ndarray, sigma_z: np.ndarray | None = None):
        """Standardised predictions (N, T) -> physical values, and sigmas if ``sigma_z`` is given.

        For log-transformed labels the sigma is propagated to first order (``y * sigma``).
        """
        t = np.asarray(z, dtype=float) * self.std + self.mean
        y = t.copy()
        sigma = None if sigma_z is None else np.asarray(sigma_z, dtype=float) * self.std
        for j, name in enumerate(self.transforms):
            if name == "log":
                y[:, j] = np.exp(t[:, j])
                if sigma is not None:
                    sigma[:, j] = y[:, j] * sigma[:, j]
        return y, sigma

    def state(self) -> dict:
        return {
            "names": list(self.names),
            "transforms": list(self.transforms),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
        }

    @classmethod
    def from_state(cls, state: dict) -> LabelScaler:
        return cls(
            state["names"], state["transforms"], np.array(state["mean"]), np.array(state["std"])
        )


def spec_error(name: str, pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-galaxy error of label ``name`` as SPEC section 7 defines it."""
    pred, true = np.asarray(pred, dtype=float), np.asarray(true, dtype=float)
    if name == "re":
        return (pred - true) / true
    if name == "n":
        return np.log10(pred / true)
    return pred - true  # mag, q
