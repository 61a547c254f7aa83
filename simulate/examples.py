"""``python -m simulate.examples [out_dir=examples]``: small FITS files to try every command of
the README on, made with GalSim from the instruments of conf/instrument.

Writes into ``out_dir``:

- ``cutouts/gal_<k>.fits``: cutouts of the space instrument (the shipped model's, candels_h),
  sky-subtracted e-/s per pixel, with a celestial WCS (TAN); ``truth_cutouts.ecsv``.
- ``ground/gal_<k>.fits``: cutouts of a ground-based instrument (rubin_i) in ADU, with
  ``MAGZERO`` (AB mag of one ADU summed) in the header, and ``ground_psf.fits``, its effective
  PSF at the data's sampling: the input of ``ckpt=generalist``; ``truth_ground.ecsv``.
- ``mosaic.fits`` (e-/s per pixel, WCS; its right half deeper), ``weight.fits`` (inverse
  variance, (e-/s)^-2) and ``sources.fits`` (``ra``, ``dec`` in deg, with the true labels as
  ``<label>_true``).
- ``tiles/tile_<k>.fits`` and ``tile_sources/tile_<k>.fits``: a mosaic in pieces with a
  catalogue each, for a folder run (``output=cats/``).

The labels follow the contract (docs/contract.md): mag AB, n, re in arcsec along the
semi-major axis, q = b/a, pa in degrees counter-clockwise from +x. Every number is in
conf/examples.yaml.

Example: python -m simulate.examples out_dir=examples
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from omegaconf import DictConfig

from sersic_runtime.commands import command
from sersic_runtime.errors import UserError

log = logging.getLogger("simulate.examples")

LABELS = ("mag", "n", "re", "q", "pa")


def run(cfg: DictConfig) -> Path:
    """Write the example files of ``cfg`` into ``cfg.out_dir``; return the folder."""
    import numpy as np

    out = Path(cfg.out_dir)
    if out.is_dir() and any(out.iterdir()) and not cfg.overwrite:
        raise UserError(
            f"out_dir={out} holds files: name an empty folder, or pass overwrite=true to replace "
            "the examples there"
        )
    rng = np.random.default_rng(cfg.seed)
    space, ground = Instrument(cfg.space), Instrument(cfg.ground)
    write_cutouts(out, "cutouts", space, cfg.labels.space, cfg.cutouts, rng, cfg.stamp_reach_re)
    gain = float(cfg.ground_cutouts.gain)
    write_cutouts(out, "ground", ground, cfg.labels.ground, cfg.ground_cutouts, rng,
                  cfg.stamp_reach_re, gain=gain)  # fmt: skip
    write_fits(out / "ground_psf.fits", ground.psf_image(int(cfg.psf_size_px)), ground.header())
    mosaic = cfg.mosaic
    write_mosaic(out, "mosaic.fits", "sources.fits", space, cfg, mosaic.size_px,
                 mosaic.galaxies, rng, weight="weight.fits")  # fmt: skip
    for k in range(int(cfg.tiles.count)):
        write_mosaic(out, f"tiles/tile_{k}.fits", f"tile_sources/tile_{k}.fits", space, cfg,
                     cfg.tiles.size_px, cfg.tiles.galaxies, rng)  # fmt: skip
    log.info("wrote the examples into %s", out)
    return out


class Instrument:
    """An instrument of conf/instrument: its PSF, zero point and CCD noise."""

    def __init__(self, spec):
        from .psf_record import build_psf

        self.spec = spec
        self.scale = float(spec.pixel_scale)  # arcsec / pixel
        self.psf = build_psf(spec.psf).withFlux(1.0)
        self.fwhm_px = self.psf.calculateFWHM() / self.scale

    def galaxy(self, labels: dict):
        """The galaxy of ``labels`` through the PSF (GalSim, arcsec)."""
        import galsim

        from .render import flux_from_mag, sersic_profile

        flux = float(flux_from_mag(labels["mag"], float(self.spec.zero_point)))  # e-/s
        sersic = sersic_profile(labels["n"], labels["re"], labels["q"], labels["pa"], flux)
        return galsim.Convolve(sersic, self.psf)

    def noisy(self, image, rng, depth: float = 1.0):
        """``image`` (noiseless, e-/s per pixel) with CCD noise of ``depth`` times the exposure:
        Poisson on source and sky electrons, read noise, the sky subtracted (docs/contract.md)."""
        t = float(self.spec.exposure_time) * depth
        sky = float(self.spec.sky_level) * t  # e- per pixel
        electrons = rng.poisson((image * t).clip(0) + sky) + rng.normal(
            0, self.spec.read_noise, image.shape
        )
        return ((electrons - sky) / t).astype("float32")

    def rms(self, depth: float = 1.0) -> float:
        """Background rms in e-/s per pixel at ``depth`` times the exposure."""
        t = float(self.spec.exposure_time) * depth
        return math.sqrt(float(self.spec.sky_level) * t + float(self.spec.read_noise) ** 2) / t

    def psf_image(self, size: int):
        """The effective PSF (with the pixel) at the data's sampling, unit sum."""
        array = self.psf.drawImage(nx=size, ny=size, scale=self.scale).array
        return (array / array.sum()).astype("float32")

    def header(self, shape=None, ra: float = 150.0, dec: float = 2.0, unit: str = "e-/s"):
        """A FITS header with the pixel scale (a TAN WCS when ``shape`` is given)."""
        from astropy.io import fits
        from astropy.wcs import WCS

        if shape is None:
            header = fits.Header()
            header["PIXSCALE"] = (self.scale, "arcsec / pixel")
            return header
        wcs = WCS(naxis=2)
        wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        wcs.wcs.crval = [ra, dec]
        wcs.wcs.crpix = [(shape[1] + 1) / 2, (shape[0] + 1) / 2]  # FITS pixels are 1-based
        wcs.wcs.cd = [[-self.scale / 3600, 0.0], [0.0, self.scale / 3600]]
        header = wcs.to_header()
        header["BUNIT"] = unit
        header["INSTRUME"] = str(self.spec.name)
        return header


def draw_labels(ranges, rng, count: int) -> list[dict]:
    """``count`` label sets, uniform in ``ranges`` (re log-uniform), pa uniform in [0, 180)."""
    rows = []
    for _ in range(count):
        row = {k: float(rng.uniform(*ranges[k])) for k in ("mag", "n", "q")}
        row["re"] = float(math.exp(rng.uniform(*map(math.log, ranges.re))))
        row["pa"] = float(rng.uniform(0.0, 180.0))
        rows.append(row)
    return rows


def draw(instrument: Instrument, labels: dict, size: int, offset=(0.0, 0.0)):
    """The noiseless ``size`` square stamp (e-/s per pixel) of a galaxy ``offset`` pixels
    (x, y) from the stamp's centre."""
    obj = instrument.galaxy(labels)
    return obj.drawImage(nx=size, ny=size, scale=instrument.scale, offset=offset).array


def write_cutouts(out: Path, name: str, instrument, ranges, spec, rng, reach_re, gain=None):
    """Cutouts of galaxies centred within half a pixel, of sizes in ``spec.size_px``, in e-/s
    per pixel, or in ADU with MAGZERO when ``gain`` (e- per ADU) is given."""
    from astropy.table import Table

    rows = draw_labels(ranges, rng, int(spec.count))
    for k, row in enumerate(rows):
        size = int(rng.integers(spec.size_px[0], spec.size_px[1] + 1))
        offset = tuple(rng.uniform(-0.5, 0.5, 2))
        image = instrument.noisy(draw(instrument, row, size, offset), rng)
        header = instrument.header(image.shape, unit="e-/s" if gain is None else "adu")
        if gain is not None:
            t = float(instrument.spec.exposure_time)
            image = image * (t / gain)  # e-/s -> ADU in the exposure
            header["MAGZERO"] = (float(instrument.spec.zero_point) + 2.5 * math.log10(t / gain),
                                 "AB mag of a source of 1 ADU summed")  # fmt: skip
            header["GAIN"] = (gain, "e- per ADU")
        row.update(
            file=f"gal_{k:02d}.fits", x=(size - 1) / 2 + offset[0], y=(size - 1) / 2 + offset[1]
        )
        write_fits(out / name / row["file"], image, header)
    truth = Table(rows=rows, names=["file", *LABELS, "x", "y"])
    for col, unit in (("mag", "mag"), ("re", "arcsec"), ("pa", "deg"), ("x", "pix"), ("y", "pix")):
        truth[col].unit = unit
    write_table(truth, out / f"truth_{name}.ecsv")


def positions(rng, size: int, count: int, separation: float, margin: float) -> list[tuple]:
    """``count`` (x, y) pixel positions in a ``size`` square, ``separation`` apart."""
    found = []
    while len(found) < count:
        x, y = rng.uniform(margin, size - 1 - margin, 2)
        if all(math.hypot(x - a, y - b) >= separation for a, b in found):
            found.append((float(x), float(y)))
    return found


def write_mosaic(out: Path, image_name: str, catalogue_name: str, instrument, cfg, size, count,
                 rng, weight: str | None = None):  # fmt: skip
    """A mosaic of ``count`` galaxies with its catalogue (ra, dec in deg and the true labels);
    with ``weight``, its right half ``cfg.mosaic.deep_factor`` deeper and an inverse-variance map."""
    import numpy as np
    from astropy.table import Table
    from astropy.wcs import WCS

    size = int(size)
    rows = draw_labels(cfg.labels.space, rng, int(count))
    where = positions(rng, size, len(rows), float(cfg.mosaic.min_separation_px), 8.0)
    canvas = np.zeros((size, size))
    for row, (x, y) in zip(rows, where, strict=True):
        add_galaxy(canvas, instrument, row, x, y, cfg.stamp_reach_re)
    depth = np.ones((size, size))
    if weight is not None:
        depth[:, size // 2 :] = float(cfg.mosaic.deep_factor)
    image = np.where(depth > 1, instrument.noisy(canvas, rng, float(cfg.mosaic.deep_factor)),
                     instrument.noisy(canvas, rng))  # fmt: skip
    header = instrument.header(image.shape, cfg.mosaic.ra_deg, cfg.mosaic.dec_deg)
    write_fits(out / image_name, image, header)
    if weight is not None:
        rms = np.where(depth > 1, instrument.rms(float(cfg.mosaic.deep_factor)), instrument.rms())
        write_fits(out / weight, (1.0 / rms**2).astype("float32"), header)
    sky = WCS(header).pixel_to_world([p[0] for p in where], [p[1] for p in where])
    table = Table({"id": np.arange(1, len(rows) + 1), "ra": sky.ra.deg, "dec": sky.dec.deg})
    for label in LABELS:
        table[f"{label}_true"] = [row[label] for row in rows]
    table["ra"].unit = table["dec"].unit = "deg"
    table["re_true"].unit, table["pa_true"].unit, table["mag_true"].unit = "arcsec", "deg", "mag"
    write_table(table, out / catalogue_name)


def add_galaxy(canvas, instrument, labels: dict, x: float, y: float, reach_re: float) -> None:
    """Add the noiseless galaxy centred at pixel (x, y) (0-based) to ``canvas``, drawn out to
    ``reach_re`` re (at least 4 PSF FWHM) and clipped at the canvas's edges."""
    re_px = labels["re"] / instrument.scale
    half = int(math.ceil(max(reach_re * re_px, 4 * instrument.fwhm_px)))
    ix, iy = int(round(x)), int(round(y))
    stamp = draw(instrument, labels, 2 * half + 1, (x - ix, y - iy))
    y0, x0 = iy - half, ix - half
    rows = slice(max(y0, 0), min(y0 + stamp.shape[0], canvas.shape[0]))
    cols = slice(max(x0, 0), min(x0 + stamp.shape[1], canvas.shape[1]))
    canvas[rows, cols] += stamp[rows.start - y0 : rows.stop - y0, cols.start - x0 : cols.stop - x0]


def write_fits(path: Path, data, header) -> None:
    """A FITS image, written under a temporary name and renamed."""
    from astropy.io import fits

    from sersic_runtime.files import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fits.PrimaryHDU(data, header=header).writeto(tmp, output_verify="silentfix")


def write_table(table, path: Path) -> None:
    """An astropy table (FITS or ECSV by the suffix), written under a temporary name."""
    from sersic_runtime.files import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = "fits" if path.suffix == ".fits" else "ascii.ecsv"
    with atomic_path(path) as tmp:
        table.write(tmp, format=fmt, overwrite=True)


main = command("simulate.examples", "examples", __doc__)(run)

if __name__ == "__main__":
    main()
