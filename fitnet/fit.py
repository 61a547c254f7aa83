"""The batched Sersic fit: Levenberg-Marquardt on each row's own pixels, many rows at once.

Each row brings its pixels ``data`` (image units), their inverse variance ``weight`` (0 where a
pixel is not data: masked, invalid, a neighbour's, padding), the PSF x pixel transfer
function on the FFT box (``spectrum``; a PSF per row, or one for all), the ``gain`` that turns
the model into counts for its own Poisson noise (0: none), and a starting point (the
network's answer, or image moments). The model is a Sersic through that PSF
(``sersic.SersicFourier``), drawn in the top-left W x W window of an N x N box (N = 3W/2, so
the light the periodic box folds back comes from beyond W / 2 of the window's edge), on the
frequencies where the PSF carries power (``Spectrum``), aliasing included.

Parameters, unbounded except n (projected onto GalSim's [0.3, 6.2]; a fit that ends there
says so):

====  =======================================================================================
0     ln F: total flux, image units
1     ln n
2-4   alpha, beta, gamma: the shape matrix M = L L^T, L = [[e^alpha, 0], [gamma, e^beta]],
      with kappa^2 = k^T M k; its eigenvalues are re^2 and (q re)^2 (pixel^2), its major
      eigenvector the major axis (pa). Smooth through q = 1, where pa has no meaning.
5, 6  x, y: centre, window pixels (0-based column and row, pixel centres at integers)
7     sky: a constant background, image units per pixel (``fit_sky``)
====  =======================================================================================

Each iteration solves ``(H + lambda diag H) delta = g`` with H = J^T W J, g = J^T W r; a step
that lowers the chi-square is taken and lambda divided by ``lambda_factor``, else lambda
multiplied. A row stops when a taken step lowers the chi-square by less than ``chi2_tol``
(the parameters are then within a small fraction of a standard error of the minimum), or when
a taken step changes every parameter by less than ``step_sigma`` of its standard error,
or after ``max_iterations``. The covariance of the parameters is H^-1 at the end (the
Laplace approximation of the likelihood), carried to the labels by their Jacobian.
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from .psfs import ProfileCache
from .sersic import GALSIM_N_RANGE, SersicFourier

SHAPE = slice(2, 5)
NAMES = ("ln_flux", "ln_n", "alpha", "beta", "gamma", "x", "y", "sky")
LOG_N_RANGE = tuple(math.log(v) for v in GALSIM_N_RANGE)
#: Labels of a fitted row, from its parameters: name -> unit.
LABELS = {"flux": "image units", "n": "", "re_px": "pixel", "q": "", "pa": "radian",
          "x": "pixel", "y": "pixel", "sky": "image units per pixel"}  # fmt: skip


def box_side(window: int, reach: float = 0.0) -> int:
    """The FFT box of a W-pixel window about a galaxy of ``reach`` pixels (its light and the
    PSF's): 3 W / 2, or more where the galaxy reaches beyond W / 2 (a window cut to a smaller
    cutout), so that the light the periodic box folds back onto the window comes from beyond
    the reach; even, and a product of 2 and 3."""
    need = max(3 * window / 2, window / 2 + reach)
    return (
        min(n for n in FFT_SIDES if n >= need) if need <= FFT_SIDES[-1] else 2 * math.ceil(need / 2)
    )


#: Even products of 2 and 3 (2^a 3^b, b <= 3): FFT sizes that transform fast.
FFT_SIDES = sorted(2**a * 3**b for a in range(1, 12) for b in range(0, 4))


class Spectrum:
    """The frequencies a batch's models are computed on: those of the FFT box of N = ``box_side(W)``
    pixels where the PSF x pixel transfer is above ``support`` of its peak (most of the box
    for a PSF the pixels undersample, a fraction for a broad one), out to ``oversample`` times
    the Nyquist frequency, each folded onto the frequency the pixels alias it to. So a model
    is the continuous image sampled at the pixel centres, its aliasing included, for the cost
    of the PSF's support and one N x N transform.

    ``transfer``: (B or 1, sN, sN // 2 + 1), complex, on GalSim's half-plane grid of the
    s x extended box (``simulate.render.transfer_function``, rows in FFT order)."""

    def __init__(self, transfer: torch.Tensor, window: int, oversample: int, support: float,
                 box: int | None = None):  # fmt: skip
        size, s = box or box_side(window), oversample
        self.window, self.size = window, size
        amplitude = transfer.abs().amax(0)
        rows, cols = (amplitude > support * amplitude.max()).nonzero(as_tuple=True)
        full = s * size
        kyi = torch.where(rows < full // 2, rows, rows - full)  # signed frequency indices
        kxi = cols
        dk = 2 * math.pi / size  # radian per pixel
        # single precision: the model needs 1e-5 of its peak, and the FFTs run twice as fast
        self.ky, self.kx = (kyi.double() * dk).float(), (kxi.double() * dk).float()
        self.transfer = transfer[:, rows, cols].to(torch.complex64)
        width = size // 2 + 1
        p, q = kyi % size, kxi % size
        direct = q <= size // 2
        self.direct, self.direct_to = direct.nonzero().squeeze(1), (p * width + q)[direct]
        # the stored half's mirror images (-ky, -kx), conjugate, where they fold onto the
        # half-plane; the columns kx = 0 and the box's Nyquist hold their mirrors themselves
        mq, mp = (-kxi) % size, (-kyi) % size
        mirror = (mq <= size // 2) & (kxi != 0) & (kxi != full // 2)
        self.mirror, self.mirror_to = mirror.nonzero().squeeze(1), (mp * width + mq)[mirror]

    def to(self, device) -> Spectrum:
        """This spectrum on ``device`` (a copy; itself when it is there already)."""
        if self.kx.device == torch.device(device):
            return self
        moved = copy.copy(self)
        for name in ("kx", "ky", "transfer", "direct", "direct_to", "mirror", "mirror_to"):
            setattr(moved, name, getattr(self, name).to(device))
        return moved

    def images(self, spectra: torch.Tensor) -> torch.Tensor:
        """The W x W images (..., W, W) of ``spectra`` (..., M) given on this support."""
        width = self.size // 2 + 1
        folded = torch.zeros((*spectra.shape[:-1], self.size * width), dtype=spectra.dtype,
                             device=spectra.device)  # fmt: skip
        folded.index_add_(-1, self.direct_to, spectra[..., self.direct])
        folded.index_add_(-1, self.mirror_to, spectra[..., self.mirror].conj())
        folded = folded.reshape(*spectra.shape[:-1], self.size, width)
        # the inverse transform one axis at a time, keeping only the window's rows between the
        # two (the same numbers as irfft2, 20-40% faster for a box of 1.5-2 windows)
        rows = torch.fft.ifft(folded, dim=-2)[..., : self.window, :]
        return torch.fft.irfft(rows, n=self.size, dim=-1)[..., : self.window]


@dataclass
class FitBatch:
    """The rows of one fit, on one box size N = 2 W (module docstring)."""

    data: torch.Tensor  # (B, W, W), image units
    weight: torch.Tensor  # (B, W, W), 1 / variance of the background (0: not data)
    spectrum: Spectrum  # the frequencies of the models, with the PSF x pixel transfer
    gain: torch.Tensor  # (B,), counts per image unit for the source's Poisson noise; 0 = none
    start: torch.Tensor  # (B, P) parameters

    @property
    def window(self) -> int:
        return self.data.shape[-1]


@dataclass
class FitResult:
    params: torch.Tensor  # (B, P)
    covariance: torch.Tensor  # (B, P, P), NaN where the Hessian is singular
    chi2: torch.Tensor  # (B,) over the pixels of nonzero weight
    pixels: torch.Tensor  # (B,) pixels of nonzero weight
    iterations: torch.Tensor  # (B,)
    converged: torch.Tensor  # (B,) bool
    at_bound: torch.Tensor  # (B,) bool: n ended at GalSim's range
    model: torch.Tensor  # (B, W, W) the best model


class SersicFit:
    """The fit of ``cfg`` (conf/fit: table size, iterations, tolerances, sky) on ``device``
    (a batch's tensors are moved there)."""

    def __init__(self, cfg, device="cpu"):
        self.cfg, self.device = cfg, torch.device(device)
        self.sersic = SersicFourier(int(cfg.table_n_points), int(cfg.table_k_points)).to(device)
        self.count = 8 if cfg.fit_sky else 7

    # -- the model ----------------------------------------------------------------------------

    def render(self, params, spectrum: Spectrum, jacobian: bool = False, centre: bool = True):
        """Model images (B, W, W) and, with ``jacobian``, their derivatives (B, P, W, W), on
        the frequencies of ``spectrum`` (``Spectrum``: the PSF's support, its aliases folded).
        Without ``centre``, the derivatives leave out x and y (B, P - 2, W, W)."""
        kx, ky = spectrum.kx, spectrum.ky
        params = params.float()  # the images in single precision (``Spectrum``); sums in double
        ln_f, ln_n = params[:, 0], params[:, 1]
        a, b, c = params[:, 2], params[:, 3], params[:, 4]
        l11, l22 = a.exp()[:, None], b.exp()[:, None]
        v1 = l11 * kx + c[:, None] * ky  # L^T k
        v2 = l22 * ky
        kappa2 = (v1 * v1 + v2 * v2).clamp(min=1e-30)
        rows, d_rows = self.sersic.rows(ln_n)
        t, dt_dlk, dt_dln = self.sersic.profile(rows, d_rows, 0.5 * kappa2.log())
        phase = torch.polar(
            torch.ones_like(kappa2), -(kx * params[:, 5, None] + ky * params[:, 6, None])
        )
        common = ln_f.exp()[:, None] * phase * spectrum.transfer
        parts = [common * t]  # the model, which is also its derivative by ln F
        if jacobian:
            slope = (
                common * dt_dlk / kappa2
            )  # d G / d kappa^2, times 2 (d ln kappa = d kappa^2 / 2 kappa^2)
            parts += [
                common * dt_dln,  # d / d ln n
                slope * v1 * l11 * kx,  # d / d alpha
                slope * v2 * l22 * ky,  # d / d beta
                slope * v1 * ky,  # d / d gamma
            ]
            if centre:
                parts += [parts[0] * (-1j * kx), parts[0] * (-1j * ky)]  # d / d x, d / d y
        images = spectrum.images(torch.stack(parts, 1)).double()
        params = params.double()
        model = images[:, 0]
        if self.count == 8:
            model = model + params[:, 7, None, None]
        if not jacobian:
            return model, None
        jac = images  # d / d ln F is the galaxy's own image
        if self.count == 8:
            jac = torch.cat([jac, torch.ones_like(model)[:, None]], 1)
        return model, jac

    # -- the iteration ------------------------------------------------------------------------

    def variance_weight(self, batch: FitBatch, model):
        """1 / (background variance + the model's own Poisson variance) where the row has data."""
        valid = batch.weight > 0
        background = torch.where(valid, 1.0 / batch.weight.clamp(min=1e-300), 0.0)
        source = model.clamp(min=0) / batch.gain.clamp(min=1e-300)[:, None, None]
        source = torch.where(batch.gain[:, None, None] > 0, source, 0.0)
        return torch.where(valid, 1.0 / (background + source), 0.0)

    def fit(self, batch: FitBatch) -> FitResult:
        """Levenberg-Marquardt from ``batch.start`` for every row at once (module docstring)."""
        cfg, device = self.cfg, self.device
        batch = batch_on(batch, device)
        params = project(batch.start.clone().double())
        data = batch.data.double()
        rows = len(params)
        lam = torch.full((rows,), float(cfg.lambda_start), dtype=torch.float64, device=device)
        active = torch.isfinite(params).all(1)  # a start without a number never converges
        converged = torch.zeros(rows, dtype=torch.bool, device=device)
        iterations = torch.zeros(rows, dtype=torch.long, device=device)
        eye = torch.eye(self.count, dtype=torch.float64, device=device)
        for _ in range(int(cfg.max_iterations)):
            if not active.any():
                break
            idx = active.nonzero().squeeze(1)
            sub = subset(batch, idx)
            model, jac = self.render(params[idx], sub.spectrum, jacobian=True)
            weight = self.variance_weight(sub, model)
            residual = data[idx] - model
            chi2 = (weight * residual**2).sum((1, 2))
            wj = jac * weight[:, None]
            hessian = torch.einsum("bpij,bqij->bpq", wj, jac)
            gradient = torch.einsum("bpij,bij->bp", wj, residual)
            scale = torch.diagonal(hessian, dim1=1, dim2=2).clamp(min=1e-300)
            damped = hessian + lam[idx, None, None] * torch.diag_embed(scale) + 1e-12 * eye
            step, info = torch.linalg.solve_ex(damped, gradient)
            bad = (info != 0) | ~torch.isfinite(step).all(1)  # a singular system: no step
            step[bad] = 0.0
            trial = project(params[idx] + step)
            trial_model, _ = self.render(trial, sub.spectrum)
            trial_chi2 = (weight * (data[idx] - trial_model) ** 2).sum((1, 2))
            better = torch.isfinite(trial_chi2) & (trial_chi2 < chi2)
            params[idx[better]] = trial[better]
            lam[idx] = torch.where(
                better, lam[idx] / cfg.lambda_factor, lam[idx] * cfg.lambda_factor
            )
            iterations[idx] += 1
            # the step in units of each parameter's own (conditional) standard error
            small = (step.abs() * scale.sqrt()).amax(1) < cfg.step_sigma
            flat = (chi2 - trial_chi2) <= cfg.chi2_tol
            stuck = lam[idx] > cfg.lambda_max  # no step lowers the chi-square: a minimum ...
            done = (better & (small | flat)) | stuck
            converged[idx[done & torch.isfinite(chi2)]] = True  # ... where it has a number
            active[idx[done]] = False
        return self.finish(batch, params, iterations, converged)

    def finish(self, batch: FitBatch, params, iterations, converged,
               errors: str = "all") -> FitResult:  # fmt: skip
        """The covariance, chi-square and model at the final parameters (on the CPU).
        ``errors``: ``all``; ``shape``, the covariance of flux, n and shape (and sky) alone, x
        and y left out of the Hessian (their rows NaN): a symmetric galaxy's centre does not
        correlate with them, and it costs two images fewer; ``none``, the model alone."""
        batch = batch_on(batch, self.device)
        params, iterations, converged = (t.to(self.device) for t in (params, iterations, converged))
        model, jac = self.render(params, batch.spectrum, jacobian=errors != "none",
                                 centre=errors == "all")  # fmt: skip
        weight = self.variance_weight(batch, model)
        chi2 = (weight * (batch.data.double() - model) ** 2).sum((1, 2))
        rows = len(params)
        covariance = torch.full((rows, self.count, self.count), math.nan, dtype=torch.float64,
                                device=params.device)  # fmt: skip
        if jac is not None:
            keep = torch.arange(self.count, device=params.device)
            if errors == "shape":
                keep = keep[(keep != 5) & (keep != 6)]
            wj = jac * weight[:, None]
            hessian = torch.einsum("bpij,bqij->bpq", wj, jac)
            solved, info = torch.linalg.inv_ex(hessian)
            ok = (info == 0).nonzero().squeeze(1)
            covariance[ok[:, None, None], keep[None, :, None], keep[None, None, :]] = solved[ok]
        lo, hi = LOG_N_RANGE
        at_bound = (params[:, 1] <= lo + 1e-9) | (params[:, 1] >= hi - 1e-9)
        pixels = (batch.weight > 0).sum((1, 2))
        return FitResult(*(t.cpu() for t in (params, covariance, chi2, pixels, iterations,
                                              converged, at_bound, model)))  # fmt: skip


#: Where a step may take the shape's log-Cholesky diagonal (ln pixel): radii of 0.01 to 10^5 px.
LOG_SIZE_RANGE = (math.log(0.01), math.log(1e5))


def batch_on(batch: FitBatch, device) -> FitBatch:
    """``batch`` with its tensors on ``device``."""
    if batch.data.device == torch.device(device):
        return batch
    return FitBatch(batch.data.to(device), batch.weight.to(device), batch.spectrum.to(device),
                    batch.gain.to(device), batch.start.to(device))  # fmt: skip


def project(params: torch.Tensor) -> torch.Tensor:
    """``params`` with ln n inside GalSim's range and the shape's scales inside
    ``LOG_SIZE_RANGE`` (a step that leaves them is cut back to them)."""
    params = params.clone()
    params[:, 1] = params[:, 1].clamp(*LOG_N_RANGE)
    params[:, 2:4] = params[:, 2:4].clamp(*LOG_SIZE_RANGE)
    return params


def subset(batch: FitBatch, idx) -> FitBatch:
    """The rows ``idx`` of ``batch`` (a transfer shared by all rows stays shared)."""
    spectrum = batch.spectrum
    if len(spectrum.transfer) > 1:
        spectrum = copy.copy(spectrum)
        spectrum.transfer = spectrum.transfer[idx]
    return FitBatch(batch.data[idx], batch.weight[idx], spectrum, batch.gain[idx], batch.start[idx])


# -- labels <-> parameters -----------------------------------------------------------------------


def params_from_labels(flux, n, re_px, q, pa, x, y, sky=None) -> torch.Tensor:
    """Parameters (B, 7 or 8) of galaxies of total ``flux`` (image units), index ``n``,
    semi-major half-light radius ``re_px`` (pixel), axis ratio ``q``, position angle ``pa``
    (radian, counter-clockwise from +x) at ``x, y`` (window pixels); arrays (B,)."""
    values = [
        torch.as_tensor(np.asarray(v, dtype=np.float64)) for v in (flux, n, re_px, q, pa, x, y)
    ]
    flux, n, re_px, q, pa, x, y = values
    c, s = torch.cos(pa), torch.sin(pa)
    big, small = re_px**2, (q * re_px) ** 2
    m00 = big * c * c + small * s * s
    m01 = (big - small) * c * s
    m11 = big * s * s + small * c * c
    l11 = m00.sqrt()
    gamma = m01 / l11
    l22 = (m11 - gamma**2).clamp(min=1e-30).sqrt()
    out = [flux.log(), n.log(), l11.log(), l22.log(), gamma, x, y]
    if sky is not None:
        out.append(torch.as_tensor(np.asarray(sky, dtype=np.float64)))
    return torch.stack(out, 1)


def labels_from_params(params: torch.Tensor) -> dict[str, torch.Tensor]:
    """The labels of ``LABELS`` (B,) of parameters (B, P)."""
    l11, l22, gamma = params[:, 2].exp(), params[:, 3].exp(), params[:, 4]
    m00, m01, m11 = l11**2, l11 * gamma, gamma**2 + l22**2
    mean, half = 0.5 * (m00 + m11), torch.sqrt(0.25 * (m00 - m11) ** 2 + m01**2)
    big, small = mean + half, (mean - half).clamp(min=0)
    out = {
        "flux": params[:, 0].exp(),
        "n": params[:, 1].exp(),
        "re_px": big.sqrt(),
        "q": (small / big).sqrt(),
        "pa": 0.5 * torch.atan2(2 * m01, m00 - m11),
        "x": params[:, 5],
        "y": params[:, 6],
    }
    if params.shape[1] == 8:
        out["sky"] = params[:, 7]
    return out


def label_covariance(params: torch.Tensor, covariance: torch.Tensor) -> dict[str, torch.Tensor]:
    """1-sigma error of each label (B,) from the parameters' covariance (B, P, P), by the
    labels' Jacobian (``pa`` near q = 1 is as uncertain as its formula says: large)."""
    x = params.detach().clone().requires_grad_(True)
    labels = labels_from_params(x)
    errors = {}
    for name, value in labels.items():
        (grad,) = torch.autograd.grad(value.sum(), x, retain_graph=True)
        used = grad != 0  # a parameter the label does not depend on adds nothing, even NaN
        cov = torch.where(used[:, :, None] & used[:, None, :], covariance, 0.0)
        errors[name] = torch.einsum("bp,bpq,bq->b", grad, cov, grad).clamp(min=0).sqrt()
    return errors


# -- the fit stage: stamps to fits -----------------------------------------------------------


@dataclass
class Region:
    """One row's pixels for the fit: a W x W square of its cutout about the source."""

    data: np.ndarray  # (W, W) input units, 0 where there are none
    box: int  # pixel, the side N of the FFT box the models are drawn in (``box_side``)
    weight: np.ndarray  # (W, W) 1 / rms^2 where the pixel is data, else 0
    corner: tuple[int, int]  # cutout (row, column) of the region's pixel (0, 0)
    start: np.ndarray  # (P,) parameters, x and y in the region's pixels
    gain: float  # counts per input unit (0: no Poisson term)
    profile: object  # the PSF (GalSim, arcsec, without the pixel)
    scale: float  # arcsec / pixel


def reach_px(flux, n, re_px, q, rms: float, floor_nsigma: float) -> float:
    """Semi-major radius (pixel) beyond which a galaxy's unconvolved surface brightness is
    below ``floor_nsigma`` background rms per pixel (``flux`` in the rms's units summed)."""
    from simulate.render import sersic_b, sersic_log_intensity_at_re

    n = float(np.clip(n, *GALSIM_N_RANGE))
    log_ie = sersic_log_intensity_at_re(max(flux, 1e-30), n, max(re_px, 1e-3), max(q, 1e-3))
    ratio = 1 + (log_ie - math.log(floor_nsigma * rms)) / sersic_b(n)
    return float(re_px * max(ratio, 0.0) ** n)


def window_side(reach: float, fwhm_px: float, cfg, data_px: float = math.inf) -> int:
    """The fit window's side (pixel): the least of ``windows`` that holds the galaxy's reach
    and ``window_fwhm`` PSF FWHM on each side, or all the data about the source (``data_px``,
    the side of the square about it that holds the whole cutout) when that is smaller; the
    largest of ``windows`` when none does. Few sides make few batches. The FFT box
    (``box_side``) still holds the whole galaxy: a box smaller than the galaxy folds its outer
    light back onto the pixels (a galaxy larger than its cutout would come out too small)."""
    need = min(2 * (reach + cfg.window_fwhm * fwhm_px), data_px)
    return int(next((w for w in sorted(cfg.windows) if w >= need), max(cfg.windows)))


def make_region(stamp, start: dict, cfg) -> Region | None:
    """The fit region of ``stamp`` (``stamps.Stamp``) about ``start`` (labels in the cutout's
    pixels and input units: flux, n, re_px, q, pa, x, y), or None without one."""
    from .psfs import fwhm_px

    cutout = stamp.cutout
    values = [start[k] for k in ("flux", "n", "re_px", "q", "pa", "x", "y")]
    if (
        cutout is None
        or stamp.profile is None
        or not np.all(np.isfinite(values))
        or not stamp.rms > 0
    ):
        return None
    data = np.asarray(cutout.data, dtype=np.float64)
    valid = np.isfinite(data)
    for mask in (cutout.mask, cutout.padding, cutout.others, stamp.neighbours):
        if mask is not None:
            valid &= np.asarray(mask) == 0
    rms = cutout.rms if cutout.rms is not None else np.full(data.shape, stamp.rms)
    fwhm = fwhm_px(stamp.profile, cutout.pixel_scale)
    reach = reach_px(
        start["flux"], start["n"], start["re_px"], start["q"], stamp.rms, cfg.floor_nsigma
    )
    fwhm = fwhm if math.isfinite(fwhm) else 3.0
    x0, y0 = int(round(start["x"])), int(round(start["y"]))
    h, w = data.shape
    data_px = 2 * max(x0, w - 1 - x0, y0, h - 1 - y0) + 2  # the square about it holding the cutout
    side = window_side(reach, fwhm, cfg, data_px)
    box = box_side(side, reach + cfg.window_fwhm * fwhm)
    corner = (y0 - side // 2, x0 - side // 2)
    region, weight = (
        crop(data, corner, side),
        crop(np.where(valid, 1.0 / rms**2, 0.0), corner, side),
    )
    weight = np.nan_to_num(weight, nan=0.0, posinf=0.0)
    region = np.where(weight > 0, np.nan_to_num(region), 0.0)
    start_params = params_from_labels(
        [start["flux"]], [start["n"]], [start["re_px"]], [start["q"]], [start["pa"]],
        [start["x"] - corner[1]], [start["y"] - corner[0]],
        None if not cfg.fit_sky else [0.0],
    )[0].numpy()  # fmt: skip
    return Region(region, box, weight, corner, start_params, float(start.get("gain", 0.0)),
                  stamp.profile, cutout.pixel_scale)  # fmt: skip


def crop(image: np.ndarray, corner: tuple[int, int], side: int) -> np.ndarray:
    """The ``side`` square of ``image`` from ``corner`` (row, column), zeros beyond it."""
    out = np.zeros((side, side), dtype=np.float64)
    h, w = image.shape
    r0, c0 = corner
    rows = slice(max(r0, 0), min(r0 + side, h))
    cols = slice(max(c0, 0), min(c0 + side, w))
    if rows.start < rows.stop and cols.start < cols.stop:
        out[rows.start - r0 : rows.stop - r0, cols.start - c0 : cols.stop - c0] = image[rows, cols]
    return out


class FitStage:
    """Fits of many rows: each row's region (``make_region``) grouped by window side and
    oversampling, one batch per group, the PSF transfer functions computed once per PSF,
    scale and box."""

    def __init__(self, cfg, quality, device="cpu"):
        from sersic_runtime.configs import load_group

        self.cfg, self.quality = cfg, quality
        self.alias_tolerance = float(load_group("render").alias_tolerance)
        self.engine = SersicFit(cfg, device)
        self._cache = ProfileCache()

    def oversample(self, profile, scale: float) -> int:
        """``simulate.render.oversampling`` of the row's PSF: 3 for a PSF the pixels
        undersample (conf/render ``alias_tolerance``, as the simulator draws it), else 1."""
        from simulate.render import oversampling

        return self._cache.get(profile, ("oversample", scale),
                               lambda: oversampling(profile, scale, self.alias_tolerance))  # fmt: skip

    def spectrum(self, regions: list[Region], window: int, box: int, oversample: int) -> Spectrum:
        """The ``Spectrum`` of the PSFs of ``regions`` (one, or one per row) on a ``box``
        FFT box of a ``window`` fit."""
        from simulate.render import transfer_function

        arrays = [np.fft.ifftshift(transfer_function(r.profile, r.scale, box, oversample),
                                   axes=0) for r in regions]  # fmt: skip
        transfer = torch.from_numpy(np.stack(arrays))
        return Spectrum(transfer, window, oversample, float(self.cfg.k_support), box)

    def run(self, regions: list[Region | None], iterate: bool = True,
            errors: str = "all") -> list[dict | None]:  # fmt: skip
        """Per region, the fit's labels (``LABELS``, x and y in the cutout's pixels), their
        errors (``<label>_err``), ``chi2`` and ``pixels`` (over the weighted pixels), the
        residual's chi-square over the source's footprint (``footprint_chi2``,
        ``footprint_pixels``: ``footprint_chi2``), ``iterations``, ``converged`` and
        ``at_bound``; None for None. Without ``iterate``: the same at the starting point (its
        likelihood bound, with ``errors`` as ``SersicFit.finish`` takes them)."""
        out: list[dict | None] = [None] * len(regions)
        groups: dict = {}
        for k, region in enumerate(regions):
            if region is not None:
                key = (region.data.shape[0], region.box,
                       self.oversample(region.profile, region.scale))  # fmt: skip
                groups.setdefault(key, []).append(k)
        chunks = []
        for (window, box, s), rows in groups.items():  # at most batch_pixels of FFT box a batch
            size = max(1, int(float(self.cfg.batch_pixels) // (s * box) ** 2))
            chunks += [(window, box, s, rows[i : i + size]) for i in range(0, len(rows), size)]
        for window, box, s, rows in chunks:
            profiles = {id(regions[k].profile): regions[k] for k in rows}
            if len(profiles) == 1:  # one PSF for all: its spectrum kept for later batches
                first = regions[rows[0]]
                spectrum = self._cache.get(
                    first.profile, ("spectrum", first.scale, window, box, s),
                    functools.partial(self.spectrum, [first], window, box, s),
                )  # fmt: skip
            else:
                spectrum = self.spectrum([regions[k] for k in rows], window, box, s)
            batch = FitBatch(
                torch.from_numpy(np.stack([regions[k].data for k in rows])),
                torch.from_numpy(np.stack([regions[k].weight for k in rows])),
                spectrum,
                torch.tensor([regions[k].gain for k in rows], dtype=torch.float64),
                torch.from_numpy(np.stack([regions[k].start for k in rows])),
            )
            result = self.engine.fit(batch) if iterate else self.engine.finish(
                batch, project(batch.start.double()), torch.zeros(len(rows), dtype=torch.long),
                torch.zeros(len(rows), dtype=torch.bool), errors)  # fmt: skip
            labels = labels_from_params(result.params)
            label_errors = label_covariance(result.params, result.covariance)
            for j, k in enumerate(rows):
                out[k] = row_result(result, j, labels, label_errors)
                out[k].update(footprint_chi2(regions[k], result.model[j].numpy(), self.quality))
                out[k]["x"] += regions[k].corner[1]
                out[k]["y"] += regions[k].corner[0]
        return out


def row_result(result: FitResult, j: int, labels: dict, errors: dict) -> dict:
    """Row ``j`` of ``result`` as plain numbers, with the batch's ``labels`` and their
    ``errors`` (``labels_from_params``, ``label_covariance``)."""
    row = {name: float(value[j]) for name, value in labels.items()}
    row.update({f"{name}_err": float(value[j]) for name, value in errors.items()})
    row.update(chi2=float(result.chi2[j]), pixels=int(result.pixels[j]),
               iterations=int(result.iterations[j]), converged=bool(result.converged[j]),
               at_bound=bool(result.at_bound[j]))  # fmt: skip
    return row


def footprint_chi2(region: Region, model: np.ndarray, quality) -> dict:
    """The reduced chi-square of the residual over the source's footprint: the pixels of data
    where the model exceeds ``quality.fit_footprint_nsigma`` background rms, with the model's
    Poisson noise and ``quality.fit_model_error`` of the model in quadrature (what a fit at
    the noise limit may still miss); NaN below ``quality.fit_min_pixels`` pixels."""
    data = region.weight > 0
    background = np.where(data, 1.0 / np.where(data, region.weight, 1.0), np.inf)
    use = data & (model**2 > quality.fit_footprint_nsigma**2 * background)
    count = int(use.sum())
    if count < quality.fit_min_pixels:
        return {"footprint_chi2": math.nan, "footprint_pixels": count}
    var = background[use] + (quality.fit_model_error * model[use]) ** 2
    if region.gain > 0:
        var = var + np.clip(model[use], 0, None) / region.gain
    chi2 = float(np.sum((region.data[use] - model[use]) ** 2 / var) / count)
    return {"footprint_chi2": chi2, "footprint_pixels": count}
