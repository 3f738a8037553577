"""sRGB -> Lab and CIEDE2000 against published values."""

from __future__ import annotations

import numpy as np
import pytest

from patchsim.printing.colour import delta_e_2000, delta_e_srgb, linear_to_srgb, srgb_to_lab, srgb_to_linear

# Sharma, Wu and Dalal (2005), Table 1: (Lab 1, Lab 2, Delta E 2000)
SHARMA_PAIRS = [
    ((50.0000, 2.6772, -79.7751), (50.0000, 0.0000, -82.7485), 2.0425),
    ((50.0000, -1.3802, -84.2814), (50.0000, 0.0000, -82.7485), 1.0000),
    ((50.0000, 0.0000, 0.0000), (50.0000, -1.0000, 2.0000), 2.3669),
    ((50.0000, 2.4900, -0.0010), (50.0000, -2.4900, 0.0009), 7.1792),
    ((50.0000, 2.5000, 0.0000), (73.0000, 25.0000, -18.0000), 27.1492),
    ((2.0776, 0.0795, -1.1350), (0.9033, -0.0636, -0.5514), 0.9082),
]


def test_identical_colours_have_zero_difference():
    rng = np.random.default_rng(0)
    lab = srgb_to_lab(rng.uniform(0, 1, (50, 3)))
    assert np.allclose(delta_e_2000(lab, lab), 0.0, atol=1e-9)


@pytest.mark.parametrize("lab1, lab2, expected", SHARMA_PAIRS)
def test_sharma_reference_pairs(lab1, lab2, expected):
    assert float(delta_e_2000(np.array(lab1), np.array(lab2))) == pytest.approx(expected, abs=1e-4)


def test_delta_e_is_symmetric_and_vectorised():
    a = np.array([p[0] for p in SHARMA_PAIRS])
    b = np.array([p[1] for p in SHARMA_PAIRS])
    assert np.allclose(delta_e_2000(a, b), delta_e_2000(b, a))
    assert np.allclose(delta_e_2000(a, b), [p[2] for p in SHARMA_PAIRS], atol=1e-4)


def test_srgb_lab_reference_points():
    assert np.allclose(srgb_to_lab(np.array([1.0, 1.0, 1.0])), [100, 0, 0], atol=1e-3)
    assert np.allclose(srgb_to_lab(np.array([0.0, 0.0, 0.0])), [0, 0, 0], atol=1e-6)
    assert np.allclose(srgb_to_lab(np.array([1.0, 0.0, 0.0])), [53.24, 80.09, 67.20], atol=0.02)
    x = np.linspace(0, 1, 101)
    assert np.allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-12)
    assert float(delta_e_srgb(np.array([0.5, 0.5, 0.5]), np.array([0.52, 0.5, 0.5]))) > 0.5
