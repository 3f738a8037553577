"""Patch as a raster file (PNG or TIFF) with dpi metadata, for print shops and image editors."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from patchsim.errors import ConfigError
from patchsim.printing.outlines import printable_pixels
from patchsim.printing.source import MM_PER_INCH, PatchSource, load_source
from patchsim.runs import write_image

RASTER_SUFFIXES = (".png", ".tif", ".tiff")


def export_raster(source: str | Path | PatchSource, out_path: str | Path, dpi: float | None = None,
                  transparent: bool = True) -> Path:
    """Write the patch as PNG or TIFF (by suffix) whose dpi metadata gives its physical size.

    Args:
        source: a run directory, a ``patch.json`` path, or a loaded :class:`PatchSource`.
        out_path: ``.png``, ``.tif`` or ``.tiff``.
        dpi: resample to this resolution; default: the dpi the patch was made for (no resampling).
        transparent: make pixels outside the mask transparent (RGBA) when the mask does not cover
            the whole image; otherwise write RGB.

    Returns:
        the path written. Width in inches = pixels / dpi = the patch width in metres / 0.0254.
    """
    out = Path(out_path)
    if out.suffix.lower() not in RASTER_SUFFIXES:
        raise ConfigError(f"unsupported raster format {out.suffix!r}; use .png, .tif or .tiff", out)
    src = source if isinstance(source, PatchSource) else load_source(source)
    rgb = printable_pixels(src)
    mask = src.mask
    if dpi is not None and dpi <= 0:
        raise ConfigError(f"dpi must be > 0, not {dpi:g}", out)
    out_dpi = src.print_dpi if dpi is None else float(dpi)
    if dpi is not None and abs(dpi - src.print_dpi) > 1e-9:
        rgb, mask = _resample(rgb, mask, src, out_dpi)
    if transparent and (mask < 255).any():
        pixels = np.dstack([rgb, mask])
    else:
        pixels = rgb
    return write_image(out, np.ascontiguousarray(pixels), dpi=out_dpi)


def _resample(rgb: np.ndarray, mask: np.ndarray, src: PatchSource, dpi: float) -> tuple[np.ndarray, np.ndarray]:
    import cv2

    size = (max(1, round(src.width_mm / MM_PER_INCH * dpi)), max(1, round(src.height_mm / MM_PER_INCH * dpi)))
    shrinking = size[0] < rgb.shape[1]
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return cv2.resize(rgb, size, interpolation=interp), cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
