"""Checks that every catalogue row says whether to trust it (docs/contract.md, section 8).

Each image (sky-subtracted e-/s per pixel, any size) is checked before the network sees it:

1. invalid pixels: NaN, infinite or masked pixels are replaced by background noise, like the
   padding; above ``max_invalid_fraction`` the row is flagged and not measured;
2. size: an image far larger than a cutout (``max_cutout_px``) is a field, not one galaxy;
3. background and noise: the median and the robust rms (1.4826 x the median absolute
   deviation) of the border ring, sources excluded, against the model's noise rms;
4. detection (photutils, on the Gaussian-smoothed image): the target is the source at the
   centre, or the nearest within ``search_radius_px``; the flux-weighted centroid of its
   footprint, or, when the footprint holds several sources, the centroid about the peak
   nearest the centre (a brighter neighbour in the same footprint does not pull it);
5. recentring: a source of its own (``is_source``) off by more than ``recentre_px`` is moved to the stamp centre (an
   integer shift, recorded) when the image holds ``min_context_px`` of data on every side of it,
   else flagged ``off_centre``; unless more light sits at the centre than at its mirror point
   through the source (another source at the centre: flagged ``neighbours``);
6. neighbours: the pixels of other sources with a peak of their own are replaced by noise; one
   touching the source with enough flux, or a second prominent peak inside its footprint (a
   blend), is flagged;
7. significance: the S/N of the source's flux in the best of a few Gaussian weights about the
   centre; below ``min_significance`` the row is ``no_source``, not measured.

After the network, ``out_of_range`` flags predictions outside the physical range (q in (0, 1],
n and re > 0), or beyond the training prior (where the checkpoint records it) by more than
``prior_margin`` of its range.
Thresholds live in conf/quality/ with their units.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
from omegaconf import OmegaConf
from photutils.segmentation import detect_sources
from photutils.utils.exceptions import NoDetectionsWarning
from scipy import ndimage
from scipy.special import gammaincinv

from sersic_runtime.errors import UserError

from .flags import BITS

MAD_TO_RMS = 1.4826  # rms of a Gaussian / its median absolute deviation
MEDIAN_ERROR = 1.2533  # standard error of a median of N Gaussian values, in rms / sqrt(N)


@dataclass
class Check:
    """What the checks measured for one image, and the flags they set."""

    flag: int = 0
    details: list[str] = field(default_factory=list)
    columns: dict = field(default_factory=dict)
    footprint: np.ndarray | None = None  # the target's pixels in the stamp (bool), if found
    replaced: np.ndarray | None = None  # the stamp's pixels replaced by noise (bool), if any
    masked: np.ndarray | None = None  # the stamp's pixels of the user's mask (bool), if any
    neighbours: np.ndarray | None = None  # the stamp's pixels of other sources (bool), if any
    offset: tuple[int, int] = (0, 0)  # (row, column) of the image at the stamp's pixel (0, 0)
    checks: dict | None = None  # which checks may set their bit (conf quality.checks)

    def set(self, name: str, detail: str) -> None:
        if self.checks is not None and not self.checks.get(name, True):
            return  # this check is off: measured, not flagged
        self.flag |= BITS[name]
        self.details.append(f"{name}: {detail}")


@dataclass
class Segments:
    """A segmentation of an image: ``data`` labels (0 = background, photutils), how many,
    the smoothed image it was cut from, and that image's local maxima (bool)."""

    data: np.ndarray
    n_labels: int
    smoothed: np.ndarray
    maxima: np.ndarray
    found: dict = field(default_factory=dict)  # label -> Checker.peaks, once computed
    snr: np.ndarray | None = None  # per label: flux S/N (Checker.is_source), once computed
    peak: np.ndarray | None = None  # per label: the smoothed image's highest value
    targets: dict = field(default_factory=dict)  # centre -> Checker.target, once computed

    def embedded(self, size: int, rows: slice, cols: slice) -> Segments:
        """This segmentation of a cutout placed at ``rows, cols`` of a ``size`` square stamp
        (nothing detected outside it; the per-label statistics carry over)."""
        data = np.zeros((size, size), dtype=self.data.dtype)
        smoothed = np.zeros((size, size))
        maxima = np.zeros((size, size), dtype=bool)
        data[rows, cols], smoothed[rows, cols], maxima[rows, cols] = (
            self.data,
            self.smoothed,
            self.maxima,
        )
        return Segments(data, self.n_labels, smoothed, maxima, snr=self.snr, peak=self.peak)


#: Catalogue columns the checks add: name -> (unit, description).
COLUMNS = {
    "background": ("", "median of the border pixels, in units of the model's noise rms"),
    "noise_ratio": ("", "robust noise rms of the border pixels / the model's noise rms"),
    "significance": ("", "S/N of the source's flux in the best Gaussian weight about the centre"),
    "x_centroid": (
        "pix",
        "source centroid, input image column (0-based, pixel centres at integers)",
    ),
    "y_centroid": ("pix", "source centroid, input image row (0-based, pixel centres at integers)"),
    "shift_x": ("pix", "columns the stamp was moved by to centre the source"),
    "shift_y": ("pix", "rows the stamp was moved by to centre the source"),
    "n_neighbours": ("", "other sources detected in the stamp (their pixels replaced by noise)"),
    "masked_fraction": ("", "fraction of the stamp's pixels replaced by noise (neighbours)"),
    "invalid_fraction": ("", "fraction of the image's pixels NaN, infinite or without data"),
    "mask_fraction": ("", "fraction of the image's pixels in the user's mask (replaced by noise)"),
    "masked_light": (
        "",
        "fraction of the source's light within re hidden by the user's mask (NaN: no mask)",
    ),
}


def validate(quality) -> None:
    """Check the thresholds of conf/quality; UserError naming the key otherwise."""
    positive = (
        "border_px", "detect_nsigma", "detect_npixels", "smooth_fwhm_px", "search_radius_px",
        "max_cutout_px", "max_background_rms",
    )  # fmt: skip
    for key in positive:
        if not quality[key] > 0:
            raise UserError(f"quality.{key}={quality[key]!r} is not allowed: must be > 0")
    for key in (
        "blend_peak_ratio",
        "blend_separation_px",
        "blend_prominence",
        "neighbour_flux_ratio",
    ):
        if not quality[key] > 0:
            raise UserError(f"quality.{key}={quality[key]!r} is not allowed: must be > 0")
    for key in ("min_significance", "recentre_px", "min_context_px", "neighbour_dilate_px",
                "no_sky_nsigma", "noise_mask_nsigma"):  # fmt: skip
        if not quality[key] >= 0:
            raise UserError(f"quality.{key}={quality[key]!r} is not allowed: must be >= 0")
    if not 0 < quality.max_masked_light <= 1:
        raise UserError(f"quality.max_masked_light={quality.max_masked_light} must lie in (0, 1]")
    if not 0 <= quality.max_invalid_fraction < 1:
        raise UserError(
            f"quality.max_invalid_fraction={quality.max_invalid_fraction} must lie in [0, 1)"
        )
    if not quality.prior_margin >= 0:
        raise UserError(f"quality.prior_margin={quality.prior_margin} must be >= 0")
    lo, hi = quality.noise_ratio
    if not 0 < lo < 1 < hi:
        raise UserError(f"quality.noise_ratio=[{lo}, {hi}] must satisfy 0 < low < 1 < high")
    for key in ("max_chi2_sigma", "max_sigma_prior_std", "fit_moment_sigma_px"):
        if not quality[key] > 0:
            raise UserError(f"quality.{key}={quality[key]!r} is not allowed: must be > 0")
    for key, least in (("max_reduced_chi2", 1), ("fit_min_pixels", 1), ("fit_moment_iterations", 1),
                       ("fit_model_error", 0), ("fit_footprint_nsigma", 0),
                       ("noise_min_pixels", 1), ("noise_mask_grow_px", 0)):  # fmt: skip
        if not quality[key] >= least:
            raise UserError(f"quality.{key}={quality[key]!r} is not allowed: must be >= {least}")
    unknown = sorted(set(quality.checks) - set(BITS))
    if unknown:
        raise UserError(
            f"quality.checks.{unknown[0]} is not a check: the checks are named by their bits, "
            f"{', '.join(k for k in quality.checks)}"
        )
    for key, value in quality.checks.items():
        if not isinstance(value, bool):
            raise UserError(f"quality.checks.{key}={value!r} is not allowed: true or false")
    if not quality.weights_px or min(quality.weights_px) <= 0:
        raise UserError(f"quality.weights_px={list(quality.weights_px)} must be sizes > 0 pixel")


class Checker:
    """The checks of one model: its stamp size (pixel), noise rms and the range of background
    rms it was trained on (e-/s per pixel; the rms alone when None), and for correlated noise
    the core of its correlation function (2-D, zero lag in the middle; None = white noise)."""

    MAX_PEAKS = 8  # local maxima of a segment examined, highest first (a bound on the work)
    MIN_BORDER_PIXELS = 50  # fewer source-free border pixels than this: use the whole ring

    def __init__(
        self, quality, stamp_size: int, noise_rms: float, noise_range=None, correlation=None
    ):
        validate(quality)
        # plain attributes: OmegaConf's are slow in a loop over images
        plain = OmegaConf.to_container(quality) if OmegaConf.is_config(quality) else dict(quality)
        self.checks = dict(plain.pop("checks"))
        self.q = SimpleNamespace(**plain)
        self.stamp_size, self.noise_rms = stamp_size, noise_rms
        low, high = noise_range or (noise_rms, noise_rms)
        lo, hi = self.q.noise_ratio  # about the trained depths: a depth between them is no fault
        self.noise_bounds = (lo * low / noise_rms, hi * high / noise_rms)
        sigma = quality.smooth_fwhm_px / (2 * math.sqrt(2 * math.log(2)))
        self.smooth_sigma = sigma
        # rms of the smoothed noise over that of a pixel: sqrt(sum g^2) of the unit-sum kernel
        self.smooth_noise = 1.0 / (2 * math.sqrt(math.pi) * sigma)
        centre = (stamp_size - 1) / 2
        offsets = np.arange(stamp_size) - centre
        r2 = offsets[:, None] ** 2 + offsets[None, :] ** 2
        weights = np.stack([np.exp(-0.5 * r2 / s**2).ravel() for s in quality.weights_px], 1)
        self.weights = weights  # (S*S, K)
        self.weight_noise = np.sqrt((weights**2).sum(0))  # per unit pixel rms
        self.sum_noise = 1.0  # noise of a segment's sum over that of white noise
        if correlation is not None:  # correlated noise: each sum is noisier than white noise's
            rho = np.asarray(correlation, dtype=float)
            rho = rho / rho[tuple(n // 2 for n in rho.shape)]
            self.smooth_noise *= correlated_factor(np.exp(-0.5 * r2 / sigma**2), rho)
            self.weight_noise = self.weight_noise * np.array(
                [correlated_factor(w.reshape(r2.shape), rho) for w in weights.T]
            )
            self.sum_noise = math.sqrt(max(rho.sum(), 1.0))  # a large segment's, the largest

    # -- measurements -----------------------------------------------------------------------

    def noise_stats(self, data: np.ndarray, exclude: np.ndarray) -> tuple[float, float]:
        """Median and robust rms (e-/s per pixel) of the border ring of ``data``, pixels in
        ``exclude`` left out (all of the ring if that leaves too few)."""
        b = int(self.q.border_px)
        ring = np.ones(data.shape, dtype=bool)
        ring[b:-b, b:-b] = False
        values = data[ring & ~exclude]
        if values.size < self.MIN_BORDER_PIXELS:
            values = data[ring]
        median = float(np.median(values))
        rms = MAD_TO_RMS * float(np.median(np.abs(values - median)))
        return median, rms

    def outward_fall(self, data: np.ndarray, exclude: np.ndarray, rms: float) -> float:
        """How many standard errors the light of the border ring's inner half exceeds that of
        its outer half (pixels in ``exclude`` left out): a sky offset is flat across the ring,
        a source's wings fall outward (a cutout too tight to hold any sky)."""
        b, h, w = int(self.q.border_px), *data.shape
        half = max(b // 2, 1)
        ys, xs = np.ogrid[:h, :w]
        depth = np.minimum(np.minimum(ys, h - 1 - ys), np.minimum(xs, w - 1 - xs))
        outer = data[(depth < half) & ~exclude]
        inner = data[(depth >= half) & (depth < b) & ~exclude]
        if min(outer.size, inner.size) < self.MIN_BORDER_PIXELS or not rms > 0:
            return 0.0
        error = MEDIAN_ERROR * rms * math.sqrt(1 / outer.size + 1 / inner.size)
        return float((np.median(inner) - np.median(outer)) / error)

    def segments(self, data: np.ndarray, rms: float):
        """photutils segmentation of the smoothed image above ``detect_nsigma``, or None."""
        if not rms > 0:
            return None
        smoothed = ndimage.gaussian_filter(data.astype(np.float64), self.smooth_sigma)
        threshold = self.q.detect_nsigma * rms * self.smooth_noise
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoDetectionsWarning)  # an empty stamp is an answer
            seg = detect_sources(
                smoothed, threshold, int(self.q.detect_npixels)
            )  # positional: named npixels before photutils 3, n_pixels since
        if seg is None:
            return None
        maxima = smoothed == ndimage.maximum_filter(smoothed, size=int(self.q.blend_separation_px))
        return Segments(seg.data, int(seg.data.max()), smoothed, maxima)

    def peaks(self, seg, label: int, rms: float) -> list[tuple[int, int]]:
        """The sources inside segment ``label``: the highest local maximum of the smoothed
        image, and every other that rises ``blend_prominence`` smoothed-noise rms above the
        lowest point on the straight line to it (a bump of a galaxy's own outskirts does not;
        a neighbour merged into its footprint does). (row, column) pixels, highest first."""
        if label not in seg.found:
            seg.found[label] = self._peaks(seg, label, rms)
        return seg.found[label]

    def _peaks(self, seg, label: int, rms: float) -> list[tuple[int, int]]:
        smooth = seg.smoothed
        ys, xs = np.nonzero(seg.maxima & (seg.data == label))
        order = np.argsort(smooth[ys, xs])[::-1][: self.MAX_PEAKS]
        y0, x0 = ys[order[0]], xs[order[0]]
        rise = self.q.blend_prominence * rms * self.smooth_noise
        found = [(int(y0), int(x0))]
        for k in order[1:]:
            y, x = ys[k], xs[k]
            steps = int(np.hypot(y - y0, x - x0)) + 2
            line = ndimage.map_coordinates(
                smooth, [np.linspace(y, y0, steps), np.linspace(x, x0, steps)], order=1
            )
            if smooth[y, x] - line.min() >= rise:
                found.append((int(y), int(x)))
        return found

    def blended(self, seg, label: int, rms: float, centre) -> tuple[float, float] | None:
        """(dy, dx) pixel from the source (the peak of ``peaks`` nearest ``centre``) to another
        peak of its segment at least ``blend_peak_ratio`` as high: a neighbour merged into it."""
        found = self.peaks(seg, label, rms)
        if len(found) < 2:
            return None
        y0, x0 = min(found, key=lambda p: (p[0] - centre[0]) ** 2 + (p[1] - centre[1]) ** 2)
        for y, x in found:
            if (y, x) != (y0, x0) and seg.smoothed[y, x] >= self.q.blend_peak_ratio * seg.smoothed[
                y0, x0
            ]:
                return float(y - y0), float(x - x0)
        return None

    def target(self, seg, data: np.ndarray, centre: tuple[float, float], rms: float):
        """The source at ``centre`` (y, x), or the nearest one within ``search_radius_px``:
        (label, y, x) with the flux-weighted centroid of its footprint, or, when the footprint
        holds more than one source (``peaks``), the centroid of the smoothed image about the
        peak nearest the centre (a brighter neighbour in the same footprint does not pull it);
        None when there is none."""
        if seg is None or seg.n_labels == 0:
            return None
        key = (float(centre[0]), float(centre[1]))
        if key not in seg.targets:
            seg.targets[key] = self._target(seg, data, centre, rms)
        return seg.targets[key]

    def _target(self, seg, data: np.ndarray, centre: tuple[float, float], rms: float):
        labels = seg.data
        cy, cx = int(round(centre[0])), int(round(centre[1]))
        label = labels[cy, cx] if 0 <= cy < labels.shape[0] and 0 <= cx < labels.shape[1] else 0
        if label == 0:
            yy, xx = np.nonzero(labels)
            dist2 = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2
            k = int(np.argmin(dist2))
            if dist2[k] > self.q.search_radius_px**2:
                return None
            label = labels[yy[k], xx[k]]
        found = self.peaks(seg, label, rms)
        if len(found) == 1:  # one source: the flux-weighted centroid of its footprint
            weights = np.where(labels == label, np.clip(data, 0, None), 0.0)
            if weights.sum() > 0:
                y, x = ndimage.center_of_mass(weights)
                return int(label), float(y), float(x)
        py, px = min(found, key=lambda p: (p[0] - centre[0]) ** 2 + (p[1] - centre[1]) ** 2)
        r = int(self.q.blend_separation_px) // 2
        lo_y, lo_x = max(py - r, 0), max(px - r, 0)
        patch = np.clip(seg.smoothed[lo_y : py + r + 1, lo_x : px + r + 1], 0, None)
        dy, dx = ndimage.center_of_mass(patch) if patch.sum() > 0 else (py - lo_y, px - lo_x)
        return int(label), float(lo_y + dy), float(lo_x + dx)

    def is_source(self, seg, label: int, data: np.ndarray, rms: float) -> bool:
        """Whether segment ``label`` is a source of its own: its flux at ``min_significance``
        and a smoothed peak of ``neighbour_peak_nsigma`` smoothed-noise rms (noise and
        fragments of a galaxy's faint outskirts only just reach the detection threshold)."""
        if seg.snr is None:
            seg.snr = self.segment_snr(seg.data, data, rms)
            seg.peak = ndimage.maximum(seg.smoothed, seg.data, np.arange(seg.n_labels + 1))
        floor = self.q.neighbour_peak_nsigma * rms * self.smooth_noise
        return seg.snr[label] >= self.q.min_significance and seg.peak[label] >= floor

    def significance(self, stamp: np.ndarray, rms: float) -> float:
        """The best S/N of the stamp's flux in the Gaussian weights about its centre."""
        if not rms > 0:
            return math.nan
        flux = stamp.reshape(-1).astype(np.float64) @ self.weights
        return float(np.max(flux / (rms * self.weight_noise)))

    def segment_snr(self, labels: np.ndarray, data: np.ndarray, rms: float) -> np.ndarray:
        """S/N of each segment's flux (index = label; 0 for the background)."""
        flat = labels.ravel()
        flux = np.bincount(flat, weights=data.ravel().astype(np.float64))
        npix = np.bincount(flat)
        snr = flux / (rms * self.sum_noise * np.sqrt(np.maximum(npix, 1)))
        snr[0] = 0.0
        return snr

    # -- the checks -------------------------------------------------------------------------

    def on(self, name: str) -> bool:
        """Whether the check that sets bit ``name`` is on (conf quality.checks)."""
        return bool(self.checks.get(name, True))

    def __call__(self, raw: np.ndarray, invalid: np.ndarray, rng: np.random.Generator,
                 padding=None, masked=None):  # fmt: skip
        """(stamp or None, Check) of one image ``raw`` (e-/s per pixel) whose ``invalid``
        pixels (NaN, infinite, no data) and ``masked`` ones (the user's mask; bool or None) are
        replaced by noise that ``rng`` draws; ``padding`` (bool, optional) marks pixels that are
        noise padding of a smaller cutout (not flagged; left out of the residual, as are the
        pixels padded, invalid or masked here). Only invalid pixels count against
        ``max_invalid_fraction``: a user's mask is the user's decision
        (``hidden_light`` flags a mask over the source itself)."""
        c, s, q = Check(checks=self.checks), self.stamp_size, self.q
        h, w = raw.shape
        bad = invalid if masked is None else invalid | masked
        c.columns["mask_fraction"] = 0.0 if masked is None else float(masked.mean())
        invalid = float(invalid.mean())
        c.columns["invalid_fraction"] = invalid
        if invalid > q.max_invalid_fraction and self.on("invalid_pixels"):
            c.set(
                "invalid_pixels",
                f"{100 * invalid:.1f}% of the pixels (> {100 * q.max_invalid_fraction:g}%)",
            )
            return None, c
        if max(h, w) > q.max_cutout_px and self.on("not_a_cutout"):
            c.set("not_a_cutout", f"{h}x{w} px is a field, not a cutout (> {q.max_cutout_px} px)")
            return None, c
        if bad.any():
            raw = raw.copy()
            raw[bad] = rng.normal(0.0, self.noise_rms, int(bad.sum()))
        # the input's own pixels of the central stamp window: background, noise and the source
        (ys, _), (xs, _) = window(h, s, 0), window(w, s, 0)
        data = raw[ys, xs]
        median, rms = self.noise_stats(data, bad[ys, xs])
        seg = self.segments(data, rms)
        if seg is not None:
            grow = max(int(self.q.neighbour_dilate_px), 1)
            sources = ndimage.binary_dilation(seg.data > 0, iterations=grow)
            median, rms = self.noise_stats(data, bad[ys, xs] | sources)
        fall = self.outward_fall(data, bad[ys, xs], rms)
        if abs(median) > q.max_background_rms * self.noise_rms and fall > q.no_sky_nsigma:
            self._no_sky(c, fall)
            rms = self.noise_rms  # the ring is the source's: take the model's depth
            seg = self.segments(data, rms)
        else:
            self._background(c, median, rms)
        # measured always; the shift only with the off_centre check on
        shift = self._centre(c, seg, data, rms, (ys.start, xs.start), (h, w))
        if not self.on("off_centre"):
            shift = (0, 0)
        stamp = cut(raw, s, shift, rng, self.noise_rms)
        c.offset = (h // 2 + shift[0] - s // 2, w // 2 + shift[1] - s // 2)  # window()'s rule
        not_data = bad if padding is None else bad | padding
        if not_data.any() or min(h, w) < s or shift != (0, 0):
            replaced = ~cut_mask(~not_data, s, shift)  # beyond the image too
            c.replaced = replaced if replaced.any() else None
        if masked is not None and masked.any():
            c.masked = cut_mask(masked, s, shift)
        # the stamp is the window already measured (or holds it): its segmentation serves again
        if shift == (0, 0) and seg is not None and h <= s and w <= s:
            (_, rows), (_, cols) = window(h, s, 0), window(w, s, 0)
            stamp_seg = seg if data.shape == (s, s) else seg.embedded(s, rows, cols)
        elif shift == (0, 0) and data.shape == (s, s):
            stamp_seg = seg
        else:
            stamp_seg = self.segments(stamp, rms)
        c.footprint = self.footprint(stamp_seg, stamp, rms)
        if self.on("neighbours"):
            stamp = self._neighbours(c, stamp, rms, rng, stamp_seg)
        c.columns["shift_x"], c.columns["shift_y"] = float(shift[1]), float(shift[0])
        sig = self.significance(stamp, rms)
        c.columns["significance"] = sig
        if not sig >= q.min_significance and self.on("no_source"):
            c.set("no_source", f"significance {sig:.2f} < {q.min_significance:g}")
            return None, c
        return stamp, c

    def footprint(self, seg, stamp: np.ndarray, rms: float) -> np.ndarray | None:
        """The pixels of the source at the stamp centre (its segment, grown by
        ``neighbour_dilate_px``), or None when there is none."""
        centre = ((self.stamp_size - 1) / 2,) * 2
        found = self.target(seg, stamp, centre, rms)
        if found is None:
            return None
        own = seg.data == found[0]
        grow = int(self.q.neighbour_dilate_px)
        return ndimage.binary_dilation(own, iterations=grow) if grow else own

    def _background(self, c: Check, median: float, rms: float) -> None:
        q, model = self.q, self.noise_rms
        c.columns["background"] = median / model
        c.columns["noise_ratio"] = rms / model
        if abs(median) > q.max_background_rms * model:
            c.set("background", f"level {median / model:+.3g} x the noise rms (sky left in?)")
        lo, hi = self.noise_bounds
        if not lo <= rms / model <= hi:
            c.set(
                "noise", f"rms {rms / model:.3g} x the model's (other depth or units: input_scale?)"
            )

    def _no_sky(self, c: Check, fall: float) -> None:
        """A cutout filled by its source: its border holds the source's wings, not sky."""
        c.columns["background"] = c.columns["noise_ratio"] = math.nan
        c.set(
            "background",
            f"no sky: the cutout is filled by the source (its light falls {fall:.0f} sigma across "
            "the border), so its background and noise cannot be measured: give a larger cutout",
        )

    def _centre(self, c: Check, seg, data, rms, origin, shape) -> tuple[int, int]:
        """The integer (rows, columns) shift that centres the source, and its centroid."""
        h, w = shape
        centre = ((h - 1) / 2 - origin[0], (w - 1) / 2 - origin[1])  # in data's pixels
        found = self.target(seg, data, centre, rms)
        c.columns["x_centroid"] = c.columns["y_centroid"] = math.nan
        if found is None:
            return 0, 0
        label, y, x = found
        if not self.is_source(seg, label, data, rms):
            return 0, 0  # noise, or too faint to be sure of its centroid: taken as centred
        y, x = y + origin[0], x + origin[1]
        c.columns["x_centroid"], c.columns["y_centroid"] = x, y
        dy, dx = y - (h - 1) / 2, x - (w - 1) / 2
        if math.hypot(dx, dy) <= self.q.recentre_px:
            return 0, 0
        if self.on("neighbours") and self.other_at_centre(
            c, data, rms, centre, (y - origin[0], x - origin[1])
        ):
            return 0, 0
        # The data it keeps on every side, against what training cutouts give (or, for an
        # image smaller than those, what a centred source in it would have had).
        context = min(y, h - 1 - y, x, w - 1 - x)
        needed = min(self.q.min_context_px, (min(h, w) - 1) / 2 - 2 * self.q.recentre_px)
        if context < needed:
            c.set(
                "off_centre",
                f"source at ({dx:+.1f}, {dy:+.1f}) px from the centre, {context:.0f} px from the "
                f"image edge (< {needed:.0f} px to recentre)",
            )
            return 0, 0
        return int(round(dy)), int(round(dx))

    def other_at_centre(self, c: Check, data, rms, centre, peak) -> bool:
        """Whether another source sits at the ``centre`` (y, x) of an image whose brightest
        source nearby is at ``peak``: a galaxy is point-symmetric about its centre, so its light
        at the centre equals its light at the mirror point ``2 peak - centre``; an excess there,
        in Gaussian weights of a few sizes, is another (fainter, perhaps undetected) source,
        the one the cutout was centred on. Then the row is flagged and not recentred."""
        if math.hypot(peak[0] - centre[0], peak[1] - centre[1]) < self.q.symmetry_min_offset_px:
            return False
        mirror = (2 * peak[0] - centre[0], 2 * peak[1] - centre[1])
        if not (0 <= mirror[0] <= data.shape[0] - 1 and 0 <= mirror[1] <= data.shape[1] - 1):
            return False
        best = -math.inf
        for sigma in self.q.symmetry_weights_px:
            smooth = ndimage.gaussian_filter(data.astype(np.float64), sigma)
            at = ndimage.map_coordinates(
                smooth, [[centre[0], mirror[0]], [centre[1], mirror[1]]], order=1
            )
            noise = rms / (2 * math.sqrt(math.pi) * sigma) * math.sqrt(2)
            # relative too: a centroid a little off makes a bright galaxy's mirror points differ
            if at[0] - at[1] >= self.q.symmetry_excess_ratio * abs(at[1]):
                best = max(best, (at[0] - at[1]) / noise)
        if best < self.q.min_significance:
            return False
        c.set(
            "neighbours", f"a source at the centre (S/N {best:.0f}) besides a brighter one off it"
        )
        return True

    def _neighbours(self, c: Check, stamp, rms, rng, seg) -> np.ndarray:
        """Replace the pixels of other sources by noise; flag a bright one that touches the
        source, or a second peak inside it (a neighbour merged into its footprint). ``seg``:
        the stamp's segmentation (or None)."""
        c.columns["n_neighbours"], c.columns["masked_fraction"] = 0, 0.0
        if seg is None or seg.n_labels == 0:
            return stamp
        centre = ((self.stamp_size - 1) / 2,) * 2
        found = self.target(seg, stamp, centre, rms)
        own = found[0] if found is not None else 0
        if own:
            merged = self.blended(seg, own, rms, centre)
            if merged is not None:
                dy, dx = merged
                c.set("neighbours", f"a second peak at ({dx:+.0f}, {dy:+.0f}) px in the source")
        others = [
            k for k in range(1, seg.n_labels + 1) if k != own and self.is_source(seg, k, stamp, rms)
        ]  # fmt: skip
        c.columns["n_neighbours"] = len(others)
        if not others:
            return stamp
        grow = int(self.q.neighbour_dilate_px)
        neighbours = np.isin(seg.data, others)
        mask = ndimage.binary_dilation(neighbours, iterations=grow) if grow else neighbours
        if own:
            mask &= seg.data != own
            footprint = ndimage.binary_dilation(seg.data == own, iterations=max(grow, 1))
            flux = np.bincount(seg.data.ravel(), weights=stamp.ravel().astype(np.float64))
            touching = [k for k in np.unique(seg.data[footprint & neighbours]) if k]
            bright = [k for k in touching if flux[k] >= self.q.neighbour_flux_ratio * flux[own]]
            if bright and not c.flag & BITS["neighbours"]:
                ratio = max(flux[k] for k in bright) / flux[own]
                c.set("neighbours", f"a source of {ratio:.2g} x its flux touches its footprint")
        if mask.any():
            c.neighbours = mask
        if self.q.mask_neighbours and mask.any():
            stamp = stamp.copy()
            stamp[mask] = rng.normal(0.0, self.noise_rms, int(mask.sum()))
            c.columns["masked_fraction"] = float(mask.mean())
            c.replaced = mask if c.replaced is None else c.replaced | mask
        return stamp


def window(n_in: int, n_out: int, shift: int) -> tuple[slice, slice]:
    """Slices (source, destination) along one axis: input pixel ``n_in // 2 + shift`` lands on
    output pixel ``n_out // 2`` (with shift 0, the pad/crop rule of ``simulate.stamps``)."""
    start = n_in // 2 + shift - n_out // 2
    lo, hi = max(0, start), min(n_in, start + n_out)
    return slice(lo, hi), slice(lo - start, hi - start)


def correlated_factor(weight: np.ndarray, rho: np.ndarray) -> float:
    """The noise of ``sum(weight * x)`` under noise of correlation coefficients ``rho`` (2-D,
    zero lag in the middle) over its noise under white noise of the same rms:
    ``sqrt(sum_l A(l) rho(l) / A(0))``, A the weight's autocorrelation."""
    big = [n + m for n, m in zip(weight.shape, rho.shape, strict=True)]
    spectrum = np.abs(np.fft.rfft2(weight, s=big)) ** 2
    auto = np.fft.fftshift(np.fft.irfft2(spectrum, s=big))  # zero lag at [n // 2]
    cy, cx = (n // 2 for n in big)
    ly, lx = (n // 2 for n in rho.shape)
    window = auto[cy - ly : cy + ly + 1, cx - lx : cx + lx + 1]
    return float(math.sqrt(max((window * rho).sum(), 0.0) / auto[cy, cx]))


def cut(image: np.ndarray, size: int, shift, rng: np.random.Generator, noise_rms: float):
    """The ``size`` square stamp of ``image`` centred ``shift`` (rows, columns) pixels from its
    centre; pixels beyond the image are background noise of ``noise_rms`` (e-/s per pixel)."""
    (sy, dy), (sx, dx) = (
        window(image.shape[0], size, shift[0]),
        window(image.shape[1], size, shift[1]),
    )
    covered = dy.stop - dy.start == size and dx.stop - dx.start == size
    if covered:
        out = np.empty((size, size), dtype=np.float32)
    else:
        out = rng.normal(0.0, noise_rms, (size, size)).astype(np.float32)
    out[dy, dx] = image[sy, sx]
    return out


def cut_mask(mask: np.ndarray, size: int, shift) -> np.ndarray:
    """The ``size`` square of the bool ``mask`` that ``cut`` takes of its image (False beyond)."""
    (sy, dy), (sx, dx) = (
        window(mask.shape[0], size, shift[0]),
        window(mask.shape[1], size, shift[1]),
    )
    out = np.zeros((size, size), dtype=bool)
    out[dy, dx] = mask[sy, sx]
    return out


def excess_sigma(chi2, pixels) -> np.ndarray:
    """How many standard deviations ``sqrt(2 N)`` a chi-square ``chi2 * N`` of N = ``pixels``
    lies above its expectation N."""
    return (np.asarray(chi2, dtype=float) - 1.0) * np.sqrt(np.asarray(pixels, dtype=float) / 2)


def prediction_checks(table, predictor, quality):
    """The checks of the predictions in ``table``: (bit name, rows (bool), detail per row) for
    each check that is on: ``out_of_range``, ``uninformative`` and ``bad_fit``."""
    checks, prior = quality.checks, predictor.prior
    if checks.out_of_range:
        bad, details = out_of_range(
            table, predictor.labels, prior, quality.prior_margin, predictor.transforms
        )
        yield "out_of_range", bad, details
    if checks.uninformative and prior:
        yield ("uninformative", *uninformative(table, predictor, quality.max_sigma_prior_std))
    if checks.get("masked_source", True) and "masked_light" in table.colnames:
        light = np.asarray(table["masked_light"], dtype=float)
        bad = np.nan_to_num(light) > quality.max_masked_light
        details = [f"the mask hides {v:.0%} of the light within re" for v in light]
        yield "masked_source", bad, details
    if checks.bad_fit and "chi2" in table.colnames:
        chi2 = np.asarray(table["chi2"], dtype=float)
        sigma = excess_sigma(chi2, table["chi2_pixels"])
        # NaN (not judged) is not flagged
        bad = (chi2 > quality.max_reduced_chi2) & (sigma > quality.max_chi2_sigma)
        details = [
            f"reduced chi2 {v:.3g} over {n} pixels, {z:.1f} sigma above 1"
            for v, n, z in zip(chi2, table["chi2_pixels"], sigma, strict=True)
        ]
        yield "bad_fit", bad, details


def hidden_light(masked: np.ndarray, x: float, y: float, pa: float, n: float, re_px: float,
                 q: float) -> float:  # fmt: skip
    """Fraction of a Sersic's light inside its half-light ellipse (semi-major ``re_px`` pixel,
    axis ratio ``q``, position angle ``pa`` radian from +x, centre ``x, y`` pixel) that falls
    on ``masked`` pixels (bool, S x S), the profile sampled at the pixel centres without PSF."""
    if not all(math.isfinite(v) for v in (x, y, pa, n, re_px, q)) or re_px <= 0 or q <= 0:
        return math.nan
    ys, xs = np.indices(masked.shape, dtype=float)
    dx, dy = xs - x, ys - y
    major = dx * math.cos(pa) + dy * math.sin(pa)
    minor = -dx * math.sin(pa) + dy * math.cos(pa)
    r = np.sqrt(major**2 + (minor / q) ** 2) / max(re_px, 0.5)  # a pixel at least
    inside = r <= 1.0
    if not inside.any():
        inside = r == r.min()
    light = np.exp(-float(gammaincinv(2 * n, 0.5)) * r[inside] ** (1 / n))
    return float((light * masked[inside]).sum() / light.sum())


def uninformative(table, predictor, ratio: float) -> tuple[np.ndarray, list]:
    """Rows (bool) with a sigma at least ``ratio`` times the standard deviation of its label's
    training prior, taken as uniform (range / sqrt(12); for labels the network fits in log,
    of the log), and a detail per row."""
    bad = np.zeros(len(table), dtype=bool)
    details = [[] for _ in range(len(table))]
    for name in predictor.labels:
        if f"{name}_err" not in table.colnames or name not in predictor.prior:
            continue
        lo, hi = predictor.prior[name]
        value = np.asarray(table[name], dtype=float)
        sigma = np.asarray(table[f"{name}_err"], dtype=float)
        if predictor.transforms.get(name) == "log" and lo > 0:
            width, sigma = math.log(hi / lo), sigma / np.abs(value)
        else:
            width = hi - lo
        spread = width / math.sqrt(12)
        hit = np.isfinite(sigma) & (sigma >= ratio * spread)
        for i in np.flatnonzero(hit):
            details[i].append(f"{name} sigma {sigma[i] / spread:.2f} x the prior's")
        bad |= hit
    return bad, [", ".join(d) for d in details]


def out_of_range(
    table, labels, prior: dict | None, margin: float, transforms: dict | None = None
) -> tuple[np.ndarray, list]:
    """Rows (bool) whose prediction is outside the physical range (q in (0, 1], n and re > 0)
    or beyond the training ``prior`` (label -> (min, max)) by more than ``margin`` of its
    range, in the label's transform (``transforms``: label -> ``log`` for labels the network
    fits in log, as a bounded head's margins are); and a detail per row."""
    bad = np.zeros(len(table), dtype=bool)
    details = [[] for _ in range(len(table))]
    physical = {"q": (0.0, 1.0), "n": (0.0, math.inf), "re": (0.0, math.inf)}
    for name in labels:
        v = np.asarray(table[name], dtype=float)
        lo, hi = physical.get(name, (-math.inf, math.inf))
        hit = (v <= lo) | (v > hi)
        if prior and name in prior:
            pmin, pmax = prior[name]
            if (transforms or {}).get(name) == "log" and pmin > 0:
                with np.errstate(divide="ignore", invalid="ignore"):
                    t, tmin, tmax = np.log(v), math.log(pmin), math.log(pmax)
            else:
                t, tmin, tmax = v, pmin, pmax
            beyond = margin * (tmax - tmin)
            hit |= (t < tmin - beyond) | (t > tmax + beyond)
        hit &= np.isfinite(v)
        for i in np.flatnonzero(hit):
            details[i].append(f"{name}={v[i]:.4g}")
        bad |= hit
    return bad, [", ".join(d) for d in details]
