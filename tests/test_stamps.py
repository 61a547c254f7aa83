"""The pad/crop rule puts the stamp centre at the stored centre."""

from __future__ import annotations

import numpy as np
import pytest

from simulate.stamps import centre_shift, pad_or_crop


@pytest.mark.parametrize("size", [31, 32, 64, 65, 100, 129, 256])
def test_centre_pixel_lands_on_centre(size):
    image = np.zeros((size, size))
    image[size // 2, size // 2] = 1.0
    out = pad_or_crop(image, 64)
    assert out.shape == (64, 64)
    assert np.unravel_index(out.argmax(), out.shape) == (32, 32)


@pytest.mark.parametrize("size", [31, 32, 65, 100])
def test_true_centre_shift(size):
    # an even stamp keeps its true centre; an odd one sits half a pixel up and right
    assert centre_shift(size, 64) == 0.5 * (size % 2)


def test_padding_keeps_background():
    background = np.full((8, 8), 7.0)
    out = pad_or_crop(np.ones((4, 4)), 8, background=background)
    assert out[0, 0] == 7.0 and out[4, 4] == 1.0
    assert background[4, 4] == 7.0  # not modified


def test_rejects_non_2d():
    with pytest.raises(ValueError, match="2-D image"):
        pad_or_crop(np.zeros((2, 3, 3)), 8)
