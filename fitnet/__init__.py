"""Sersic profile fitting in one forward pass: a network trained on GalSim galaxies measures
mag (AB), n, re (arcsec, semi-major axis) and q of galaxy images, with calibrated errors.

    import fitnet
    model = fitnet.load()
    table = model.predict(image, pixel_scale=0.06)

``Model`` and ``load`` are imported on first use, so that ``python -m fitnet.<command> --help``
does not load PyTorch.
"""

from sersic_runtime.files import package_version

__version__ = package_version()
__all__ = ["Model", "load", "__version__"]


def __getattr__(name: str):
    if name in ("Model", "load"):
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'fitnet' has no attribute {name!r}")
