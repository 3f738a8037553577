"""Colour conversions and colour difference: sRGB <-> linear light, sRGB -> CIELAB, CIEDE2000.

All colours are float arrays with the channel last, shape (..., 3). sRGB values are in [0, 1]
(IEC 61966-2-1 transfer curve, D65 white); Lab uses the D65 reference white with Y = 1.
"""

from __future__ import annotations

import numpy as np

#: linear sRGB -> CIE XYZ (D65), IEC 61966-2-1.
_RGB_TO_XYZ = np.array([
    [0.4124564, 0.3575761, 0.1804375],
    [0.2126729, 0.7151522, 0.0721750],
    [0.0193339, 0.1191920, 0.9503041],
])
#: D65 reference white in XYZ, Y = 1.
D65_WHITE_XYZ = _RGB_TO_XYZ.sum(axis=1)


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] -> linear light, same shape."""
    c = np.asarray(rgb, dtype=float)
    return np.where(c <= 0.04045, c / 12.92, ((np.maximum(c, 0.04045) + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(lin: np.ndarray) -> np.ndarray:
    """Linear light -> sRGB-encoded values, same shape (negative input is clipped to 0)."""
    c = np.maximum(np.asarray(lin, dtype=float), 0.0)
    return np.where(c <= 0.0031308, c * 12.92, 1.055 * np.maximum(c, 0.0031308) ** (1 / 2.4) - 0.055)


def srgb_to_xyz(rgb: np.ndarray) -> np.ndarray:
    """sRGB (..., 3) in [0, 1] -> CIE XYZ (..., 3), D65, Y of white = 1."""
    return srgb_to_linear(rgb) @ _RGB_TO_XYZ.T


def xyz_to_lab(xyz: np.ndarray, white: np.ndarray = D65_WHITE_XYZ) -> np.ndarray:
    """CIE XYZ (..., 3) -> CIELAB (..., 3): L in [0, 100], a and b roughly in [-128, 127]."""
    t = np.asarray(xyz, dtype=float) / white
    eps, kappa = 216 / 24389, 24389 / 27
    f = np.where(t > eps, np.cbrt(t), (kappa * t + 16) / 116)
    lightness = 116 * f[..., 1] - 16
    a = 500 * (f[..., 0] - f[..., 1])
    b = 200 * (f[..., 1] - f[..., 2])
    return np.stack([lightness, a, b], axis=-1)


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """sRGB (..., 3) in [0, 1] -> CIELAB (..., 3), D65."""
    return xyz_to_lab(srgb_to_xyz(rgb))


def delta_e_2000(lab1: np.ndarray, lab2: np.ndarray, k_l: float = 1.0, k_c: float = 1.0,
                 k_h: float = 1.0) -> np.ndarray:
    """CIEDE2000 colour difference between Lab colours (..., 3) -> (...).

    Follows Sharma, Wu and Dalal (2005), "The CIEDE2000 color-difference formula: implementation
    notes, supplementary test data, and mathematical observations", equations (1)-(17).
    """
    lab1 = np.asarray(lab1, dtype=float)
    lab2 = np.asarray(lab2, dtype=float)
    l1, a1, b1 = lab1[..., 0], lab1[..., 1], lab1[..., 2]
    l2, a2, b2 = lab2[..., 0], lab2[..., 1], lab2[..., 2]

    c_mean = (np.hypot(a1, b1) + np.hypot(a2, b2)) / 2
    g = 0.5 * (1 - np.sqrt(c_mean**7 / (c_mean**7 + 25.0**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360

    d_lp = l2 - l1
    d_cp = c2p - c1p
    both_chromatic = (c1p * c2p) != 0
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(both_chromatic, dh, 0.0)
    d_hp = 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh / 2))

    l_mean = (l1 + l2) / 2
    cp_mean = (c1p + c2p) / 2
    h_sum = h1p + h2p
    h_mean = np.where(np.abs(h1p - h2p) <= 180, h_sum / 2,
                      np.where(h_sum < 360, (h_sum + 360) / 2, (h_sum - 360) / 2))
    h_mean = np.where(both_chromatic, h_mean, h_sum)

    t = (1 - 0.17 * np.cos(np.radians(h_mean - 30)) + 0.24 * np.cos(np.radians(2 * h_mean))
         + 0.32 * np.cos(np.radians(3 * h_mean + 6)) - 0.20 * np.cos(np.radians(4 * h_mean - 63)))
    d_theta = 30 * np.exp(-(((h_mean - 275) / 25) ** 2))
    r_c = 2 * np.sqrt(cp_mean**7 / (cp_mean**7 + 25.0**7))
    s_l = 1 + 0.015 * (l_mean - 50) ** 2 / np.sqrt(20 + (l_mean - 50) ** 2)
    s_c = 1 + 0.045 * cp_mean
    s_h = 1 + 0.015 * cp_mean * t
    r_t = -np.sin(np.radians(2 * d_theta)) * r_c

    tl = d_lp / (k_l * s_l)
    tc = d_cp / (k_c * s_c)
    th = d_hp / (k_h * s_h)
    return np.sqrt(tl**2 + tc**2 + th**2 + r_t * tc * th)


def delta_e_srgb(rgb1: np.ndarray, rgb2: np.ndarray) -> np.ndarray:
    """CIEDE2000 between two sRGB colour arrays (..., 3) in [0, 1] -> (...)."""
    return delta_e_2000(srgb_to_lab(rgb1), srgb_to_lab(rgb2))
