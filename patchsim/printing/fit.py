"""Fit a printer colour model to chart measurements: affine (3x3 + offset), then optional tone curves.

The model is the one :class:`patchsim.eot.printer.PrinterProfile` applies:
``seen = tone(clip(M @ rgb + offset))``, all colours sRGB in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from patchsim.printing.colour import delta_e_srgb

TONE_KNOTS = 9


@dataclass
class ColourModel:
    """matrix (3, 3), offset (3,), tone (3, K) or None: see the module docstring."""

    matrix: np.ndarray
    offset: np.ndarray
    tone: np.ndarray | None = None

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """(..., 3) printer input -> (..., 3) seen colour (same maths as PrinterProfile.apply_np)."""
        out = np.clip(rgb @ self.matrix.T + self.offset, 0, 1)
        if self.tone is not None:
            xs = np.linspace(0, 1, self.tone.shape[1])
            out = np.stack([np.interp(out[..., c], xs, self.tone[c]) for c in range(3)], -1)
        return out


def fit_affine(rgb: np.ndarray, seen: np.ndarray, iterations: int = 4) -> ColourModel:
    """Least-squares ``seen ~ M @ rgb + offset``, reweighted to shrug off a few bad patches (glare, dust).

    Args:
        rgb: (N, 3) nominal printer input. seen: (N, 3) measured colours. Both in [0, 1].
    """
    x = np.concatenate([rgb, np.ones((len(rgb), 1))], 1)  # (N, 4)
    weights = np.ones(len(rgb))
    for _ in range(iterations):
        w = np.sqrt(weights)[:, None]
        sol, *_ = np.linalg.lstsq(x * w, seen * w, rcond=None)  # (4, 3)
        residual = np.linalg.norm(x @ sol - seen, axis=1)
        scale = 2.5 * max(np.median(residual), 1e-4)
        weights = np.minimum(1.0, scale / np.maximum(residual, 1e-12))  # Huber-like
    return ColourModel(sol[:3].T.copy(), sol[3].copy())


def fit_tone(model: ColourModel, rgb: np.ndarray, seen: np.ndarray, knots: int = TONE_KNOTS,
             smooth: float = 0.05) -> np.ndarray:
    """(3, knots) monotone per-channel curves mapping the affine output to ``seen``.

    Each curve is piecewise linear on ``knots`` even steps of [0, 1], fitted by least squares with a
    penalty ``smooth`` on its second differences and a pull towards the identity where data is sparse.
    """
    base = np.clip(rgb @ model.matrix.T + model.offset, 0, 1)
    xs = np.linspace(0, 1, knots)
    d2 = np.diff(np.eye(knots), 2, axis=0)
    tone = np.zeros((3, knots))
    for c in range(3):
        basis = _hat_basis(base[:, c], xs)  # (N, K)
        a = np.concatenate([basis, np.sqrt(smooth * len(rgb)) * d2, 0.05 * np.eye(knots)])
        b = np.concatenate([seen[:, c], np.zeros(len(d2)), 0.05 * xs])
        curve, *_ = np.linalg.lstsq(a, b, rcond=None)
        tone[c] = np.clip(np.maximum.accumulate(curve), 0, 1)
    return tone


def _hat_basis(values: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """(N, K) linear-interpolation weights of ``values`` on knots ``xs``."""
    step = xs[1] - xs[0]
    return np.maximum(0.0, 1 - np.abs(values[:, None] - xs[None, :]) / step)


def mean_delta_e(model: ColourModel, rgb: np.ndarray, seen: np.ndarray) -> float:
    """Mean CIEDE2000 between the model's prediction and the measurement."""
    return float(delta_e_srgb(model.apply(rgb), seen).mean())


def fit_model(rgb: np.ndarray, seen: np.ndarray, try_tone: bool = True) -> tuple[ColourModel, dict]:
    """Affine fit, plus tone curves when they lower the held-out error (two-fold cross-validation).

    Returns:
        (model, info) with info: ``affine_delta_e``, ``tone_cv_delta_e`` and ``affine_cv_delta_e``
        (None when not tried), ``tone_used``.
    """
    affine = fit_affine(rgb, seen)
    info = {"affine_delta_e": mean_delta_e(affine, rgb, seen), "affine_cv_delta_e": None, "tone_cv_delta_e": None,
            "tone_used": False}
    if not try_tone or len(rgb) < 40:
        return affine, info
    folds = np.arange(len(rgb)) % 2
    cv_affine, cv_tone = [], []
    for k in (0, 1):
        train, test = folds != k, folds == k
        a = fit_affine(rgb[train], seen[train])
        t = ColourModel(a.matrix, a.offset, fit_tone(a, rgb[train], seen[train]))
        cv_affine.append(mean_delta_e(a, rgb[test], seen[test]))
        cv_tone.append(mean_delta_e(t, rgb[test], seen[test]))
    info["affine_cv_delta_e"], info["tone_cv_delta_e"] = float(np.mean(cv_affine)), float(np.mean(cv_tone))
    if info["tone_cv_delta_e"] < 0.9 * info["affine_cv_delta_e"]:
        info["tone_used"] = True
        return ColourModel(affine.matrix, affine.offset, fit_tone(affine, rgb, seen)), info
    return affine, info


def palette_inputs() -> np.ndarray:
    """(30, 3) printer inputs whose printed colours form a profile's palette: a 3-level RGB grid plus greys.

    The same set :func:`patchsim.eot.printer.default_profile` uses.
    """
    levels = np.array([0.0, 0.5, 1.0])
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    greys = np.array([[0.25] * 3, [0.75] * 3, [0.9] * 3])
    return np.concatenate([grid, greys])
