"""The Python API, for notebooks and pipelines::

    import fitnet
    model = fitnet.load()                      # the shipped model; fitnet.load("best.pt") for yours
    table = model.predict(image, pixel_scale=0.06)

``Model.predict`` takes what ``python -m fitnet.predict`` takes, with the same checks: one 2-D
array, a 3-D stack or a list of 2-D arrays of any size (padded with noise or cropped to the
model's stamps), FITS or HDF5 paths, or a folder. Pixels are sky-subtracted e-/s per pixel in
the model's zero-point system (``input_scale`` converts other units). It returns an astropy
Table, one row per image in input order, with units on every column: the labels, their
1-sigma errors (``<label>_err``), ``flag`` (0 = trust the row) and ``problem``.

The PSF-conditioned generalist measures any instrument's cutouts given their PSF::

    model = fitnet.load("generalist")
    table = model.predict(cutouts, pixel_scale=0.2, psf="psf.fits", zero_point=27.0)
"""

from __future__ import annotations

from pathlib import Path

from astropy.table import Table

from sersic_runtime.configs import compose_packaged, load_group
from sersic_runtime.errors import UserError
from sersic_runtime.options import positive

from .catalogue import write_table
from .generalist import zero_point_of
from .inference import Predictor
from .inputs import first_fits
from .measure import FIT_MODES, Measurer, Settings, measure_cutouts
from .parts import Parts, file_stamp
from .psfs import psfs_for
from .runtime import checkpoint_paths, resolve_device, set_threads


class Model:
    """A loaded model (one checkpoint, or single-target checkpoints combined)."""

    def __init__(self, predictor: Predictor, batch_size: int, quality, resume_rows: int):
        self.predictor = predictor
        self.batch_size = batch_size  # images per forward pass
        self.quality = quality  # the checks (conf/quality)
        self.resume_rows = resume_rows  # rows per saved part of a call with an output

    @property
    def labels(self) -> list[str]:
        """The labels the model predicts, e.g. ``['mag', 'n', 're', 'q']``."""
        return list(self.predictor.labels)

    @property
    def pixel_scale(self) -> float:
        """arcsec / pixel of the data the model was trained on."""
        return self.predictor.pixel_scale

    @property
    def stamp_size(self) -> int:
        """pixel, side of the stamps the network sees (other sizes are padded or cropped)."""
        return self.predictor.stamp_size

    @property
    def instrument(self) -> dict:
        """The training data's instrument: pixel scale, zero point, PSF, noise (with units in
        the key names)."""
        return dict(self.predictor.instrument)

    def __repr__(self) -> str:
        return (
            f"fitnet.Model({', '.join(self.predictor.paths)}: {self.labels}, "
            f"{self.pixel_scale:g} arcsec/pixel, {self.stamp_size} px stamps)"
        )

    def predict(
        self,
        images,
        pixel_scale: float | None = None,
        *,
        input_scale: float = 1.0,
        allow_pixel_scale_mismatch: bool = False,
        pad_seed: int = 0,
        mask=None,
        checks: bool = True,
        fit: str = "auto",
        progress: bool = False,
        psf=None,
        zero_point: float | None = None,
        gain: float | None = None,
        psf_includes_pixel: bool = True,
        output=None,
    ) -> Table:
        """The catalogue of ``images`` (see the module docstring).

        ``pixel_scale``: arcsec / pixel of images that do not state one (arrays, FITS headers
        without a WCS or scale keyword); for the specialist it must match the model's.
        ``input_scale``: factor that turns the pixels into e-/s per pixel (the specialist).
        ``pad_seed`` seeds the noise that pads small images. ``mask`` (non-zero = leave the
        pixel out): arrays of the images' shapes, or for FITS input a FITS mask (a folder of
        them for a folder). ``checks``: the checks of conf/quality (``flag`` and ``problem``
        say what they found; docs/guide/predict.md, "Flags"). ``fit``: ``auto``, ``all`` or
        ``none``, the Sersic fit to each row's pixels (conf/fit).

        For a PSF-conditioned model (``fitnet.load("generalist")``): ``psf``, the cutouts' PSF
        (a FITS image, cube or folder, a PSFEx or PIFF model; ``psf_includes_pixel``: an
        effective PSF, as PSFEx, PIFF and stars give); ``pixel_scale`` the cutouts' arcsec /
        pixel (else their header's); ``zero_point`` the AB mag of one image unit summed (else
        the header's MAGZERO, MAGZPT or ZP; without one, fluxes only); ``gain`` the counts per
        image unit (else the header's GAIN). Pixels may be in any units.

        ``output``: a catalogue path (.csv, .ecsv, .fits) the table is also written to,
        atomically; the rows are saved beside it as they are measured, and the same call
        after a kill measures only the rest (``fitnet.parts``; ``resume_rows`` rows a part,
        conf/predict.yaml's).
        """
        predictor = self.predictor
        if psf is not None and not predictor.needs_psf:
            raise UserError("psf= is for a PSF-conditioned model (fitnet.load('generalist'))")
        pixel_scale = positive("pixel_scale", pixel_scale, allow_null=True)
        zp = zero_point_of(first_fits(images)[1], zero_point) if predictor.needs_psf else None
        settings = Settings(load_group("fit", fit) if fit in FIT_MODES else _bad_fit(fit),
                            self.quality if checks else None, zp, gain, self.batch_size)  # fmt: skip
        psfs = psfs_for(predictor.needs_psf, images, psf, psf_includes_pixel)
        arguments = dict(input_scale=input_scale, pixel_scale=pixel_scale, pad_seed=pad_seed,
                         allow=allow_pixel_scale_mismatch, checks=checks, fit=fit,
                         psf=fingerprint(psf), zero_point=zp, gain=gain,
                         psf_includes_pixel=psf_includes_pixel)  # fmt: skip
        parts = None if output is None else self._parts(output, images, mask, arguments)
        table = measure_cutouts(
            Measurer(predictor, settings), images,
            input_scale=positive("input_scale", input_scale), pad_seed=pad_seed,
            pixel_scale=pixel_scale, allow_mismatch=allow_pixel_scale_mismatch, mask=mask,
            psfs=psfs, progress=progress, parts=parts,
        )  # fmt: skip
        if parts is not None:
            parts.save()
            write_table(table, output)
            parts.remove()
        return table

    def _parts(self, output, images, mask, arguments: dict) -> Parts:
        """The saved rows of an earlier call with the same images, model and arguments."""
        run = {"checkpoints": [file_stamp(p) for p in self.predictor.paths], **arguments,
               "images": fingerprint(images), "mask": fingerprint(mask)}  # fmt: skip
        parts = Parts(output, run, self.resume_rows)
        parts.load()
        return parts


def fingerprint(value):
    """What identifies the images (or masks, PSFs) of a call: files by ``file_stamp``,
    arrays by their type, shape and a hash of their bytes."""
    import hashlib

    import numpy as np

    if value is None:
        return None
    if isinstance(value, (str, Path)):
        return file_stamp(value)
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        return [str(array.dtype), list(array.shape), hashlib.sha256(array.data).hexdigest()]
    if isinstance(value, (list, tuple)):
        return [fingerprint(v) for v in value]
    return repr(value)


def _bad_fit(fit):
    raise UserError(f"fit={fit!r} is not allowed: choose from {', '.join(FIT_MODES)}")


def load(path=None, *, device: str = "auto", amp=None, threads="auto", backend=None) -> Model:
    """The shipped pretrained model, a shipped one by name (``"generalist"``), or the
    checkpoint(s) at ``path`` (one path or a list of single-target ones). ``device``: auto,
    cpu or cuda; ``amp``: bfloat16 autocast, auto, True or False; ``backend``: auto, torch or
    onnx (``fitnet.backends``; both default from conf/inference); ``threads``: the CPU
    threads, ``auto`` or a number (``fitnet.runtime.set_threads``)."""
    inference = load_group("inference")
    set_threads(threads)
    device = resolve_device(device)
    predictor = Predictor(checkpoint_paths(path), device, inference.amp if amp is None else amp,
                          backend=inference.backend if backend is None else backend)  # fmt: skip
    return Model(predictor, int(inference.batch_size[device.type]), load_group("quality"),
                 int(compose_packaged("predict").resume_rows))  # fmt: skip
