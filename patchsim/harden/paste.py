"""Patches put on the sign faces of training images, labels kept (a stop sign with stickers is still a
stop sign).

The detector data set records each sign face's four image corners (``corners/<split>/<name>.json``,
see :mod:`patchsim.data.generate`). A patch (RGBA at slot resolution: colours, and alpha where it is
printed) is warped onto a face with the face's homography, clipped to the face's outline (an
octagon for a stop sign), and lit like the face: the light is measured as the ratio of the face's
pixels in the image to the face's printed colours warped the same way (the brightness ratio the
EOT's shading uses), one gain per colour channel.
"""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

from patchsim.attack.patch import SlotInfo, face_colours, raster_polygon

MIN_FACE_PX = 8.0  # faces smaller than this (longest side) are left alone: a patch there is a few pixels
GAIN_RANGE = (0.05, 3.0)


@lru_cache(maxsize=8)
def face_template(sign_kind: str, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(h, w, 3) the face's printed colours and (h, w) its outline coverage, float32 in [0, 1]."""
    base = face_colours(sign_kind, hw).permute(1, 2, 0).numpy()
    outline = raster_polygon(SlotInfo("face", "sign_face", (1.0, 1.0), sign_kind).outline_uv(), hw)
    return np.ascontiguousarray(base), outline


def paste_on_face(image_rgb: np.ndarray, face_corners_px: np.ndarray, rgba: np.ndarray, sign_kind: str,
                  gain_jitter: float = 0.0, rng: np.random.Generator | None = None) -> bool:
    """Put ``rgba`` on one sign face of ``image_rgb``, in place.

    Args:
        image_rgb: (H, W, 3) uint8 image.
        face_corners_px: (4, 2) the face's corners (TL, TR, BR, BL of the patch image) in the image.
        rgba: (h, w, 4) float32 in [0, 1]: colours as seen (printed), alpha where the patch is.
        sign_kind: the face's sign kind (its outline and printed colours).
        gain_jitter: the measured light is scaled by a factor drawn from 1 +- this (print and light
            differences the measurement misses).

    Returns:
        False when the face is too small or not in the image (nothing changed).
    """
    corners = np.asarray(face_corners_px, np.float32)
    side = float(max(np.linalg.norm(corners[1] - corners[0]), np.linalg.norm(corners[3] - corners[0])))
    H, W = image_rgb.shape[:2]
    x0, y0 = np.floor(corners.min(0)).astype(int)
    x1, y1 = np.ceil(corners.max(0)).astype(int) + 1
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
    if side < MIN_FACE_PX or x1 - x0 < 2 or y1 - y0 < 2:
        return False
    base, outline = face_template(sign_kind, tuple(rgba.shape[:2]))
    layers = np.concatenate([rgba, base, outline[..., None]], -1)  # (h, w, 8): patch, printed face, outline
    # at about twice the face's size in the image, so the warp does not alias
    n = int(min(max(2 * side, 16), rgba.shape[0]))
    hw = (n, max(2, int(round(n * rgba.shape[1] / rgba.shape[0]))))
    if hw != rgba.shape[:2]:
        layers = np.stack([cv2.resize(np.ascontiguousarray(layers[..., c]), (hw[1], hw[0]),
                                      interpolation=cv2.INTER_AREA) for c in range(layers.shape[-1])], -1)
    src = np.array([[0, 0], [hw[1], 0], [hw[1], hw[0]], [0, hw[0]]], np.float32)
    dst = corners - np.array([x0, y0], np.float32)
    M = cv2.getPerspectiveTransform(src, dst)
    size = (x1 - x0, y1 - y0)
    warped = np.stack([cv2.warpPerspective(np.ascontiguousarray(layers[..., c]), M, size, flags=cv2.INTER_LINEAR)
                       for c in range(layers.shape[-1])], -1)
    colour, alpha, face, inside = warped[..., :3], warped[..., 3], warped[..., 4:7], warped[..., 7]
    region = image_rgb[y0:y1, x0:x1].astype(np.float32) / 255.0
    weight = (inside > 0.9).astype(np.float32)
    if weight.sum() < 4:
        return False
    gain = (region * weight[..., None]).sum((0, 1)) / ((face * weight[..., None]).sum((0, 1)) + 1e-6)
    gain = np.clip(gain, *GAIN_RANGE)
    if gain_jitter and rng is not None:
        gain = gain * float(rng.uniform(1 - gain_jitter, 1 + gain_jitter))
    a = (alpha * inside)[..., None]
    out = region * (1 - a) + np.clip(colour * gain, 0, 1) * a
    image_rgb[y0:y1, x0:x1] = (out * 255 + 0.5).astype(np.uint8)
    return True
