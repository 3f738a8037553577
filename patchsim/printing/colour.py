"""Colour conversions and colour difference: sRGB <-> linear light, sRGB -> CIELAB (kornia's), and
CIEDE2000 (scikit-image's).

All colours are float arrays with the channel last, shape (..., 3). sRGB values are in [0, 1]
(IEC 61966-2-1 transfer curve, D65 white); Lab uses the D65 reference white with Y = 1.
"""

from __future__ import annotations

import numpy as np

def _kornia(op, values: np.ndarray) -> np.ndarray:
    """A ``kornia.color`` conversion (images (*, 3, H, W)) applied to colours (..., 3), float64 kept."""
    import torch

    c = np.asarray(values, dtype=float)
    flat = torch.from_numpy(np.ascontiguousarray(c.reshape(-1, 3).T))[:, :, None]  # (3, N, 1)
    return op(flat)[:, :, 0].T.numpy().reshape(c.shape)


def _kornia_per_value(op, values: np.ndarray) -> np.ndarray:
    """A per-value ``kornia.color`` curve (the same on each channel) applied to values of any shape."""
    c = np.asarray(values, dtype=float)
    flat = np.broadcast_to(c.reshape(-1, 1), (c.size, 3))
    return _kornia(op, flat)[:, 0].reshape(c.shape)


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] -> linear light, any shape (kornia's ``rgb_to_linear_rgb``)."""
    from kornia.color import rgb_to_linear_rgb

    return _kornia_per_value(rgb_to_linear_rgb, rgb)


def linear_to_srgb(lin: np.ndarray) -> np.ndarray:
    """Linear light -> sRGB-encoded values, any shape (negative input is clipped to 0; kornia's
    ``linear_rgb_to_rgb``)."""
    from kornia.color import linear_rgb_to_rgb

    return _kornia_per_value(linear_rgb_to_rgb, np.maximum(np.asarray(lin, dtype=float), 0.0))


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (..., 3) in [0, 1] -> CIELAB (..., 3), D65, 2-degree observer (kornia's ``rgb_to_lab``):
    L in [0, 100], a and b roughly in [-128, 127]."""
    from kornia.color import rgb_to_lab

    return _kornia(rgb_to_lab, rgb)


def delta_e_2000(lab1: np.ndarray, lab2: np.ndarray, k_l: float = 1.0, k_c: float = 1.0,
                 k_h: float = 1.0) -> np.ndarray:
    """CIEDE2000 colour difference between Lab colours (..., 3) -> (...).

    scikit-image's implementation (Sharma, Wu and Dalal 2005), a maintained one; the test suite
    checks it against Sharma's published test pairs.
    """
    from skimage.color import deltaE_ciede2000

    return deltaE_ciede2000(np.asarray(lab1, dtype=float), np.asarray(lab2, dtype=float), kL=k_l, kC=k_c, kH=k_h)


def delta_e_srgb(rgb1: np.ndarray, rgb2: np.ndarray) -> np.ndarray:
    """CIEDE2000 between two sRGB colour arrays (..., 3) in [0, 1] -> (...)."""
    return delta_e_2000(srgb_to_lab(rgb1), srgb_to_lab(rgb2))
