"""Random paint for the hardening rounds: road markings and sticker colours that no attack made.

The pool holds a few attack patches a round, and a model can learn to ignore those few. Random paint of
the same size and placement shows it many more kinds (as rectangular-occlusion training does, DOA,
ICLR 2020): a lane-keeper must drive through any paint in its lane as the expert does, and a stop sign
with any stickers on it is still a stop sign.
"""

from __future__ import annotations

import cv2
import numpy as np

# print colours that stickers and tape come in (RGB, 0-1): black, white, red, yellow, blue, green, grey
STICKER_PALETTE = np.array([[0.05, 0.05, 0.05], [0.95, 0.95, 0.95], [0.8, 0.1, 0.1], [0.95, 0.8, 0.1],
                            [0.1, 0.25, 0.75], [0.1, 0.6, 0.2], [0.5, 0.5, 0.5]], np.float32)


def smooth_colour_noise(shape_hw: tuple[int, int], cells_hw: tuple[int, int], rng: np.random.Generator,
                        high: float = 1.0) -> np.ndarray:
    """(H, W, 3) float32: random colours in [0, ``high``] on a ``cells_hw`` grid, interpolated smoothly
    (bicubic: it may overshoot the range by a little; callers clip)."""
    h, w = shape_hw
    coarse = rng.uniform(0.0, high, (int(cells_hw[0]), int(cells_hw[1]), 3)).astype(np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)


def random_marking(shape_hw: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random opaque road marking (H x W x 4 uint8; rows along the road, columns across it): smooth colour
    noise crossed by 1-6 stripes, most of them white or yellow and near the road's direction, like lane lines."""
    h, w = shape_hw
    img = smooth_colour_noise(shape_hw, (int(rng.integers(2, 10)), int(rng.integers(2, 6))), rng, high=255.0)
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(int(rng.integers(1, 7))):
        slope = float(np.tan(rng.uniform(-0.5, 0.5)))  # columns per row: stripes near the road's direction
        across = (cols - rng.uniform(0, w)) - slope * (rows - rng.uniform(0, h))
        half_width = rng.uniform(0.02, 0.12) * w
        kind = rng.random()
        colour = (255.0, 255.0, 255.0) if kind < 0.4 else (230.0, 180.0, 40.0) if kind < 0.6 else rng.uniform(0, 255, 3)
        img[np.abs(across) < half_width] = colour
    rgba = np.empty((h, w, 4), np.uint8)
    rgba[..., :3] = np.clip(img, 0, 255).round().astype(np.uint8)
    rgba[..., 3] = 255
    return rgba


def random_sticker_colours(shape_hw: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """(H, W, 3) float32 in [0, 1] colours for a random sticker layout over a sign face (the layout, as
    alpha, says where they show): smooth colour noise (40 %), blocks of plain print colours, so that each
    sticker is mostly one colour (30 %), or black and white stripes at any angle, as RP2's stickers (30 %)."""
    h, w = shape_hw
    style = rng.random()
    if style < 0.4:
        return np.clip(smooth_colour_noise(shape_hw, (int(rng.integers(2, 13)), int(rng.integers(2, 13))), rng), 0, 1)
    if style < 0.7:
        cells = int(rng.integers(1, 7))
        blocks = STICKER_PALETTE[rng.integers(len(STICKER_PALETTE), size=(cells, cells))]
        return cv2.resize(blocks, (w, h), interpolation=cv2.INTER_NEAREST)
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    angle = rng.uniform(0.0, np.pi)
    period_px = rng.uniform(0.06, 0.3) * max(h, w)
    phase = (np.cos(angle) * cols + np.sin(angle) * rows) / period_px + rng.uniform(0.0, 1.0)
    dark = (phase % 1.0) < rng.uniform(0.3, 0.7)
    img = np.where(dark[..., None], STICKER_PALETTE[0], STICKER_PALETTE[1])
    return np.ascontiguousarray(img, dtype=np.float32)
