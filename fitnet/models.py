"""Networks: a feature extractor followed by a head; all take ``in_chans`` and ``num_outputs``.

``stamp_size`` (pixel, side of the square input) lets fully connected heads size themselves.
Every model class is registered in ``MODELS`` under a name that checkpoints record, so that
renaming or moving a class does not break the checkpoints made with it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .photometry import StampPhotometry


class GaussianNoise(nn.Module):
    """Adds N(0, sigma^2) to the (normalised) input while training, as Keras' GaussianNoise."""

    def __init__(self, sigma: float):
        super().__init__()
        self.sigma = sigma

    def forward(self, x):
        if self.training and self.sigma > 0:
            return x + self.sigma * torch.randn_like(x)
        return x


class FitNet(nn.Module):
    """``head(features(x))``: the split lets a head be swapped or features be reused."""

    def __init__(self, features: nn.Module, head: nn.Module):
        super().__init__()
        self.features = features
        self.head = head

    def forward(self, x):
        return self.head(self.features(x))


def _feature_size(features: nn.Module, in_chans: int, stamp_size: int) -> int:
    with torch.no_grad():
        return features(torch.zeros(1, in_chans, stamp_size, stamp_size)).shape[1]


class DeepLegato(FitNet):
    """DeepLeGATo's tutorial CNN: stages of two 'valid' convolutions, 2x2 max-pool and dropout,
    then dense layers (with ``head_dropout`` after each). Defaults in conf/model/deeplegato.yaml.

    Dropout before convolutions whose outputs are max-pooled shifts eval-mode outputs (the max of
    noisy activations is biased up); see the comment in the config.
    """

    def __init__(
        self,
        in_chans: int,
        num_outputs: int,
        stamp_size: int,
        filters=(16, 64, 64),
        kernels=(4, 3, 2),
        dense=(128, 64),
        dropout: float = 0.15,
        input_noise: float = 0.01,
        head_dropout: float = 0.0,
    ):
        if len(filters) != len(kernels):
            raise ValueError(
                f"model.filters {list(filters)} and model.kernels {list(kernels)} differ in length"
            )
        layers: list[nn.Module] = [GaussianNoise(input_noise)]
        chans = in_chans
        for width, k in zip(filters, kernels, strict=True):
            layers += [
                nn.Conv2d(chans, width, k),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, width, k),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
                nn.Dropout(dropout),
            ]
            chans = width
        layers.append(nn.Flatten())
        features = nn.Sequential(*layers)
        size = _feature_size(features, in_chans, stamp_size)
        head: list[nn.Module] = []
        for units in dense:
            head += [nn.Linear(size, units), nn.ReLU(inplace=True), nn.Dropout(head_dropout)]
            size = units
        head.append(nn.Linear(size, num_outputs))
        super().__init__(features, nn.Sequential(*head))


class BasicBlock(nn.Module):
    def __init__(self, chans_in: int, chans_out: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(chans_in, chans_out, 3, stride, 1, bias=False),
            nn.BatchNorm2d(chans_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(chans_out, chans_out, 3, 1, 1, bias=False),
            nn.BatchNorm2d(chans_out),
        )
        self.skip = (
            nn.Identity()
            if stride == 1 and chans_in == chans_out
            else nn.Sequential(
                nn.Conv2d(chans_in, chans_out, 1, stride, bias=False), nn.BatchNorm2d(chans_out)
            )
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.body(x) + self.skip(x))


class ResNet(FitNet):
    """A small ResNet with global average pooling. Defaults in conf/model/resnet.yaml."""

    def __init__(
        self,
        in_chans: int,
        num_outputs: int,
        stamp_size: int,
        widths=(32, 64, 128, 256),
        blocks=(2, 2, 2, 2),
        stem_stride: int = 1,
        dropout: float = 0.0,
    ):
        del stamp_size  # global pooling: any input size works
        if len(widths) != len(blocks):
            raise ValueError(
                f"model.widths {list(widths)} and model.blocks {list(blocks)} differ in length"
            )
        layers: list[nn.Module] = [
            nn.Conv2d(in_chans, widths[0], 3, stem_stride, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        ]
        chans = widths[0]
        for stage, (width, count) in enumerate(zip(widths, blocks, strict=True)):
            for b in range(count):
                stride = 2 if stage > 0 and b == 0 else 1
                layers.append(BasicBlock(chans, width, stride))
                chans = width
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        head = nn.Sequential(nn.Dropout(dropout), nn.Linear(chans, num_outputs))
        super().__init__(nn.Sequential(*layers), head)


class DenseLayer(nn.Module):
    """DenseNet-BC bottleneck: BN-ReLU-1x1 conv (``bottleneck * growth`` channels), then
    BN-ReLU-3x3 conv (``growth``); its output is concatenated to its input."""

    def __init__(self, chans_in: int, growth: int, bottleneck: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.BatchNorm2d(chans_in),
            nn.ReLU(inplace=True),
            nn.Conv2d(chans_in, bottleneck * growth, 1, bias=False),
            nn.BatchNorm2d(bottleneck * growth),
            nn.ReLU(inplace=True),
            nn.Conv2d(bottleneck * growth, growth, 3, 1, 1, bias=False),
        )

    def forward(self, x):
        return torch.cat([x, self.body(x)], dim=1)


class DenseNet(FitNet):
    """DenseNet-BC (Huang et al. 2017): dense blocks of bottleneck layers joined by transitions
    that compress the channels and halve the resolution, global average pooling, linear head.
    Defaults in conf/model/densenet.yaml.
    """

    def __init__(
        self,
        in_chans: int,
        num_outputs: int,
        stamp_size: int,
        growth: int = 12,
        blocks=(4, 8, 8),
        stem_features: int = 24,
        stem_stride: int = 2,
        bottleneck: int = 4,
        compression: float = 0.5,
        dropout: float = 0.0,
    ):
        del stamp_size  # global pooling: any input size works
        if not 0 < compression <= 1:
            raise ValueError(f"model.compression {compression} must be in (0, 1]")
        layers: list[nn.Module] = [
            nn.Conv2d(in_chans, stem_features, 3, stem_stride, 1, bias=False)
        ]
        chans = stem_features
        for i, count in enumerate(blocks):
            for _ in range(count):
                layers.append(DenseLayer(chans, growth, bottleneck))
                chans += growth
            if i < len(blocks) - 1:
                out = max(1, int(chans * compression))
                layers += [
                    nn.BatchNorm2d(chans),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(chans, out, 1, bias=False),
                    nn.AvgPool2d(2),
                ]
                chans = out
        layers += [
            nn.BatchNorm2d(chans),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        ]
        head = nn.Sequential(nn.Dropout(dropout), nn.Linear(chans, num_outputs))
        super().__init__(nn.Sequential(*layers), head)


class PhotometricRefiner(nn.Module):
    """A network whose outputs are corrected by an MLP that also sees ``StampPhotometry``.

    ``out = network(x) + refine([network(x), standardised photometry(image)])``. The last layer of
    ``refine`` starts at zero, so an untrained refiner returns the network's outputs unchanged;
    ``freeze_network`` trains the refiner alone (the network runs without gradients, in eval
    mode). The network's input is the normalised stamp; the photometry needs the stamp in units
    of the background rms, so the model keeps the image normalisation (``prepare``) to invert
    it. The refiner runs in float32 even under autocast: bf16 would round the outputs
    to ~0.4%, more than the precision the photometry buys at the bright end; for the same
    reason the network's head (``network.head``, after its feature extractor) runs in float32.
    """

    def __init__(
        self,
        in_chans: int,
        num_outputs: int,
        stamp_size: int,
        network: dict,
        photometry: dict,
        hidden=(256, 256),
        freeze_network: bool = False,
    ):
        super().__init__()
        if in_chans != 1:
            raise ValueError(f"PhotometricRefiner measures one band; got in_chans={in_chans}")
        self.network = build_model(network, in_chans, num_outputs, stamp_size)
        if not isinstance(self.network, FitNet):
            raise ValueError(
                f"model.network must be a FitNet (features, then head); got {network['_target_']}"
            )
        self.photometry = StampPhotometry(stamp_size, **photometry)
        size = num_outputs + self.photometry.num_features
        layers: list[nn.Module] = []
        for units in hidden:
            layers += [nn.Linear(size, units), nn.GELU()]
            size = units
        last = nn.Linear(size, num_outputs)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.refine = nn.Sequential(*layers, last)
        self.num_outputs = num_outputs
        self.freeze_network = freeze_network
        if freeze_network:
            self.network.requires_grad_(False)
        # Set by ``prepare`` (NaN until then) and saved with the weights: the softening (in
        # rms), mean and std of ``data.ImageNorm``, and the mean and std of each feature.
        self.register_buffer("image_norm", torch.full((3,), math.nan))
        self.register_buffer("feature_mean", torch.full((self.photometry.num_features,), math.nan))
        self.register_buffer("feature_std", torch.full((self.photometry.num_features,), math.nan))
        # Whether those were seen set; checked on the first forward only, as the check waits
        # for the device (a GPU sync on every batch otherwise).
        self._prepared = False

    @torch.no_grad()
    def prepare(self, norm, images: torch.Tensor) -> None:
        """Record the ``data.ImageNorm`` the inputs are normalised with, and standardise the
        features with their mean and std over ``images`` (normalised training stamps).

        Fixed statistics, not batch normalisation: batch statistics make each stamp's
        correction depend on its batch, noise that cost 60% of the gain in a side-by-side
        test (docs/results/refiner.md).
        """
        self.image_norm.copy_(torch.tensor([norm.softening, norm.mean, norm.std]))
        features = self.photometry(self._image(images.to(self.image_norm.device)))
        self.feature_mean.copy_(features.mean(0))
        self.feature_std.copy_(features.std(0).clamp_min(1e-6))

    def _image(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised stamps back to units of the background rms (float32)."""
        softening, mean, std = self.image_norm
        return softening * torch.sinh(x.float() * std + mean)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.freeze_network:
            self.network.eval()
        return self

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The refiner's input for normalised stamps x: the network's outputs and the
        standardised photometry, (B, num_outputs + num_features), float32."""
        return torch.cat([self.network_outputs(x), self.standard_photometry(x)], 1)

    def network_outputs(self, x: torch.Tensor) -> torch.Tensor:
        """The network's outputs (B, num_outputs) for normalised stamps x, float32."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_network):
            features = self.network.features(x)
            with torch.autocast(x.device.type, enabled=False):
                return self.network.head(features.float())

    def standard_photometry(self, x: torch.Tensor) -> torch.Tensor:
        """The photometry of normalised stamps x, standardised (B, num_features), float32;
        unchanged by flips and rotations of the stamps."""
        if not self._prepared:
            if torch.isnan(self.feature_std).any():
                raise RuntimeError("PhotometricRefiner: call prepare before the first forward")
            self._prepared = True
        with torch.autocast(x.device.type, enabled=False):
            return (self.photometry(self._image(x)) - self.feature_mean) / self.feature_std

    def correct(self, z: torch.Tensor) -> torch.Tensor:
        """The outputs for refiner inputs z from ``encode``: the network's plus a correction."""
        with torch.autocast(z.device.type, enabled=False):
            return z[:, : self.num_outputs] + self.refine(z)

    def forward(self, x):
        return self.correct(self.encode(x))


class FrozenRefinerHead(nn.Module):
    """``PhotometricRefiner.correct`` as a model of its own, for training on cached
    ``encode`` outputs: with the network frozen they do not change from epoch to epoch."""

    def __init__(self, refiner: PhotometricRefiner):
        super().__init__()
        if not refiner.freeze_network:
            raise ValueError("FrozenRefinerHead needs a refiner with freeze_network=true")
        self.refiner = refiner

    def forward(self, z):
        return self.refiner.correct(z)


class BoundedOutputs(nn.Module):
    """A model whose predicted means (its first T outputs, standardised labels) cannot leave
    the training prior ``[low, high]`` (T,) by more than ``below`` and ``above`` (T,): the
    identity inside the prior, and ``high + above * tanh((mu - high) / above)`` beyond it (the
    same below ``low``), smooth at the joins (a margin of 0 is a hard limit). Inside the prior
    it is the unbounded head, so training on the prior's galaxies learns as before; no input
    can drive a prediction beyond the margins. Any sigma outputs pass unchanged. The bounds
    are kept in the checkpoint (``output_bounds``: low, high, below, above)."""

    MIN_MARGIN = 1e-6  # standardised units: a margin of 0 becomes this (a hard limit)

    def __init__(self, model: nn.Module, low, high, below, above):
        super().__init__()
        self.model = model
        low, high, below, above = (
            torch.as_tensor(v, dtype=torch.float32) for v in (low, high, below, above)
        )
        if not (torch.all(high > low) and torch.all(below >= 0) and torch.all(above >= 0)):
            raise ValueError(
                f"output bounds need high > low and margins >= 0, got {low.tolist()}, "
                f"{high.tolist()}, {below.tolist()} and {above.tolist()}"
            )
        self.register_buffer("low", low, persistent=False)
        self.register_buffer("high", high, persistent=False)
        self.register_buffer("below", below.clamp(min=self.MIN_MARGIN), persistent=False)
        self.register_buffer("above", above.clamp(min=self.MIN_MARGIN), persistent=False)

    def __getattr__(self, name: str):
        """The wrapped model's attributes (its image norm, photometry, ...) show through."""
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("model"), name)

    def forward(self, *args) -> torch.Tensor:
        out = self.model(*args).float()
        t = self.low.numel()
        mu = out[:, :t]
        up = self.high + self.above * torch.tanh((mu - self.high) / self.above)
        down = self.low + self.below * torch.tanh((mu - self.low) / self.below)
        mu = torch.where(mu > self.high, up, torch.where(mu < self.low, down, mu))
        return torch.cat([mu, out[:, t:]], dim=1)


#: Registered name -> model class. A checkpoint records the name (``model_name``).
MODELS = {
    "deeplegato": DeepLegato,
    "resnet": ResNet,
    "densenet": DenseNet,
    "photometric": PhotometricRefiner,
    "psf_conditioned": None,  # PSFConditioned, set below (it builds its network by name)
}
#: The class paths that format-1 checkpoints name in ``_target_``, by registered name. Written
#: out, not derived from the classes: they must keep meaning what they meant when a class is
#: renamed.
LEGACY_TARGETS = {
    "fitnet.models.DeepLegato": "deeplegato",
    "fitnet.models.ResNet": "resnet",
    "fitnet.models.PhotometricRefiner": "photometric",
}
#: Config keys that say how to build a model rather than being its arguments.
BUILD_KEYS = ("_target_", "_recursive_", "name")


def model_name(model_cfg: dict) -> str:
    """The registered name of a model config: its ``name``, or that of its ``_target_``."""
    name = model_cfg.get("name") or LEGACY_TARGETS.get(model_cfg.get("_target_", ""))
    if name not in MODELS:
        raise ValueError(
            f"model {model_cfg.get('name') or model_cfg.get('_target_')!r} is not a registered "
            f"model: choose from {', '.join(MODELS)} (conf/model/)"
        )
    return name


def build_model(model_cfg: dict, in_chans: int, num_outputs: int, stamp_size: int) -> nn.Module:
    """The registered model of ``model_cfg`` with its arguments (``BUILD_KEYS`` aside)."""
    kwargs = {k: v for k, v in dict(model_cfg).items() if k not in BUILD_KEYS}
    cls = MODELS[model_name(model_cfg)]
    return cls(in_chans=in_chans, num_outputs=num_outputs, stamp_size=stamp_size, **kwargs)


class PSFConditioned(nn.Module):
    """A network for any PSF: ``network``'s feature extractor on the image (input channel 0),
    a small CNN on the PSF image (channel 1, its centre ``psf_size`` square), and one head on
    both. Defaults in conf/model/psf_conditioned.yaml.

    The PSF channel holds the effective PSF at the data's sampling divided by its peak, so the
    encoder sees its shape and width; the image channel is the normalised stamp as for any
    model.
    """

    INPUT_CHANNELS = 2  # the stamp, and the PSF

    def __init__(
        self,
        in_chans: int,
        num_outputs: int,
        stamp_size: int,
        network: dict,
        psf_size: int = 33,
        psf_filters=(16, 32),
        psf_features: int = 32,
        dense=(128, 64),
    ):
        super().__init__()
        if in_chans != self.INPUT_CHANNELS:
            raise ValueError(f"PSFConditioned takes the stamp and its PSF; got in_chans={in_chans}")
        if psf_size > stamp_size or psf_size % 2 == 0:
            raise ValueError(
                f"model.psf_size={psf_size} must be odd and at most the stamp's {stamp_size}"
            )
        self.features = build_model(network, 1, num_outputs, stamp_size).features
        layers: list[nn.Module] = []
        chans = 1
        for width in psf_filters:
            layers += [
                nn.Conv2d(chans, width, 3, padding=1),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            chans = width
        layers += [nn.Flatten()]
        encoder = nn.Sequential(*layers)
        size = _feature_size(encoder, 1, psf_size)
        self.psf_encoder = nn.Sequential(
            encoder, nn.Linear(size, psf_features), nn.ReLU(inplace=True)
        )
        self.psf_size = psf_size
        size = _feature_size(self.features, 1, stamp_size) + psf_features
        head: list[nn.Module] = []
        for units in dense:
            head += [nn.Linear(size, units), nn.ReLU(inplace=True)]
            size = units
        head.append(nn.Linear(size, num_outputs))
        self.head = nn.Sequential(*head)

    def forward(self, x):
        c, h = x.shape[-1] // 2, self.psf_size // 2
        psf = x[:, 1:, c - h : c + h + 1, c - h : c + h + 1]
        return self.head(torch.cat([self.features(x[:, :1]), self.psf_encoder(psf)], 1))


def input_channels(model_cfg: dict) -> int:
    """Input channels of a model config: 2 (stamp and PSF) for a PSF-conditioned model, else 1."""
    return getattr(MODELS[model_name(model_cfg)], "INPUT_CHANNELS", 1)


MODELS["psf_conditioned"] = PSFConditioned
