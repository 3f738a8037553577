"""Patches on the sign faces of training images: inside the face's outline only, lit like the face."""

from __future__ import annotations

import numpy as np
import pytest

from patchsim.harden.paste import face_template, paste_on_face

CORNERS = np.array([[40, 30], [100, 30], [100, 90], [40, 90]], np.float32)


def _scene(gain: float) -> np.ndarray:
    """A grey image with a stop face drawn at CORNERS, its printed colours times ``gain``."""
    import cv2

    img = np.full((128, 160, 3), 90, np.uint8)
    base, outline = face_template("stop_sign", (60, 60))
    face = (np.clip(base * gain, 0, 1) * 255).astype(np.uint8)
    region = img[30:90, 40:100]
    a = outline[..., None]
    img[30:90, 40:100] = (region * (1 - a) + face * a).astype(np.uint8)
    return cv2.GaussianBlur(img, (1, 1), 0)


def _white_patch() -> np.ndarray:
    rgba = np.ones((96, 96, 4), np.float32)
    return rgba


def test_the_patch_lands_inside_the_face_outline_and_nowhere_else():
    img = _scene(1.0)
    before = img.copy()
    assert paste_on_face(img, CORNERS, _white_patch(), "stop_sign")
    changed = np.abs(img.astype(int) - before.astype(int)).sum(-1) > 0
    ys, xs = np.nonzero(changed)
    assert changed.sum() > 0.5 * 60 * 60  # most of the face: a stop face is red, the patch white
    assert xs.min() >= 39 and xs.max() <= 100 and ys.min() >= 29 and ys.max() <= 90
    # the octagon's cut corners keep the background
    assert not changed[31, 41] and not changed[88, 98]


@pytest.mark.parametrize("gain", [0.4, 1.0])
def test_the_patch_is_lit_like_the_face(gain):
    img = _scene(gain)
    assert paste_on_face(img, CORNERS, _white_patch(), "stop_sign")
    centre = img[55:65, 65:75].astype(np.float32).mean() / 255
    assert centre == pytest.approx(gain, abs=0.08)  # white paper under the face's light


def test_a_partial_sticker_mask_keeps_the_rest_of_the_face():
    img = _scene(1.0)
    before = img.copy()
    rgba = _white_patch()
    rgba[:, 48:, 3] = 0.0  # only the left half is printed
    paste_on_face(img, CORNERS, rgba, "stop_sign")
    changed = np.abs(img.astype(int) - before.astype(int)).sum(-1) > 0
    assert changed[:, 40:68].sum() > 0 and changed[:, 72:100].sum() == 0


def test_a_face_of_a_few_pixels_is_left_alone():
    img = _scene(1.0)
    before = img.copy()
    tiny = np.array([[10, 10], [14, 10], [14, 14], [10, 14]], np.float32)
    assert not paste_on_face(img, tiny, _white_patch(), "stop_sign")
    assert np.array_equal(img, before)
