"""Sersic profile fitting in one forward pass: a network trained on GalSim galaxies measures
mag (AB), n, re (arcsec, semi-major axis) and q of galaxy images, with calibrated errors.

    import fitnet
    model = fitnet.load()
    table = model.predict(image, pixel_scale=0.06)
"""

from .api import Model, load

__all__ = ["Model", "load"]
