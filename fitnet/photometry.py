"""Classical measurements of a stamp that a network can lean on: aperture fluxes,
Gaussian-weighted second moments (differentiable) and adaptive moments, in torch, batched.

At high signal-to-noise they pin the total flux, size and ellipticity more precisely than a
CNN learns to from pixels on a CPU budget; the refining head (``models.PhotometricRefiner``)
learns how they map onto the Sersic labels (the truncation, PSF and profile corrections).

Every feature is invariant under the flips and 90-degree rotations of the stamp (the training
augmentation): apertures and weights are circles about the stamp centre, the adaptive weight
follows the galaxy, and ellipticities enter only through their modulus.
"""

from __future__ import annotations

import torch
from torch import nn


class StampPhotometry(nn.Module):
    """Features of images (B, 1, S, S) in units of the background rms per pixel.

    Per aperture radius r (pixel): ``asinh(F / noise(F))``, the flux inside r over its
    background-noise rms (a signed, log-like S/N). Per Gaussian weight of width s (pixel),
    about the stamp centre: the weighted flux the same way; the weighted size ``asinh(T /
    noise(T))`` with ``T = sum w I r^2``; the ellipticity modulus ``|(Qxx - Qyy, 2 Qxy)| /
    (|T| + noise(T))`` (softened so that noise cannot blow it up); and the size over the flux,
    ``T / (|F_w| + noise(F_w)) / s^2``. With ``adaptive`` (the keywords of
    ``AdaptiveMoments``), its features follow. Computed in float32 outside any autocast.
    """

    def __init__(self, stamp_size: int, apertures_px, weights_px, adaptive: dict | None = None):
        super().__init__()
        if not apertures_px and not weights_px:
            raise ValueError("photometry needs at least one aperture or weight radius")
        self.adaptive = None if adaptive is None else AdaptiveMoments(stamp_size, **adaptive)
        for r in (*apertures_px, *weights_px):
            if not r > 0:
                raise ValueError(f"photometry radii must be > 0 pixel, got {r}")
        centre = (stamp_size - 1) / 2
        offsets = torch.arange(stamp_size, dtype=torch.float32) - centre
        yy, xx = (g.reshape(-1) for g in torch.meshgrid(offsets, offsets, indexing="ij"))
        r2 = xx**2 + yy**2
        masks = [(r2 <= r**2).float() for r in apertures_px]
        weights = [torch.exp(-0.5 * r2 / s**2) for s in weights_px]
        # One (S*S, K) matrix of aperture masks and weighted moment kernels (flux, xx, yy, xy),
        # so that all sums over pixels are a single product per batch. Fixed geometry, not
        # parameters: rebuilt from the config, so not saved in checkpoints.
        kernels = masks + [w * k for k in (1, xx**2, yy**2, xx * yy) for w in weights]
        self.register_buffer("kernels", torch.stack(kernels, 1), persistent=False)
        noise = {  # background-noise rms of each sum, in units of the per-pixel rms
            "aperture_noise": [m.sum().sqrt() for m in masks],
            "flux_noise": [(w**2).sum().sqrt() for w in weights],
            "size_noise": [((w * r2) ** 2).sum().sqrt() for w in weights],
        }
        for name, values in noise.items():
            self.register_buffer(name, torch.tensor(values), persistent=False)
        self.register_buffer(
            "weight_sizes", torch.tensor(list(weights_px), dtype=torch.float32), persistent=False
        )
        self.num_features = len(apertures_px) + 4 * len(weights_px)
        if self.adaptive is not None:
            self.num_features += self.adaptive.num_features

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        with torch.autocast(image.device.type, enabled=False):
            x = image.float().reshape(image.shape[0], -1)  # (B, S*S), channels-last safe
            sums = x @ self.kernels
            n_apertures, n_weights = len(self.aperture_noise), len(self.flux_noise)
            out = [torch.asinh(sums[:, :n_apertures] / self.aperture_noise)]
            if n_weights:
                flux, qxx, qyy, qxy = sums[:, n_apertures:].split(n_weights, dim=1)
                size = qxx + qyy
                soft = size.abs() + self.size_noise
                ellipticity = torch.sqrt(((qxx - qyy) / soft) ** 2 + (2 * qxy / soft) ** 2)
                out += [
                    torch.asinh(flux / self.flux_noise),
                    torch.asinh(size / self.size_noise),
                    ellipticity,
                    size / (flux.abs() + self.flux_noise) / self.weight_sizes**2,
                ]
            if self.adaptive is not None:
                out.append(self.adaptive(x))
            return torch.cat(out, 1)


class AdaptiveMoments(nn.Module):
    """Adaptive second moments (Bernstein & Jarvis 2002, as GalSim's ``FindAdaptiveMom``):
    the elliptical Gaussian weight whose covariance M and centre c match the galaxy's own
    weighted moments, found for a whole batch at once.

    Each iteration measures the weighted centroid shift d and covariance Q and updates
    ``c += 2 d`` and ``M = (Q^-1 - M^-1)^-1`` (falling back to ``M = 2 Q``), steps that are exact
    for a Gaussian galaxy and share the fixed point of the usual ``M = 2 Q`` iteration, which
    needs 2-3x more iterations. Features of the converged weight, all invariant under flips
    and rotations of the stamp: ``ln sigma`` with ``sigma = det(M)^(1/4)`` (pixel); the
    ellipticity modulus ``|(Mxx - Myy, 2 Mxy)| / (Mxx + Myy)``; the weighted flux over its
    background noise, ``asinh(F / noise(F))``; the centroid's distance from the stamp centre
    (pixel); the radial kurtosis ``rho4 = sum w I rho^4 / (|F| + noise(F))`` (2 for a
    Gaussian, larger for cuspy, high-n profiles); and, with a weight of twice the covariance
    (the outskirts), the softened ellipticity modulus and the flux as above.

    Images come in units of the background rms per pixel, shape (B, S*S). The weight stays a
    proper ellipse: an update that would make it degenerate, larger than the stamp (trace
    > (S/2)^2), narrower than half a pixel along any axis or move its centre more than S/8
    from the stamp centre is not taken. Most galaxies are small, so each is measured in the
    smallest centred window (1/4, 3/8, 1/2, 3/4 or all of the stamp's side) outside which even
    the wider weight is below e^-10 of its peak: 3.5x faster than always using the whole stamp
    on the default stamps (benchmarks/bench_photometry.py), and equal to it to ~1e-5
    (tests/test_photometry.py). No gradient flows through the iteration (the inputs are data,
    not parameters).
    """

    num_features = 7
    # Safeguards of the iteration, not tunings (the shipped model's features depend on them):
    # rho^2 of the wider weight's e^-10 contour, exp(-rho^2 / 4) = e^-10: the window edge
    WINDOW_RHO2 = 40.0
    # the least variance of the weight along any axis, pixel^2: a narrower weight (noise can
    # pull it there) would sum to zero on the pixel grid
    MIN_VARIANCE_PX2 = 0.25
    # the least ratio of the weight's variances (axis ratio ~0.03): flatter is degenerate
    MIN_VARIANCE_RATIO = 1e-3
    # a Newton step may make the weight's trace at most this many times the plain step's
    MAX_NEWTON_GROWTH = 4.0

    def __init__(self, stamp_size: int, iterations: int, initial_sigma_px: float):
        super().__init__()
        if not iterations >= 1:
            raise ValueError(f"photometry.adaptive.iterations must be >= 1, got {iterations}")
        if not 0 < initial_sigma_px < stamp_size / 4:
            raise ValueError(
                f"photometry.adaptive.initial_sigma_px must be in (0, {stamp_size / 4}) pixel "
                f"for {stamp_size} px stamps, got {initial_sigma_px}"
            )
        self.iterations = iterations
        self.initial_sigma_px = initial_sigma_px
        self.stamp_size = stamp_size
        self.max_trace = (stamp_size / 2) ** 2  # pixel^2
        self.max_shift = stamp_size / 8  # pixel
        # Centred windows of 1/4 to all of the side, smallest first; only those with the parity
        # of the stamp, whose centre is then the stamp's centre.
        sides = {stamp_size * eighths // 8 for eighths in (2, 3, 4, 6)} | {stamp_size}
        self.windows = sorted(k for k in sides if k >= 8 and (stamp_size - k) % 2 == 0)
        centre = (stamp_size - 1) / 2
        offsets = torch.arange(stamp_size, dtype=torch.float32) - centre
        for k in self.windows:
            o = offsets[(stamp_size - k) // 2 : (stamp_size + k) // 2]
            yy, xx = (g.reshape(-1) for g in torch.meshgrid(o, o, indexing="ij"))
            # Monomials 1, x, y, x^2, y^2, xy about the stamp centre: the weight's exponent and
            # all weighted moments are products with this (6, k*k) matrix.
            basis = torch.stack([torch.ones_like(xx), xx, yy, xx * xx, yy * yy, xx * yy])
            self.register_buffer(f"basis{k}", basis, persistent=False)

    def _crop(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """The centred k x k window of images (B, S*S), as (B, k*k)."""
        if k == self.stamp_size:
            return x
        lo = (self.stamp_size - k) // 2
        square = x.reshape(-1, self.stamp_size, self.stamp_size)
        return square[:, lo : lo + k, lo : lo + k].reshape(-1, k * k)

    def _window(self, m: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """Index into ``windows`` of the smallest window that holds the wider weight."""
        largest = 0.5 * (m[:, 0] + m[:, 1]) + _half_spread(m)  # pixel^2
        reach = c.abs().amax(1) + torch.sqrt(self.WINDOW_RHO2 * largest)  # pixel
        half = reach.new_tensor([k / 2 for k in self.windows])
        return (reach[:, None] > half).sum(1).clamp(max=len(self.windows) - 1)

    @staticmethod
    def _coefficients(m: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """(B, 6) coefficients of ``rho^2 = (r - c)^T M^-1 (r - c)`` on the monomials of the
        basis: ``rho^2 = coefficients @ basis``."""
        mxx, myy, mxy = m.unbind(1)
        cx, cy = c.unbind(1)
        det = _det(m)
        a, b, d = myy / det, -2 * mxy / det, mxx / det  # a x^2 + b xy + d y^2 about c
        terms = [a * cx**2 + b * cx * cy + d * cy**2, -2 * a * cx - b * cy, -2 * d * cy - b * cx]
        return torch.stack([*terms, a, d, b], 1)

    def _valid(self, m: torch.Tensor) -> torch.Tensor:
        """Whether weight covariances m (B, 3: xx, yy, xy; pixel^2) are proper ellipses."""
        trace = m[:, 0] + m[:, 1]
        least = 0.5 * trace - _half_spread(m)
        return (
            (least >= self.MIN_VARIANCE_PX2)
            & (_det(m) > self.MIN_VARIANCE_RATIO * trace**2)
            & (trace < self.max_trace)
        )

    def _update(self, s: torch.Tensor, m: torch.Tensor, c: torch.Tensor):
        """New weights (m, c) from the weighted sums s (B, 6) of the monomials."""
        flux = s[:, 0]
        safe = torch.where(flux > 0, flux, torch.ones_like(flux))
        centroid = s[:, 1:3] / safe[:, None]
        cov = s[:, 3:6] / safe[:, None] - _outer(centroid)
        # A Gaussian galaxy of covariance C gives cov^-1 = M^-1 + C^-1
        newton = _inverse(_inverse(cov) - _inverse(m))
        q = 2 * cov  # the fixed point M = 2 cov
        bounded = newton[:, 0] + newton[:, 1] < self.MAX_NEWTON_GROWTH * (q[:, 0] + q[:, 1])
        take_newton = self._valid(newton) & bounded
        q = torch.where(take_newton[:, None], newton, q)
        shift = c + 2 * (centroid - c)
        ok = (flux > 0) & self._valid(q) & (shift.abs() <= self.max_shift).all(1)
        return torch.where(ok[:, None], q, m), torch.where(ok[:, None], shift, c)

    def _groups(self, window: torch.Tensor):
        """(window size, indices of the images measured in it), for the windows in use."""
        for i, k in enumerate(self.windows):
            index = (window == i).nonzero().squeeze(1)
            if index.numel():
                yield k, index

    @torch.no_grad()
    def fit(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The converged weight: covariance (B, 3: xx, yy, xy; pixel^2), centre (B, 2: x, y;
        pixel from the stamp centre) and the index of the window it is measured in."""
        return self._fit(x, {})

    def _fit(self, x: torch.Tensor, crops: dict[int, torch.Tensor]):
        """``fit``, keeping the windows of x it cuts in ``crops`` (side -> (B, side^2))."""
        batch = x.shape[0]
        m = x.new_tensor([self.initial_sigma_px**2, self.initial_sigma_px**2, 0.0]).repeat(batch, 1)
        c = x.new_zeros(batch, 2)
        window = self._window(m, c)
        for _ in range(self.iterations):
            # Only the pixel sums go window by window; the 2x2 algebra runs on the whole batch
            # (a few dozen small operations per iteration, whatever the number of windows).
            coef = self._coefficients(m, c)
            sums = x.new_empty(batch, 6)
            for k, index in self._groups(window):
                crops.setdefault(k, self._crop(x, k))
                basis = getattr(self, f"basis{k}")
                weight = torch.exp(-0.5 * (coef[index] @ basis))
                sums[index] = (weight * crops[k][index]) @ basis.T
            m, c = self._update(sums, m, c)
            window = torch.maximum(window, self._window(m, c))  # only grows: no ping-pong
        return m, c, window

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The features (B, 7) of images x (B, S*S) in units of the background rms."""
        crops: dict[int, torch.Tensor] = {}
        m, c, window = self._fit(x, crops)
        out = x.new_empty(x.shape[0], self.num_features)
        for k, index in self._groups(window):
            crop = crops[k] if k in crops else self._crop(x, k)  # the window may have grown
            out[index] = self._features(crop[index], m[index], c[index], getattr(self, f"basis{k}"))
        return out

    def _features(self, x, m, c, basis):
        """Features of images x (B, k*k) in the window of ``basis``, for weights m, c."""
        rho2 = self._coefficients(m, c) @ basis
        w = torch.exp(-0.5 * rho2)
        flux = (w * x).sum(1)
        noise = w.square().sum(1).sqrt()
        # The outskirts: a weight of covariance 2 M, its second moments about c softened by
        # their noise like StampPhotometry's ellipticity (a faint galaxy's is not blown up).
        wide = torch.exp(-0.25 * rho2)
        s0, sx, sy, sxx, syy, sxy = ((wide * x) @ basis.T).unbind(1)
        cx, cy = c.unbind(1)
        wxx = sxx - 2 * cx * sx + cx**2 * s0
        wyy = syy - 2 * cy * sy + cy**2 * s0
        wxy = sxy - cx * sy - cy * sx + cx * cy * s0
        r2 = (basis[1] - c[:, :1]) ** 2 + (basis[2] - c[:, 1:]) ** 2
        size_noise = (wide * r2).square().sum(1).sqrt()
        wide_noise = wide.square().sum(1).sqrt()
        mxx, myy, mxy = m.unbind(1)
        return torch.stack(
            [
                0.25 * torch.log(_det(m)),
                torch.sqrt((mxx - myy) ** 2 + 4 * mxy**2) / (mxx + myy),
                torch.asinh(flux / noise),
                c.norm(dim=1),
                (w * x * rho2.square()).sum(1) / (flux.abs() + noise),
                torch.sqrt((wxx - wyy) ** 2 + 4 * wxy**2) / ((wxx + wyy).abs() + size_noise),
                torch.asinh(s0 / wide_noise),
            ],
            1,
        )


# Symmetric 2x2 matrices are stored as (B, 3): xx, yy, xy.


def _det(m: torch.Tensor) -> torch.Tensor:
    return m[:, 0] * m[:, 1] - m[:, 2] ** 2


def _half_spread(m: torch.Tensor) -> torch.Tensor:
    """Half the difference of the eigenvalues: they are trace / 2 +- this."""
    return torch.sqrt(0.25 * (m[:, 0] - m[:, 1]) ** 2 + m[:, 2] ** 2)


def _inverse(m: torch.Tensor) -> torch.Tensor:
    return torch.stack([m[:, 1], m[:, 0], -m[:, 2]], 1) / _det(m)[:, None]


def _outer(v: torch.Tensor) -> torch.Tensor:
    """v v^T of vectors v (B, 2)."""
    return torch.stack([v[:, 0] ** 2, v[:, 1] ** 2, v[:, 0] * v[:, 1]], 1)
