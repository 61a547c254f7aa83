"""The one measurement flow that every row passes through, for ``python -m fitnet.predict``,
``fitnet.evaluate``, ``fitnet.calibrate`` and the Python API alike:

1. **read** (``inputs``: HDF5, FITS, folders, arrays; ``survey``: a mosaic and its catalogue)
   gives each row as a ``Cutout``;
2. **stamps** (``stamps``) brings it to the network (binned, scaled, padded or cropped, the
   row's PSF attached), the **checks** (``quality``) on the way;
3. **network** (``inference.Predictor``) gives each label and its sigma;
4. **fit** (``fit``): a Sersic through the row's PSF, fitted to the row's own pixels (at the
   data's resolution, with its noise and mask), started from the network's answer;
5. **estimate** (here): per label, the network's value or the fit's, whichever is the
   tighter (see ``combine``), in the row's units;
6. **catalogue** (``catalogue``): the table, with a unit on every column, and the checks of the
   predictions (``quality.prediction_checks``) and of the fit.

Why the tighter of the two and not a product: the network's Gaussian is already a posterior
(the prior of its training set times this row's likelihood, as learnt), and the fit's is the
likelihood itself. When the network is tighter the prior is adding information the pixels
alone do not have (faint galaxies): keep it. When the fit is tighter the network has not
reached the pixels' information (bright galaxies, instruments it never saw): the likelihood is
the better estimate, and multiplying the two would count the pixels twice.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from astropy.table import Table

from sersic_runtime.errors import UserError

from .catalogue import column_table
from .fit import FitStage, make_region
from .flags import BITS
from .generalist import COLUMNS as GENERALIST_COLUMNS
from .inference import Predictor
from .inputs import (
    InputError,
    Reader,
    check_given_scale,
    count_images,
    first_fits,
    fits_pixel_scale,
)
from .photometry import AdaptiveMoments
from .quality import Checker, hidden_light, prediction_checks
from .stamps import GeneralistMaker, Stamp, StampMaker, make_stamps
from .survey import survey_cutouts, with_sources

log = logging.getLogger(__name__)

#: Labels the fit needs from the network to start (the rest comes from the stamp).
NEEDS = ("mag", "n", "re", "q")
FIT_MODES = ("auto", "all", "none")
MAG_PER_LN = 2.5 / math.log(10)  # mag per unit of ln flux


@dataclass
class Settings:
    """How a run measures: ``fit`` (conf/fit), ``quality`` (conf/quality, None or not enabled:
    no checks), ``zero_point`` (AB mag of one input unit summed, for the generalist; None: no
    mag), ``gain`` (counts per input unit, for the source's Poisson noise in the fit; None:
    the header's ``GAIN``, else none) and ``batch_size`` (rows per pass)."""

    fit: object
    quality: object = None
    zero_point: float | None = None
    gain: float | None = None
    batch_size: int = 32

    @property
    def checks(self) -> bool:
        return self.quality is not None and bool(self.quality.enabled)


def batched(items: Iterable, size: int) -> Iterator[list]:
    batch = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class Measurer:
    """The flow of the module docstring for one model and one set of settings."""

    def __init__(self, predictor: Predictor, settings: Settings):
        if settings.fit.mode not in FIT_MODES:
            from sersic_runtime.errors import UserError

            raise UserError(
                f"fit={settings.fit.mode!r} is not allowed: choose from {', '.join(FIT_MODES)}"
            )
        self.predictor, self.settings = predictor, settings
        self.can_fit = set(NEEDS) <= set(predictor.labels)
        if not self.can_fit and settings.fit.mode != "none":
            log.warning("the fit is off: the checkpoints predict %s, not all of %s (chi2 is NaN)",
                        predictor.labels, list(NEEDS))  # fmt: skip
        q = settings.quality or _default_quality()
        self.stage = FitStage(settings.fit, q, predictor.device) if self.can_fit else None
        self.moments = AdaptiveMoments(predictor.stamp_size, int(q.fit_moment_iterations),
                                       float(q.fit_moment_sigma_px))  # fmt: skip

    # -- one batch ------------------------------------------------------------------------------

    def rows(self, stamps: list[Stamp]) -> list[dict]:
        """The catalogue row of each stamp (labels in the row's units, what was measured)."""
        out = [self.empty_row(s) for s in stamps]
        good = [k for k, s in enumerate(stamps) if s.image is not None]
        if not good:
            return out
        chosen = [stamps[k] for k in good]
        images = np.stack([s.image for s in chosen])
        psfs = np.stack([s.psf for s in chosen]) if self.predictor.needs_psf else None
        pred, sigma = self.network(images, psfs)
        network = [self.network_estimate(s, pred, sigma, j) for j, s in enumerate(chosen)]
        self.add_pose(chosen, images, network)
        fits = self.fit(chosen, network)
        for j, k in enumerate(good):
            out[k].update(combine(network[j], fits[j], self.predictor.labels, self.from_moments))
            self.finish_row(chosen[j], out[k], fits[j])
        return out

    @property
    def from_moments(self) -> bool:
        """``fit.start=moments``: the fit starts from the stamp's moments, not the network."""
        return self.settings.fit.get("start", "network") == "moments"

    def network(self, images: np.ndarray, psfs) -> tuple[dict, dict]:
        """The network's values and sigmas of ``images`` (and ``psfs``), ``batch_size`` at a
        time (small batches keep the CPU's caches warm)."""
        size = self.settings.batch_size
        parts = [self.predictor.predict(images[i : i + size],
                                        None if psfs is None else psfs[i : i + size])
                 for i in range(0, len(images), size)]  # fmt: skip
        return tuple({k: np.concatenate([p[j][k] for p in parts]) for k in parts[0][j]}
                     for j in (0, 1))  # fmt: skip

    def empty_row(self, stamp: Stamp) -> dict:
        scale = stamp.cutout.pixel_scale if stamp.cutout is not None else None
        return {"source": stamp.source, "flag": stamp.flag, "problem": stamp.problem,
                "columns": dict(stamp.columns), "pixel_scale": scale}  # fmt: skip

    def network_estimate(self, stamp: Stamp, pred: dict, sigma: dict, j: int) -> dict:
        """The network's labels of stamp ``j`` in the row's units: flux (input units), n,
        re_px (the cutout's pixels), q, and their sigmas; mag and re in the model's units too."""
        p, instrument = self.predictor, self.predictor.instrument
        zero_point = float(instrument.get("zero_point_mag", math.nan))
        est = {"model": {k: float(v[j]) for k, v in pred.items()},
               "model_err": {k: float(v[j]) for k, v in sigma.items()}}  # fmt: skip
        if "mag" in pred:
            model_flux = 10 ** (-0.4 * (float(pred["mag"][j]) - zero_point))
            est["flux"] = model_flux / stamp.to_model  # the binned sum keeps the flux
            if "mag" in sigma:
                est["flux_err"] = est["flux"] * float(sigma["mag"][j]) / MAG_PER_LN
        if "re" in pred:
            # the specialist's re is in arcsec; the generalist's in (binned) pixels
            per_px = 1.0 if p.needs_psf else 1.0 / stamp.cutout.pixel_scale
            factor = stamp.factor * per_px
            est["re_px"] = float(pred["re"][j]) * factor
            if "re" in sigma:
                est["re_px_err"] = float(sigma["re"][j]) * factor
        for name in ("n", "q"):
            if name in pred:
                est[name] = float(pred[name][j])
                if name in sigma:
                    est[f"{name}_err"] = float(sigma[name][j])
        return est

    def add_pose(self, stamps: list[Stamp], images: np.ndarray, network: list[dict]) -> None:
        """Centre (the cutout's pixels) and position angle (radian) of each stamp's adaptive
        moments, the fit's start (the network does not predict them). With ``fit.start`` =
        ``moments`` (a fit without the network, for comparisons), the start's flux, size and
        axis ratio come from the moments too: the stamp's total flux, re = 1.18 sigma (a
        Gaussian's), n = 1."""
        x = torch.from_numpy(
            np.ascontiguousarray(images, dtype=np.float32) / self.predictor.noise_rms
        )
        m, c, _ = self.moments.fit(x.reshape(len(x), -1))
        mxx, myy, mxy = m.double().numpy().T
        centre = (self.predictor.stamp_size - 1) / 2
        cx, cy = c.double().numpy().T + centre
        for j, stamp in enumerate(stamps):
            y, x_ = stamp.to_cutout(cy[j], cx[j])
            network[j].update(x=x_, y=y, pa=float(0.5 * np.arctan2(2 * mxy[j], mxx[j] - myy[j])))
            network[j]["gain"] = self.gain(stamp)
            if self.from_moments:
                half = math.sqrt(0.25 * (mxx[j] - myy[j]) ** 2 + mxy[j] ** 2)
                big, small = 0.5 * (mxx[j] + myy[j]) + half, 0.5 * (mxx[j] + myy[j]) - half
                total = max(float(images[j].sum()), self.predictor.noise_rms * len(images[j]))
                network[j].update(  # the sum of a faint galaxy's noisy pixels may be negative
                    flux=total / stamp.to_model, n=1.0,
                    re_px=1.1774 * math.sqrt(max(big, 1e-6)) * stamp.factor,
                    q=math.sqrt(max(small, 1e-6) / max(big, 1e-6)),
                )  # fmt: skip

    def gain(self, stamp: Stamp) -> float:
        """Counts per input unit for the source's Poisson noise: the specialist's exposure time
        times the input's scale to e-/s; the generalist's ``gain`` or header ``GAIN``; else 0."""
        if not self.predictor.needs_psf:
            return float(self.predictor.instrument.get("exposure_time_s", 0.0)) * stamp.to_model
        if self.settings.gain is not None:
            return float(self.settings.gain)
        header = stamp.cutout.header if stamp.cutout is not None else None
        return float(header["GAIN"]) if header is not None and "GAIN" in header else 0.0

    def fit(self, stamps: list[Stamp], network: list[dict]) -> list[dict | None]:
        """The fit of each stamp that ``fit.mode`` asks for; for the others, with the checks of
        the residual on, the likelihood at the network's answer (its chi-square and bound)."""
        mode = self.settings.fit.mode
        wants_chi2 = self.settings.checks and self.settings.quality.checks.bad_fit
        if not self.can_fit or (mode == "none" and not wants_chi2):
            return [None] * len(stamps)
        regions = [
            make_region(s, est, self.settings.fit) for s, est in zip(stamps, network, strict=True)
        ]
        if mode == "all" or (mode == "auto" and self.predictor.needs_psf):
            return self.judge_failures(self.stage.run(regions), regions, network)
        # fit=none wants the residual alone; auto, the bound of flux, n and shape too (helps)
        at_start = self.stage.run(regions, iterate=False,
                                  errors="none" if mode == "none" else "shape")  # fmt: skip
        if mode == "none":
            return at_start
        chosen = [r if helps(network[k], at_start[k], self.settings.fit.auto_ratio) else None
                  for k, r in enumerate(regions)]  # fmt: skip
        fitted = self.judge_failures(self.stage.run(chosen), chosen, network)
        return [f if f is not None else at_start[k] for k, f in enumerate(fitted)]

    def judge_failures(self, fits: list, regions: list, network: list[dict]) -> list:
        """Mark each failed fit (not converged, or ended at n's bound) ``needed``: whether the
        network's answer, which the row then keeps, is short of the pixels' information (a
        network sigma above ``auto_ratio`` times the likelihood's bound at that answer). A fit
        that fails where the network is already at that bound (faint galaxies, whose n the
        likelihood alone cannot hold) costs the row nothing and sets no flag."""
        failed = [fit is not None and fit["iterations"] > 0
                  and (not fit["converged"] or fit["at_bound"]) for fit in fits]  # fmt: skip
        if not any(failed):
            return fits
        bounds = self.stage.run([r if f else None for r, f in zip(regions, failed, strict=True)],
                                iterate=False, errors="shape")  # fmt: skip
        for k, bound in enumerate(bounds):
            if bound is not None:  # the row keeps the network's answer: its residual too
                fits[k]["needed"] = self.from_moments or helps(network[k], bound,
                                                          self.settings.fit.auto_ratio)  # fmt: skip
                fits[k].update(footprint_chi2=bound["footprint_chi2"],
                               footprint_pixels=bound["footprint_pixels"])  # fmt: skip
        return fits

    def finish_row(self, stamp: Stamp, row: dict, fit: dict | None) -> None:
        """Units, positions, the residual's chi-square and the mask's hidden light of a row."""
        cutout, columns = stamp.cutout, row["columns"]
        row["re"] = row["re_px"] * cutout.pixel_scale if "re_px" in row else math.nan
        row["re_err"] = row.get("re_px_err", math.nan) * cutout.pixel_scale
        row["x"], row["y"] = row["x"] + cutout.origin[0], row["y"] + cutout.origin[1]
        row["pa_deg"] = math.degrees(row["pa"]) % 180.0  # the contract's: [0, 180) from +x
        row["pa_deg_err"] = math.degrees(row.get("pa_err", math.nan))
        zero_point = row["zero_point"] = self.zero_point(stamp)
        if zero_point is not None and row.get("flux", 0) > 0:
            row["mag"] = zero_point - MAG_PER_LN * math.log(row["flux"])
            row["mag_err"] = MAG_PER_LN * row.get("flux_err", math.nan) / row["flux"]
        self.model_units(stamp, row)
        if fit is not None:
            columns.update(chi2=fit["footprint_chi2"], chi2_pixels=fit["footprint_pixels"],
                           fit_iterations=fit["iterations"])  # fmt: skip
            if set(row["fitted"]) >= {"flux", "n", "re_px", "q"}:
                # every label is the fit's, on the cutout's own pixels and PSF
                drop_problem(row, "psf_range", "outside the trained")
            if fit.get("needed", False):
                why = "did not converge" if not fit["converged"] else "ended at n's bound"
                add_problem_row(
                    row, "fit_failed", f"the fit {why} after {fit['iterations']} iterations"
                )
        if cutout.mask is not None and "re_px" in row:
            y0, x0 = cutout.origin[1], cutout.origin[0]
            columns["masked_light"] = hidden_light(
                np.asarray(cutout.mask) != 0, row["x"] - x0, row["y"] - y0, row["pa"],
                row.get("n", math.nan), row["re_px"], row.get("q", math.nan),
            )  # fmt: skip

    def model_units(self, stamp: Stamp, row: dict) -> None:
        """The row's estimate in the network's own units (``model_value``, ``model_sigma``),
        where its training prior and its checks live."""
        value, sigma = {}, {}
        if "flux" in row and row["flux"] > 0:
            zp = float(self.predictor.instrument.get("zero_point_mag", math.nan))
            value["mag"] = zp - MAG_PER_LN * math.log(row["flux"] * stamp.to_model)
            sigma["mag"] = MAG_PER_LN * row.get("flux_err", math.nan) / row["flux"]
        if "re_px" in row:
            factor = stamp.factor if self.predictor.needs_psf else 1.0 / stamp.cutout.pixel_scale
            value["re"], sigma["re"] = (
                row["re_px"] / factor,
                row.get("re_px_err", math.nan) / factor,
            )
        for name in ("n", "q"):
            if name in row:
                value[name], sigma[name] = row[name], row.get(f"{name}_err", math.nan)
        row["model_value"], row["model_sigma"] = value, sigma

    def zero_point(self, stamp: Stamp) -> float | None:
        """AB mag of one input unit summed: the specialist's from its instrument and the
        input's scale to e-/s; the generalist's given or from the header (``generalist``)."""
        if not self.predictor.needs_psf:
            zp = float(self.predictor.instrument["zero_point_mag"])
            return zp + MAG_PER_LN * math.log(stamp.to_model)
        return self.settings.zero_point

    # -- the whole input --------------------------------------------------------------------

    def table(self, stamps: Iterable[Stamp], progress=None, extra_columns=None,
              parts=None) -> Table:  # fmt: skip
        """The catalogue of ``stamps`` (one row each, in order; ``progress`` called with the
        rows done; ``extra_columns``: name -> (unit, description) of values the stamps'
        ``columns`` hold). With ``parts`` (``fitnet.parts.Parts``), its rows come first and
        ``stamps`` are the rows after them; each batch is added to the parts."""
        rows = [] if parts is None else parts.rows
        step = self.settings.batch_size
        if self.can_fit:  # the fit's batches are drawn from all the rows of a step
            step = max(step, int(self.settings.fit.batch_rows))
        for batch in batched(stamps, step):
            new = self.rows(batch)
            if parts is None:
                rows.extend(new)
            else:
                parts.add(new)
            if progress is not None:
                progress(len(batch))
        table = column_table(rows, self.predictor, self.settings, extra_columns)
        if self.settings.checks:
            self.check_predictions(table, rows)
        return table

    def check_predictions(self, table: Table, rows: list[dict]) -> None:
        """The checks of the estimates, in the model's own units (its prior's)."""
        model_units = Table({name: [r.get("model_value", {}).get(name, math.nan) for r in rows]
                             for name in self.predictor.labels})  # fmt: skip
        for name in self.predictor.labels:
            model_units[f"{name}_err"] = [
                r.get("model_sigma", {}).get(name, math.nan) for r in rows
            ]
        for name in ("chi2", "chi2_pixels", "masked_light"):
            if name in table.colnames:
                model_units[name] = table[name]
        flags, problems = np.asarray(table["flag"]).copy(), list(table["problem"])
        for name, bad, details in prediction_checks(
            model_units, self.predictor, self.settings.quality
        ):
            flags[bad] |= BITS[name]
            for i in np.flatnonzero(bad):
                problems[i] = "; ".join(p for p in (problems[i], f"{name}: {details[i]}") if p)
        table["flag"], table["problem"] = flags, np.array(problems, dtype=str)


def helps(network: dict, bound: dict | None, ratio: float) -> bool:
    """Whether a fit helps a row (``fit=auto``, the specialist): a network sigma above
    ``ratio`` times the likelihood's bound for that label at the network's answer."""
    if bound is None:
        return False
    for err in ("flux_err", "n_err", "re_px_err", "q_err"):
        net, fit = network.get(err, math.nan), bound.get(err, math.nan)
        if math.isfinite(net) and math.isfinite(fit) and net > ratio * fit:
            return True
    return False


def combine(network: dict, fit: dict | None, labels, fit_only: bool = False) -> dict:
    """The row's estimate: per label the network's value and sigma, or the fit's where the fit
    iterated, converged within its bounds and is the tighter (module docstring), or always
    with ``fit_only``; ``pa``, ``x`` and ``y`` from the fit when it ran, else the stamp's
    moments (no sigma)."""
    row = {k: v for k, v in network.items() if k not in ("model", "model_err")}
    row["fitted"] = []
    good = (fit is not None and fit["iterations"] > 0 and fit["converged"] and not fit["at_bound"]
            and all(math.isfinite(fit[k]) for k in ("flux", "n", "re_px", "q", "pa", "x", "y")))  # fmt: skip
    if not good:
        row["pa_err"] = math.nan if fit is None or not fit["iterations"] else fit["pa_err"]
        return row
    for name in ("flux", "n", "re_px", "q"):
        net = network.get(f"{name}_err", math.inf)
        if fit_only or not math.isfinite(net) or fit[f"{name}_err"] < net:
            row[name], row[f"{name}_err"] = fit[name], fit[f"{name}_err"]
            row["fitted"].append(name)
    for name in ("pa", "x", "y"):
        row[name], row[f"{name}_err"] = fit[name], fit[f"{name}_err"]
    return row


def add_problem_row(row: dict, name: str, detail: str) -> None:
    row["flag"] = row["flag"] | BITS[name]
    row["problem"] = "; ".join(p for p in (row["problem"], f"{name}: {detail}") if p)


def drop_problem(row: dict, name: str, containing: str) -> None:
    """Remove ``row``'s ``name`` problems whose text holds ``containing`` (a problem of the
    network's answer that the fit replaced); the bit goes when no ``name`` problem is left."""
    parts = [p for p in row["problem"].split("; ") if p]
    keep = [p for p in parts if not (p.startswith(f"{name}:") and containing in p)]
    row["problem"] = "; ".join(keep)
    if not any(p.startswith(f"{name}:") for p in keep):
        row["flag"] = row["flag"] & ~BITS[name]


@functools.lru_cache(maxsize=1)
def _default_quality():
    """conf/quality as packaged (read once: its numbers, where no run gives its own)."""
    from sersic_runtime.configs import load_group

    return load_group("quality")


# -- the flow's set-up ---------------------------------------------------------------------------


def checker_for(predictor: Predictor, quality) -> Checker | None:
    """The image checks of ``quality`` (conf/quality) for ``predictor``'s stamps, or None when
    they are off."""
    if quality is None or not quality.enabled:
        return None
    return Checker(quality, predictor.stamp_size, predictor.noise_rms, predictor.noise_range,
                   predictor.instrument.get("noise_correlation_core"))  # fmt: skip


def maker_for(predictor: Predictor, settings: Settings, input_scale: float = 1.0, pad_seed: int = 0,
              psfs=None):  # fmt: skip
    """The stamp maker of ``predictor``: ``StampMaker`` with the model's own PSF (the
    specialist), or ``GeneralistMaker`` with each row's from ``psfs`` (``psfs.PSFSource``)."""
    instrument = predictor.instrument
    profile = None
    if not predictor.needs_psf and instrument.get("psf") is not None:
        from simulate.psf_record import from_record

        profile = from_record(instrument["psf"]).withFlux(1.0)
    inner = StampMaker(predictor.stamp_size, predictor.noise_rms,
                       1.0 if predictor.needs_psf else input_scale, pad_seed,
                       checker_for(predictor, settings.quality), predictor.noise_range[0],
                       profile)  # fmt: skip
    if not predictor.needs_psf:
        return inner
    if psfs is None:
        raise UserError(f"{predictor.paths[0]} takes the PSF as an input: give psf=psf.fits (a "
                        "FITS image of the cutouts' PSF, a cube or folder of them, or a PSFEx or "
                        "PIFF model)")  # fmt: skip
    fwhm = instrument.get("psf_fwhm_range_px") or (0.0, math.inf)
    config = predictor.payload["model"]["config"]
    return GeneralistMaker(inner, psfs, int(config["psf_size"]), tuple(fwhm),
                           settings.quality or _default_quality())  # fmt: skip


def columns_of(predictor: Predictor) -> dict:
    """Columns a model's stamp maker adds: the generalist's binning and scaling."""
    return GENERALIST_COLUMNS if predictor.needs_psf else {}


def measure_stamps(measurer: Measurer, stamps: Iterator[Stamp], count: int | None, name,
                   progress: bool, desc: str = "predict", parts=None) -> Table:  # fmt: skip
    """The catalogue of ``stamps`` (``count`` of them, when known, for the progress bar): the
    first stamp made before the bar, so that a problem with the whole input ends the run at
    once; an input whose every row has the wrong noise or sky refused (``name`` in the
    message). With ``parts``, ``stamps`` are the rows after the saved ones."""
    from tqdm import tqdm

    first = next(stamps, None)
    stamps = itertools.chain([] if first is None else [first], stamps)
    done = 0 if parts is None else len(parts.rows)
    with tqdm(total=count, initial=done, unit="img", desc=desc, disable=not progress) as bar:
        table = measurer.table(stamps, bar.update, columns_of(measurer.predictor), parts)
    if measurer.settings.checks:
        refuse_whole_input(table, name)
    return table


def measure_cutouts(measurer: Measurer, images, *, input_scale: float = 1.0, pad_seed: int = 0,
                    pixel_scale: float | None = None, allow_mismatch: bool = False, mask=None,
                    psfs=None, progress: bool = False, desc: str = "predict",
                    parts=None) -> Table:  # fmt: skip
    """The catalogue of ``images`` (a path: HDF5, FITS or a folder of FITS; an array; or a
    list of arrays or paths; ``inputs.Reader``), one row per image in input order.
    ``input_scale`` turns the specialist's pixels into e-/s per pixel; ``pad_seed`` seeds the
    noise that pads small images and replaces masked pixels and neighbours; ``pixel_scale``
    (arcsec / pixel) is that of images that state none; ``mask`` marks the user's masked
    pixels; ``psfs`` gives the generalist each row's PSF; ``parts`` (``fitnet.parts.Parts``)
    holds rows an earlier run measured, which are not read again."""
    predictor = measurer.predictor
    if not isinstance(images, (str, Path, np.ndarray)):
        images = list(images)  # read once: the reader and the progress bar both look at it
    check_given_scale(images, pixel_scale)  # the header wins; a clash is one line, up front
    if predictor.needs_psf:
        path, header = first_fits(images)
        scale = (header and fits_pixel_scale(header)) or pixel_scale
        if not scale:
            raise InputError("the images state no pixel scale: give pixel_scale= (arcsec / pixel)")
        reference = "the first image's {scale:.5g}: measure cutouts of one pixel scale per run"
        reader = Reader(scale, False, pixel_scale, reference)
    else:
        reader = Reader(predictor.pixel_scale, allow_mismatch, pixel_scale)
    maker = maker_for(predictor, measurer.settings, input_scale, pad_seed, psfs)
    stamps = make_stamps(after_saved(reader.cutouts(images, mask), parts), maker)
    name = images if isinstance(images, (str, Path)) else "the images"
    return measure_stamps(measurer, stamps, count_images(images), name, progress, desc, parts)


def measure_mosaics(measurer: Measurer, mosaics, sources: Table, columns, *,
                    input_scale: float = 1.0, pad_seed: int = 0, pixel_scale: float | None = None,
                    allow_mismatch: bool = False, psfs=None, progress: bool = False,
                    parts=None) -> Table:  # fmt: skip
    """The catalogue of every row of ``sources`` measured on the mosaic it lies deepest in
    (``survey``), the catalogue's own columns kept beside the measurement (``parts``: as in
    ``measure_cutouts``)."""
    predictor = measurer.predictor
    cutouts, placed = survey_cutouts(predictor, mosaics, sources, columns, predictor.stamp_size,
                                     quality=measurer.settings.quality or _default_quality(),
                                     pixel_scale=pixel_scale, allow_mismatch=allow_mismatch)  # fmt: skip
    maker = maker_for(predictor, measurer.settings, input_scale, pad_seed, psfs)
    stamps = make_stamps(after_saved(cutouts, parts), maker)
    table = measure_stamps(measurer, stamps, len(sources), str(mosaics[0].path), progress,
                           parts=parts)  # fmt: skip
    return with_sources(sources, table, mosaics, placed)


def after_saved(cutouts: Iterator, parts) -> Iterator:
    """The ``cutouts`` after the rows ``parts`` holds (each row's stamp depends on its own
    index only, so the rows measured now are those an uninterrupted run measures)."""
    return cutouts if parts is None else itertools.islice(cutouts, len(parts.rows), None)


def refuse_whole_input(table: Table, name) -> None:
    """InputError naming the input ``name`` when every row of ``table`` has the ``noise`` (or
    ``background``) bit: then its units, depth or sky are not the model's, and no row is worth
    writing."""
    if not len(table):
        return
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


def measure_file(predictor: Predictor, path, fit, quality, batch_size: int, progress: bool,
                 desc: str) -> Table:  # fmt: skip
    """The catalogue of a data file of this project's layout (``fitnet.evaluate``,
    ``fitnet.calibrate``): ``fit`` a conf/fit config, ``quality`` the checks (or None); the
    generalist's PSFs and zero point are the file's own (``/psf``, ``zero_point_mag``)."""
    from .data import describe_split
    from .psfs import RowImages

    zero_point = None
    if predictor.needs_psf:
        zero_point = describe_split(path, required=()).get("zero_point_mag")
    settings = Settings(fit, quality, zero_point, None, batch_size)
    psfs = RowImages() if predictor.needs_psf else None
    return measure_cutouts(
        Measurer(predictor, settings), path, psfs=psfs, progress=progress, desc=desc
    )
