"""Targets, their transforms and standardisation (fitted on the training split)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sersic_runtime.errors import UserError
from simulate.priors import FIT_LABELS, LABEL_UNITS

#: Labels the network can regress, with units (docs/contract.md, section 2). Flips and 90-degree rotations
#: of a stamp leave all of them unchanged, so augmentation needs no label update.
TARGETS = {name: LABEL_UNITS[name] for name in FIT_LABELS}
TRANSFORMS = ("identity", "log")


class TargetError(UserError):
    """A requested target, transform or calibration option does not exist or is not allowed."""


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
    """Per-label transform then standardisation: ``z = (f(y) - mean) / std``.

    ``sigma_scale`` multiplies the network's sigmas (standardised units) before decoding: the
    calibration measured on the validation split (see ``calibration_scale``). Shape (T,), or
    (len(sigma_mag_edges) + 1, T) with one row per bin of *predicted* magnitude (AB mag) between
    the ``sigma_mag_edges``; None = no calibration.
    """

    names: list[str]
    transforms: list[str]
    mean: np.ndarray
    std: np.ndarray
    sigma_scale: np.ndarray | None = None
    sigma_mag_edges: list[float] | None = None

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

    def bounds(self, prior: dict, margin: float) -> list[list[float]]:
        """Standardised [low, high, below, above] (each T values) of a bounded head: the prior
        ``prior`` (label -> [min, max]) in each label's transform (for log labels, of the log)
        and the margins beyond it, ``margin`` of each range; q's margin above stops at 1 (b/a
        cannot exceed it)."""
        missing = [name for name in self.names if name not in prior]
        if missing:
            raise TargetError(
                f"the training files record no prior for {missing} (their /config): a bounded "
                "head keeps predictions inside it; train with bounded_head=false"
            )
        ends = self._forward(np.array([[prior[n][k] for n in self.names] for k in (0, 1)], float))
        below = margin * (ends[1] - ends[0])
        above = below.copy()
        if "q" in self.names and self.transforms[self.names.index("q")] == "identity":
            j = self.names.index("q")
            above[j] = max(0.0, min(above[j], 1.0 - ends[1, j]))
        low, high = (ends - self.mean) / self.std
        return [
            low.tolist(),
            high.tolist(),
            (below / self.std).tolist(),
            (above / self.std).tolist(),
        ]

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
        if sigma is not None:
            mag = t[:, self.names.index("mag")] if "mag" in self.names else None
            sigma = sigma * self.sigma_factors(mag, len(t))
        for j, name in enumerate(self.transforms):
            if name == "log":
                y[:, j] = np.exp(t[:, j])
                if sigma is not None:
                    sigma[:, j] = y[:, j] * sigma[:, j]
        return y, sigma

    def sigma_factors(self, mag_pred: np.ndarray | None, count: int) -> np.ndarray:
        """The calibration factors (count, T) of ``count`` galaxies with predicted magnitudes
        ``mag_pred`` (AB mag; needed only with per-bin factors); ones without calibration."""
        shape = (count, len(self.names))
        if self.sigma_scale is None:
            return np.ones(shape)
        if self.sigma_scale.ndim == 2:  # per bin of predicted magnitude
            return self.sigma_scale[np.digitize(mag_pred, self.sigma_mag_edges)]
        return np.broadcast_to(self.sigma_scale, shape)

    def calibrate(
        self, scores: np.ndarray, mag_pred: np.ndarray | None, mag_edges, min_count: int
    ) -> None:
        """Set the sigma factors from the standard scores (N, T) of held-out galaxies
        (``calibration_scale``): per bin of predicted magnitude (``mag_pred``, AB mag) between
        ``mag_edges`` when mag is a label and there are edges, else one factor per label."""
        by_mag = "mag" in self.names and len(mag_edges) > 0
        self.sigma_mag_edges = [float(e) for e in mag_edges] if by_mag else None
        self.sigma_scale = calibration_scale(
            scores, mag_pred if by_mag else None, self.sigma_mag_edges, min_count
        )

    def state(self) -> dict:
        return {
            "names": list(self.names),
            "transforms": list(self.transforms),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "sigma_scale": None if self.sigma_scale is None else self.sigma_scale.tolist(),
            "sigma_mag_edges": self.sigma_mag_edges,
        }

    @classmethod
    def from_state(cls, state: dict) -> LabelScaler:
        scale = state.get("sigma_scale")  # absent in checkpoints written before calibration
        return cls(
            state["names"],
            state["transforms"],
            np.array(state["mean"]),
            np.array(state["std"]),
            None if scale is None else np.array(scale),
            state.get("sigma_mag_edges"),
        )


#: Fraction of a Gaussian within one sigma of its mean.
ONE_SIGMA_COVERAGE = 0.6826894921370859


def calibration_scale(
    scores: np.ndarray,
    mag_pred: np.ndarray | None = None,
    mag_edges: list[float] | None = None,
    min_count: int = 1,
) -> np.ndarray:
    """Per label, the factor s that puts 68.27% of ``|scores| / s`` below 1.

    ``scores`` (N, T) are the standard scores (true - predicted) / sigma of held-out galaxies in
    the network's standardised units. A network trained with the Gaussian NLL for a few epochs
    does not yet give sigmas of the right size, and this factor makes the 68% intervals right on
    held-out data (temperature scaling for regression). With ``mag_pred`` (AB mag) and
    ``mag_edges``, one factor per bin of predicted magnitude, shape (bins, T): the sigmas of
    bright and faint galaxies are off by different factors. A bin with fewer than ``min_count``
    galaxies takes the overall factor.
    """
    ratio = np.abs(np.asarray(scores, dtype=float))
    overall = np.quantile(ratio, ONE_SIGMA_COVERAGE, axis=0)
    if mag_pred is None or not mag_edges:
        return overall
    which = np.digitize(mag_pred, mag_edges)
    rows = []
    for b in range(len(mag_edges) + 1):
        inside = ratio[which == b]
        rows.append(
            np.quantile(inside, ONE_SIGMA_COVERAGE, axis=0) if len(inside) >= min_count else overall
        )
    return np.stack(rows)


def spec_error(name: str, pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Per-galaxy error of label ``name`` as docs/contract.md, section 7 defines it."""
    pred, true = np.asarray(pred, dtype=float), np.asarray(true, dtype=float)
    if name == "re":
        return (pred - true) / true
    if name == "n":
        return np.log10(pred / true)
    return pred - true  # mag, q


def validate_calibration(calibration) -> None:
    """Check the ``calibration`` group (conf/calibration) shared by train and calibrate."""
    edges = list(calibration.mag_edges)
    if edges != sorted(set(edges)):
        raise TargetError(
            f"calibration.mag_edges={edges} must be strictly increasing magnitudes (or [])"
        )
    if not calibration.min_count >= 1:
        raise TargetError(f"calibration.min_count={calibration.min_count} must be >= 1")
