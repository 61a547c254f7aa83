"""The ``flag`` bits of every catalogue row (docs/contract.md, section 8): 0 means nothing
wrong, trust the row. ``problem`` names the bits set, each with what was measured.

The values of the first five bits are those catalogues have always had; each bit keeps its
value for good (a catalogue on disk is read with this table).
"""

from __future__ import annotations

#: name -> (bit, what sets it). Rows with any of ``NO_MEASUREMENT`` set have NaN labels.
FLAGS = {
    "unreadable": (1, "the file cannot be read, or holds no image data"),
    "not_2d": (2, "the image is not two-dimensional"),
    "invalid_pixels": (
        4,
        "more than quality.max_invalid_fraction of the pixels are NaN, infinite or masked",
    ),
    "pixel_scale": (8, "the image's pixel scale is missing or differs from the model's"),
    "fit_failed": (16, "the classical fit (python -m fitnet.baseline) did not converge"),
    "no_source": (32, "no source above quality.min_significance near the centre"),
    "off_centre": (
        64,
        "the source is off-centre beyond the training offsets and could not be recentred",
    ),
    "background": (
        128,
        "the background level differs from zero by more than quality.max_background_rms",
    ),
    "noise": (
        256,
        "the noise rms is outside quality.noise_ratio times the model's (depth or units)",
    ),
    "neighbours": (512, "a neighbour's footprint touches the source's"),
    "not_a_cutout": (1024, "the image is much larger than a cutout of one galaxy (a field)"),
    "out_of_range": (
        2048,
        "a prediction lies outside the physical range or beyond the training prior",
    ),
    "bad_fit": (
        4096,
        "the predicted Sersic leaves a residual above the noise (quality.max_chi2_sigma): not one Sersic?",
    ),
    "uninformative": (
        8192,
        "a sigma is as wide as the training prior's own (quality.max_sigma_prior_std)",
    ),
    "off_image": (
        16384,
        "the catalogue position is outside the mosaic (not measured), or its cutout runs off "
        "the mosaic's edge (measured, padded with noise)",
    ),
    "psf_range": (
        32768,
        "the PSF's FWHM is outside the range the PSF-conditioned model was trained on",
    ),
    "masked_source": (
        65536,
        "the user's mask hides more than quality.max_masked_light of the source's light within re",
    ),
}
BITS = {name: bit for name, (bit, _) in FLAGS.items()}
#: Bits after which the row has no measurement (the network is not run, labels are NaN).
NO_MEASUREMENT = (
    "unreadable",
    "not_2d",
    "invalid_pixels",
    "pixel_scale",
    "no_source",
    "not_a_cutout",
)
NO_MEASUREMENT_MASK = sum(BITS[name] for name in NO_MEASUREMENT)


def names(flag: int) -> list[str]:
    """The names of the bits set in ``flag``, in bit order."""
    return [name for name, bit in BITS.items() if flag & bit]


def describe() -> str:
    """A table of the bits, for logs, headers and docs."""
    return "\n".join(f"{bit:5d} {name}: {what}" for name, (bit, what) in FLAGS.items())
