"""Applying trained checkpoints to images, and writing catalogues (CSV, ECSV, FITS) with astropy.

``catalogue`` is the one prediction set-up that ``fitnet.predict``, ``fitnet.evaluate``,
``fitnet.calibrate`` and the Python API (``fitnet.load``) share: images to stamps
(``inputs``), batches through the ``Predictor``, a progress bar, one table row per image.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from astropy.table import Table
from tqdm import tqdm

from sersic_runtime.errors import UserError

from . import checkpoint
from .catalogue import UNITS
from .checkpoint import split_output
from .data import psf_channel
from .flags import BITS
from .inputs import (
    InputError,
    Stamp,
    StampMaker,
    check_given_scale,
    count_images,
    iter_stamps,
)
from .labels import TARGETS
from .photometry import AdaptiveMoments
from .quality import COLUMNS as CHECK_COLUMNS
from .quality import Checker, hidden_light, prediction_checks
from .residuals import COLUMNS as FIT_COLUMNS
from .residuals import MIN_STAMP_PX, NEEDS, FitCheck, stamp_pose

log = logging.getLogger(__name__)


class Predictor:
    """One checkpoint, or several single- or multi-target checkpoints combined.

    Every label must come from exactly one checkpoint; all must expect the same stamp size and
    have been trained on the same pixel scale. With ``ensemble``, the checkpoints are instead
    models of the same labels and instrument (the folds of ``cv.folds``, or several seeds):
    each label is their mean, and its sigma the members' rms sigma and their spread (standard
    deviation) added in quadrature, the variance of the members' mixture.
    """

    def __init__(
        self, ckpts: str | Path | Iterable[str | Path], device: torch.device, amp: bool = False,
        ensemble: bool = False,
    ):  # fmt: skip
        paths = [ckpts] if isinstance(ckpts, (str, Path)) else list(ckpts)
        if not paths:
            raise checkpoint.CheckpointError(
                "no checkpoint given: pass ckpt=PATH or ckpt=[PATH,PATH]"
            )
        self.device = device
        self.amp = amp  # bfloat16 autocast of the forward pass
        self.ensemble = ensemble
        if ensemble and len(paths) < 2:
            raise checkpoint.CheckpointError(
                f"ensemble=true needs two or more checkpoints (ckpt=[a.pt,b.pt,...]), got {len(paths)}"
            )
        self.members = []  # (model, scaler, norm, loss, path)
        self.payloads: list[dict] = []  # the checkpoint dicts (history, config, instrument)
        self.labels: list[str] = []
        self.has_sigma: dict[str, bool] = {}
        for path in paths:
            model, scaler, norm, payload = checkpoint.load_model(path, device)
            model = model.to(memory_format=torch.channels_last)  # 1.7x faster convolutions on CPU
            if ensemble and self.members:
                check_ensemble_member(self.payloads[0], payload, paths[0], path)
            for name in scaler.names if not (ensemble and self.members) else []:
                if name in self.labels:
                    raise checkpoint.CheckpointError(
                        f"label {name!r} is predicted by two checkpoints (second: {path})"
                    )
                self.labels.append(name)
                self.has_sigma[name] = ensemble or payload["loss"] == "gaussian_nll"
            self.members.append((model, scaler, norm, payload["loss"], str(path)))
            self.payloads.append(payload)
            if len(self.members) == 1:
                self.payload = payload
                self.stamp_size = payload["model"]["stamp_size"]
                self.instrument = payload["instrument"]
                #: the model takes each stamp's PSF as a second input (PSFConditioned)
                self.needs_psf = payload["model"].get("in_chans", 1) == 2
            elif (payload["model"].get("in_chans", 1) == 2) != self.needs_psf:
                raise checkpoint.CheckpointError(
                    f"{path} and {paths[0]}: one takes a PSF input and the other does not"
                )
            else:
                if payload["model"]["stamp_size"] != self.stamp_size:
                    raise checkpoint.CheckpointError(
                        f"{path} expects {payload['model']['stamp_size']} px stamps, {paths[0]} {self.stamp_size}"
                    )
                scale = payload["instrument"].get("pixel_scale_arcsec")
                if scale != self.instrument.get("pixel_scale_arcsec"):
                    raise checkpoint.CheckpointError(
                        f"{path} was trained at {scale} arcsec/pixel, {paths[0]} at "
                        f"{self.instrument.get('pixel_scale_arcsec')}"
                    )
        self.labels = [name for name in TARGETS if name in self.labels]  # contract order
        self.transforms = {
            name: t
            for _, scaler, *_ in self.members
            for name, t in zip(scaler.names, scaler.transforms, strict=True)
        }
        self.paths = [str(p) for p in paths]
        #: label -> [min, max] of the training prior, where the checkpoints record it
        self.prior = {
            k: v for payload in self.payloads for k, v in (payload.get("prior") or {}).items()
        }

    @property
    def pixel_scale(self) -> float:
        """arcsec / pixel of the training data."""
        return float(self.instrument["pixel_scale_arcsec"])

    @property
    def noise_rms(self) -> float:
        """Background rms of the training data (the median of a weight map's depths), e-/s per pixel."""
        return float(self.instrument["background_rms_e_per_s"])

    @property
    def noise_range(self) -> tuple[float, float]:
        """Least and largest background rms the model was trained on, e-/s per pixel (one value
        for a constant-noise model)."""
        rms = self.noise_rms
        return (float(self.instrument.get("background_rms_min_e_per_s", rms)),
                float(self.instrument.get("background_rms_max_e_per_s", rms)))  # fmt: skip

    @property
    def label_scaler(self):
        """The label scaler of a one-checkpoint predictor (its sigma calibration lives there)."""
        if len(self.members) != 1:
            raise checkpoint.CheckpointError(
                f"{len(self.members)} checkpoints combined: each has its own label scaler"
            )
        return self.members[0][1]

    def predict(self, images: np.ndarray, psfs=None) -> tuple[dict, dict]:
        """Values and sigmas (where the model gives them) per label for a batch of stamps
        (B, S, S) in e-/s per pixel, S the model's ``stamp_size``, and for a PSF-conditioned
        model their PSF images ``psfs`` (B, P, P). Images of other sizes go through
        ``catalogue`` (or ``fitnet.load().predict``), which pads or crops them."""
        images = np.asarray(images)
        if images.ndim != 3 or images.shape[1:] != (self.stamp_size, self.stamp_size):
            raise UserError(
                f"images of shape {images.shape}: Predictor.predict takes stamps "
                f"(B, {self.stamp_size}, {self.stamp_size}); fitnet.load().predict takes any size"
            )
        if self.needs_psf and (psfs is None or len(psfs) != len(images)):
            raise UserError("this model takes each stamp's PSF: give psfs (B, P, P), one per stamp")
        values, sigmas = {}, {}
        with (
            torch.inference_mode(),
            torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp),
        ):
            x_raw = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).to(
                self.device
            )[:, None]
            psf = (
                psf_channel(psfs, self.stamp_size).to(self.device)[:, None]
                if self.needs_psf
                else None
            )
            each = []
            for model, scaler, norm, loss, _ in self.members:
                x = norm(x_raw) if psf is None else torch.cat([norm(x_raw), psf], 1)
                x = x.contiguous(memory_format=torch.channels_last)
                out = model(x).float()
                mu, log_sigma = split_output(out, loss)
                sigma_z = None if log_sigma is None else log_sigma.exp().cpu().numpy()
                pred, sigma = scaler.decode(mu.cpu().numpy(), sigma_z)
                values, sigmas = {}, {}
                for j, name in enumerate(scaler.names):
                    values[name] = pred[:, j]
                    if sigma is not None:
                        sigmas[name] = sigma[:, j]
                each.append((values, sigmas))
        if self.ensemble:
            return combine_ensemble(each)
        return ({k: v for values, _ in each for k, v in values.items()},
                {k: v for _, sigmas in each for k, v in sigmas.items()})  # fmt: skip

    def columns(self) -> list[str]:
        cols = []
        for name in self.labels:
            cols.append(name)
            if self.has_sigma[name]:
                cols.append(f"{name}_err")
        return cols


def check_ensemble_member(first: dict, other: dict, first_path, path) -> None:
    """Members of an ensemble predict the same labels of the same instrument."""
    if other["targets"] != first["targets"]:
        raise checkpoint.CheckpointError(
            f"ensemble=true: {path} predicts {other['targets']}, {first_path} {first['targets']}; "
            "an ensemble averages models of the same labels"
        )
    for key in checkpoint.INSTRUMENT_ATTRS:
        a, b = first["instrument"].get(key), other["instrument"].get(key)
        if a != b:
            raise checkpoint.CheckpointError(
                f"ensemble=true: {path} was trained with {key}={b}, {first_path} with {a}; an "
                "ensemble averages models of the same instrument"
            )


def combine_ensemble(each: list[tuple[dict, dict]]) -> tuple[dict, dict]:
    """The members' (values, sigmas) as one: per label the mean, and the square root of the mean
    variance plus the variance of the means (members without sigmas add only the spread)."""
    values, sigmas = {}, {}
    for name in each[0][0]:
        means = np.stack([v[name] for v, _ in each])
        values[name] = means.mean(0)
        variance = means.var(0)
        if all(name in s for _, s in each):
            variance = variance + np.mean([s[name] ** 2 for _, s in each], axis=0)
        sigmas[name] = np.sqrt(variance)
    return values, sigmas


def batched(stamps: Iterable[Stamp], batch_size: int) -> Iterator[list[Stamp]]:
    batch = []
    for stamp in stamps:
        batch.append(stamp)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def predict_table(
    predictor: Predictor, stamps: Iterable[Stamp], batch_size: int, progress=None, quality=None,
    extra_columns=None,
) -> Table:  # fmt: skip
    """Catalogue with one row per stamp, in order: ``row, source``, the labels and their
    errors, ``flag`` and ``problem`` (and, with the checks of ``quality``, what they measured).

    Rows without a measurement (no stamp image) have NaN values. ``progress`` (optional) is
    called with the number of rows done. With ``quality`` (conf/quality, enabled), the checks
    of the predictions run too: the residual of the predicted Sersic (``bad_fit``), values
    outside the physical range or the training prior (``out_of_range``) and sigmas as wide as
    the prior (``uninformative``). ``extra_columns`` (name -> (unit, description)) are
    values the stamp maker put in each stamp's ``columns``, added as they are.
    """
    rows, sources, flags, problems, measured = [], [], [], [], []
    columns = predictor.columns()
    values = {c: [] for c in columns}
    fit = fit_check(predictor, quality)
    fitted = {name: [] for name in FIT_COLUMNS}
    for batch in batched(stamps, batch_size):
        good = [k for k, s in enumerate(batch) if s.image is not None]
        out = np.full((len(batch), len(columns)), np.nan)
        chi2, pixels = np.full(len(batch), np.nan), np.zeros(len(batch), dtype=np.int64)
        if good:
            images = np.stack([batch[k].image for k in good])
            psfs = np.stack([batch[k].psf for k in good]) if predictor.needs_psf else None
            pred, sigma = predictor.predict(images, psfs)
            for c, col in enumerate(columns):
                out[good, c] = sigma[col[:-4]] if col.endswith("_err") else pred[col]
            if fit is not None:
                chi2[good], pixels[good] = residual_chi2(
                    fit, [batch[k] for k in good], images, pred
                )
            record_hidden_light(predictor, quality, [batch[k] for k in good], images, pred)
        fitted["chi2"].append(chi2)
        fitted["chi2_pixels"].append(pixels)
        for stamp in batch:
            rows.append(len(rows))
            sources.append(stamp.source)
            flags.append(stamp.flag)
            problems.append(stamp.problem)
            measured.append(stamp.columns)
        for c, col in enumerate(columns):
            values[col].append(out[:, c])
        if progress is not None:
            progress(len(batch))
    table = Table()
    table["row"] = np.array(rows, dtype=np.int64)
    table["source"] = np.array(sources, dtype=str) if sources else np.array([], dtype=str)
    for col in columns:
        data = np.concatenate(values[col]) if values[col] else np.array([])
        table[col] = data
        table[col].unit = UNITS[col.removesuffix("_err")] or None
        table[col].description = (
            f"1-sigma uncertainty of {col[:-4]}"
            if col.endswith("_err")
            else f"predicted {col} ({TARGETS[col]})"
        )
    for name, (unit, description) in (extra_columns or {}).items():
        table[name] = np.array([m.get(name, np.nan) for m in measured], dtype=float)
        table[name].unit, table[name].description = unit or None, description
    flags = np.array(flags, dtype=np.int32)
    checks = quality is not None and quality.enabled
    if checks:
        for name, (unit, description) in CHECK_COLUMNS.items():
            table[name] = np.array([m.get(name, np.nan) for m in measured], dtype=float)
            table[name].unit = unit or None
            table[name].description = description
        for name, description in FIT_COLUMNS.items():
            table[name] = np.concatenate(fitted[name]) if fitted[name] else np.array([])
            table[name].description = description
        for name, bad, details in prediction_checks(table, predictor, quality):
            flags[bad] |= BITS[name]
            for i in np.flatnonzero(bad):
                problems[i] = "; ".join(p for p in (problems[i], f"{name}: {details[i]}") if p)
    table["flag"] = flags
    table["flag"].description = "bit mask, 0 = trust the row (fitnet.flags)"
    table["problem"] = np.array(problems, dtype=str) if problems else np.array([], dtype=str)
    table["problem"].description = "the names of the flag bits set, with what was measured"
    table.meta["checkpoints"] = ",".join(predictor.paths)
    table.meta["pixel_scale_arcsec"] = predictor.pixel_scale
    if predictor.instrument.get("zero_point_mag") is not None:
        table.meta["zero_point_mag"] = predictor.instrument["zero_point_mag"]
    return table


def record_hidden_light(predictor: Predictor, quality, stamps: list[Stamp], images, pred) -> None:
    """``masked_light`` in the columns of each stamp with a user's mask: the fraction of the
    predicted Sersic's light within re that the mask hides (``quality.hidden_light``), at the
    stamp's adaptive-moment centre and angle."""
    rows = [k for k, s in enumerate(stamps) if s.masked is not None]
    if not rows or quality is None or not quality.enabled or not set(NEEDS) <= set(pred):
        return
    moments = AdaptiveMoments(predictor.stamp_size, int(quality.fit_moment_iterations),
                              float(quality.fit_moment_sigma_px))  # fmt: skip
    x, y, pa = stamp_pose(moments, images[rows], predictor.noise_rms)
    for j, k in enumerate(rows):
        re_px = float(pred["re"][k]) / predictor.pixel_scale
        stamps[k].columns["masked_light"] = hidden_light(
            stamps[k].masked, x[j], y[j], pa[j], float(pred["n"][k]), re_px, float(pred["q"][k])
        )


def fit_check(predictor: Predictor, quality) -> FitCheck | None:
    """The residual check of ``predictor``, when ``quality`` turns it on and the predictor
    predicts every label a Sersic model needs and records its PSF; else None."""
    if quality is None or not quality.enabled or not quality.checks.bad_fit:
        return None
    why = None
    psfs = {payload["instrument"].get("psf") for payload in predictor.payloads}
    if not set(NEEDS) <= set(predictor.labels):
        why = f"the checkpoints predict {predictor.labels}, not all of {list(NEEDS)}"
    elif predictor.needs_psf:
        why = "a PSF-conditioned model: the check renders with one PSF, not each stamp's"
    elif None in psfs or len(psfs) > 1:
        why = "the checkpoints record no PSF, or different ones"
    elif predictor.stamp_size < MIN_STAMP_PX:
        why = f"{predictor.stamp_size} px stamps are too small (< {MIN_STAMP_PX} px)"
    if why:
        log.warning("the residual check (bad_fit) is off: %s; chi2 is NaN", why)
        return None
    return FitCheck(quality, predictor.instrument, predictor.stamp_size)


def residual_chi2(fit: FitCheck, stamps: list[Stamp], images, pred: dict):
    """The reduced chi-square of the predicted models ``pred`` of ``stamps`` (their ``images``)
    over each target's footprint without the pixels replaced by noise, and its pixel counts."""
    rms = np.array([s.columns.get("noise_ratio", np.nan) for s in stamps]) * fit.noise_rms
    # The measured background is not subtracted: measured on a cutout's border it is noisy and,
    # for a small cutout, holds the galaxy's wings (subtracting it doubled the clean galaxies
    # flagged); a real sky offset sets the background bit instead.
    footprints = [s.footprint for s in stamps]
    replaced = [s.replaced for s in stamps]
    return fit(images, footprints, replaced, rms, {k: pred[k] for k in NEEDS})


def catalogue(
    predictor: Predictor,
    images,
    batch_size: int,
    *,
    input_scale: float = 1.0,
    pad_seed: int = 0,
    quality=None,
    pixel_scale: float | None = None,
    allow_mismatch: bool = False,
    mask=None,
    progress: bool = False,
    desc: str = "predict",
) -> Table:
    """The catalogue of ``images`` (a path: HDF5, FITS or a folder of FITS; an array; or a list
    of arrays or paths; see ``inputs.iter_stamps``), one row per image in input order.

    ``input_scale`` turns the pixels into e-/s per pixel; ``pad_seed`` seeds the noise that
    pads small images (and replaces invalid pixels and neighbours); ``quality`` (conf/quality)
    sets the checks, none when None or not enabled; ``pixel_scale`` (arcsec / pixel) is that of
    images that do not state one; ``mask`` marks bad pixels (``inputs.Reader.stamps``). When
    every image shows the same background or noise problem,
    the input as a whole is refused (InputError): the units or the sky are wrong, not a galaxy.
    """
    if not isinstance(images, (str, Path, np.ndarray)):
        images = list(images)  # read once: the reader and the progress bar both look at it
    check_given_scale(images, pixel_scale)  # the header wins; a clash is one line, up front
    checks = quality is not None and quality.enabled
    checker = checker_for(predictor, quality)
    maker = StampMaker(predictor.stamp_size, predictor.noise_rms, input_scale, pad_seed, checker)
    stamps = iter_stamps(images, maker, predictor.pixel_scale, allow_mismatch, pixel_scale, mask)
    # the first stamp before the progress bar: a problem with the whole input ends here
    first = next(stamps, None)
    stamps = itertools.chain([] if first is None else [first], stamps)
    with tqdm(total=count_images(images), unit="img", desc=desc, disable=not progress) as bar:
        table = predict_table(predictor, stamps, batch_size, bar.update, quality)
    if checks:
        refuse_whole_input(table, images)
    return table


def checker_for(predictor: Predictor, quality) -> Checker | None:
    """The image checks of ``quality`` (conf/quality) for ``predictor``'s stamps, or None when
    they are off."""
    if quality is None or not quality.enabled:
        return None
    return Checker(
        quality,
        predictor.stamp_size,
        predictor.noise_rms,
        predictor.noise_range,
        predictor.instrument.get("noise_correlation_core"),
    )


def refuse_whole_input(table: Table, images) -> None:
    """InputError when every row of ``table`` has the ``noise`` (or ``background``) bit: then
    the input's units, depth or sky are not the model's, and no row is worth writing."""
    if not len(table):
        return
    name = images if isinstance(images, (str, Path)) else "the images"
    flags = np.asarray(table["flag"])
    if np.all(flags & BITS["noise"]):
        ratio = float(np.nanmedian(table["noise_ratio"]))
        raise InputError(
            f"{name}: the noise rms of every image is {ratio:.4g} x the model's; the pixels are "
            "not sky-subtracted e-/s per pixel at the model's depth (input_scale= converts units)"
        )
    sky = np.isfinite(np.asarray(table["background"], dtype=float))  # NaN: no sky in the cutout
    if sky.all() and np.all(flags & BITS["background"]):
        level = float(np.nanmedian(table["background"]))
        raise InputError(
            f"{name}: every image has a background of {level:+.4g} x the noise rms; subtract the "
            "sky first"
        )
