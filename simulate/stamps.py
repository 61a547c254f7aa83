"""Bringing square stamps of any size to the stored size (docs/contract.md, section 3).

Convention (numpy indexing, ``image[y, x]``): the pixel at index ``size // 2`` of the input, on
each axis, lands at index ``out_size // 2`` of the output. For even sizes this keeps the true
centre (the corner between the two middle pixels) at the true centre; an odd stamp's central
pixel lands on the pixel just above and right of the output's true centre. Larger stamps are
centre-cropped; smaller ones are placed into ``background`` (an ``out_size`` square: zeros, or
noise with the same rms as the stamp's background).

The same function is used by the simulator and by ``fitnet`` when it reads images from
elsewhere, so both see galaxies at the same place.
"""

from __future__ import annotations

import numpy as np


def placement(in_size: int, out_size: int) -> tuple[slice, slice]:
    """Slices (source, destination) along one axis for the centre pad/crop rule."""
    if in_size >= out_size:
        start = in_size // 2 - out_size // 2
        return slice(start, start + out_size), slice(0, out_size)
    start = out_size // 2 - in_size // 2
    return slice(0, in_size), slice(start, start + in_size)


def centre_shift(in_size: int, out_size: int) -> float:
    """Pixel shift (both axes) of the input's true centre relative to the output's true centre."""
    return 0.5 * ((in_size % 2) - (out_size % 2))


def pad_or_crop(
    image: np.ndarray, out_size: int, background: np.ndarray | None = None
) -> np.ndarray:
    """Return ``image`` (2-D, square or not) centre-cropped or padded to ``out_size`` square.

    ``background`` is the ``(out_size, out_size)`` field that padded pixels keep (zeros when
    None); it is copied, not modified.
    """
    image = np.asarray(image)
    if image.ndim != 2:
        raise ValueError(f"pad_or_crop needs a 2-D image, got shape {image.shape}")
    if background is None:
        out = np.zeros((out_size, out_size), dtype=image.dtype)
    else:
        if background.shape != (out_size, out_size):
            raise ValueError(
                f"background has shape {background.shape}, expected {(out_size, out_size)}"
            )
        out = np.array(background, dtype=np.result_type(image.dtype, background.dtype))
    src_y, dst_y = placement(image.shape[0], out_size)
    src_x, dst_x = placement(image.shape[1], out_size)
    out[dst_y, dst_x] = image[src_y, src_x]
    return out
