"""Printer colour profiles: what a printed colour looks like to a camera, and the printable palette.

A profile maps the RGB value sent to the printer (sRGB in [0, 1]) to the RGB a camera records on
the print under neutral light, white-balanced on the paper: ``seen = clip(M @ rgb + offset)``
(``"affine"``), optionally followed by a per-channel tone curve. The palette lists colours the
printer reproduces reliably, as seen; the non-printability score (NPS) measures how far a patch's
colours are from it.

Profiles are JSON files in ``printables/profiles/``; ``patchsim calibrate`` makes them from a
photo of the printed chart, and ``default.json`` ships for users without a calibration.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from patchsim.config import read_json
from patchsim.errors import ConfigError

PROFILE_FORMAT = "patchsim-printer-profile/1"
PROFILES_DIR = Path("printables") / "profiles"


@dataclass
class PrinterProfile:
    """Attributes:
        matrix: (3, 3) and offset (3,): the affine colour model.
        tone: optional (3, K) per-channel output tone curves sampled on K even steps of [0, 1].
        palette: (P, 3) printable colours as the camera sees them.
        fit_mean_delta_e: CIEDE2000 mean error of the model on the calibration chart (None if not fitted).
    """

    name: str
    matrix: np.ndarray
    offset: np.ndarray
    palette: np.ndarray
    tone: np.ndarray | None = None
    fit_mean_delta_e: float | None = None
    meta: dict = field(default_factory=dict)

    # -------------------------------------------------------------- apply

    def apply_np(self, rgb: np.ndarray) -> np.ndarray:
        """(..., 3) printer input -> (..., 3) seen colour, numpy."""
        out = np.clip(rgb @ self.matrix.T + self.offset, 0, 1)
        if self.tone is not None:
            k = self.tone.shape[1]
            xs = np.linspace(0, 1, k)
            out = np.stack([np.interp(out[..., c], xs, self.tone[c]) for c in range(3)], -1)
        return out

    def apply(self, rgb: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) printer input -> seen colour, differentiable (torch)."""
        m = torch.as_tensor(self.matrix, dtype=rgb.dtype, device=rgb.device)
        b = torch.as_tensor(self.offset, dtype=rgb.dtype, device=rgb.device)
        out = torch.einsum("ij,bjhw->bihw", m, rgb) + b[None, :, None, None]
        out = out.clamp(0, 1)
        if self.tone is not None:
            tone = torch.as_tensor(self.tone, dtype=rgb.dtype, device=rgb.device)  # (3, K)
            k = tone.shape[1]
            pos = out * (k - 1)
            i0 = pos.floor().clamp(0, k - 2).long()
            frac = pos - i0
            gathered0 = torch.stack([tone[c][i0[:, c]] for c in range(3)], 1)
            gathered1 = torch.stack([tone[c][i0[:, c] + 1] for c in range(3)], 1)
            out = gathered0 * (1 - frac) + gathered1 * frac
        return out

    # -------------------------------------------------------------- io

    def to_json(self) -> dict:
        return {
            "format": PROFILE_FORMAT, "name": self.name,
            "model": {"type": "affine", "matrix": self.matrix.tolist(), "offset": self.offset.tolist(),
                      "tone": None if self.tone is None else self.tone.tolist()},
            "palette": self.palette.tolist(), "fit_mean_delta_e": self.fit_mean_delta_e, "meta": self.meta,
        }

    def save(self, path: str | Path) -> Path:
        from patchsim.runs import write_json

        return write_json(path, self.to_json())


def profile_from_json(data: dict, source: str = "<dict>") -> PrinterProfile:
    if data.get("format") != PROFILE_FORMAT:
        raise ConfigError(f"not a printer profile (format {data.get('format')!r})", source, "format")
    try:
        model = data["model"]
        matrix = np.asarray(model["matrix"], float)
        offset = np.asarray(model["offset"], float)
        palette = np.asarray(data["palette"], float)
        tone = None if model.get("tone") is None else np.asarray(model["tone"], float)
    except KeyError as exc:
        raise ConfigError("missing key", source, str(exc.args[0])) from exc
    if matrix.shape != (3, 3) or offset.shape != (3,):
        raise ConfigError("model.matrix must be 3x3 and model.offset 3 values", source, "model")
    if palette.ndim != 2 or palette.shape[1] != 3 or len(palette) == 0:
        raise ConfigError("palette must be a list of [r, g, b] colours", source, "palette")
    return PrinterProfile(data.get("name", Path(source).stem), matrix, offset, palette, tone,
                          data.get("fit_mean_delta_e"), data.get("meta", {}))


def load_profile(name_or_path: str | Path) -> PrinterProfile:
    """A profile by path, or by name from ``printables/profiles`` (``default`` ships with patchsim)."""
    p = Path(name_or_path)
    if not p.suffix:
        candidates = [PROFILES_DIR / f"{p}.json", Path(__file__).resolve().parent.parent / "assets" / "profiles"
                      / f"{p}.json"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None and str(name_or_path) == "default":
            return default_profile()  # the shipped model, also where printables/ is not at hand
        if found is None:
            raise ConfigError(f"no printer profile named {str(name_or_path)!r} in {PROFILES_DIR}/", str(name_or_path))
        p = found
    return profile_from_json(read_json(p, "printer profile"), str(p))


def default_profile() -> PrinterProfile:
    """A generic office-printer model: slightly compressed contrast and saturation, paper black at 6 %.

    Its palette is the model applied to a 3-level RGB grid plus greys (30 colours, as Thys et al.).
    """
    s = 0.86  # saturation kept
    contrast = 0.88
    matrix = contrast * (s * np.eye(3) + (1 - s) / 3 * np.ones((3, 3)))
    offset = np.full(3, 0.06)
    levels = np.array([0.0, 0.5, 1.0])
    grid = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(-1, 3)
    greys = np.array([[0.25] * 3, [0.75] * 3, [0.9] * 3])
    prof = PrinterProfile("default", matrix, offset, np.zeros((1, 3)))
    prof.palette = prof.apply_np(np.concatenate([grid, greys]))
    prof.meta = {"description": "generic model for users without a calibration; not fitted to a printer"}
    return prof


def non_printability(seen: torch.Tensor, palette: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean distance from each pixel's colour to the nearest palette colour (Sharif et al.; Thys et al.).

    The nearest colour is found without autograd (one small matrix product) and only the distance to
    it is differentiated: the value and gradient of a minimum over all colours, at a fraction of the
    cost. Pixels the mask leaves out are skipped.

    Args:
        seen: (3, H, W) colours as the camera would see them. palette: (P, 3). mask: (1, H, W) weights.
    """
    px = seen.reshape(3, -1).T  # (HW, 3)
    w = None
    if mask is not None:
        w = mask.reshape(-1).to(px)
        inside = (w > 0).nonzero().flatten()
        px, w = px[inside], w[inside]
    palette = palette.to(px)
    with torch.no_grad():
        # squared distances up to a per-pixel constant: |c|^2 - 2 p.c
        nearest = ((palette * palette).sum(1)[None] - 2 * px @ palette.T).argmin(1)
    d = torch.sqrt(((px - palette[nearest]) ** 2).sum(-1) + 1e-8)
    if w is None:
        return d.mean()
    return (d * w).sum() / (w.sum() + 1e-8)
