"""Cut outlines as SVG in millimetres, for cutting plotters and vector editors.

The drawing is the slot at true size (viewBox in mm, origin at the slot's top-left, y down): one
``<path>`` per cut outline (one per sticker), plus the slot outline as a grey ``<polygon>`` for reference.
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from patchsim.printing.outlines import cut_outlines_mm, slot_outline_mm
from patchsim.printing.source import PatchSource, load_source
from patchsim.runs import write_text


def export_cut_svg(source: str | Path | PatchSource, out_svg: str | Path) -> Path:
    """Write the patch's cut outlines as an SVG in mm (``width="...mm"``, viewBox in mm).

    Returns:
        the path written.
    """
    src = source if isinstance(source, PatchSource) else load_source(source)
    return write_text(out_svg, cut_svg(src))


def _points(poly_mm: np.ndarray) -> str:
    return " ".join(f"{x:.3f},{y:.3f}" for x, y in poly_mm)


def cut_svg(src: PatchSource) -> str:
    """The SVG document text for :func:`export_cut_svg`."""
    w, h = src.width_mm, src.height_mm
    paths = []
    names = ([f"sticker-{s.number}" for s in src.stickers] if src.mask_kind == "stickers"
             else [f"cut-{i + 1}" for i in range(len(cut_outlines_mm(src)))])
    for name, poly in zip(names, cut_outlines_mm(src)):
        d = "M " + " L ".join(f"{x:.3f} {y:.3f}" for x, y in poly) + " Z"
        paths.append(f'    <path id="{name}" d="{d}"/>')
    labels = [f'    <text x="{s.x_mm + 2:.3f}" y="{s.y_mm + 8:.3f}">{s.number}</text>' for s in src.stickers]
    title = escape(f"patchsim cut outlines: {src.patch_id}, {src.size_label}")
    return "\n".join([
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w:.3f}mm" height="{h:.3f}mm" viewBox="0 0 {w:.3f} {h:.3f}">',
        f"  <title>{title}</title>",
        f'  <polygon id="slot-outline" points="{_points(slot_outline_mm(src))}" fill="none" stroke="#999999" '
        'stroke-width="0.3" stroke-dasharray="2 2"/>',
        f'  <g id="cut" fill="none" stroke="#ff0000" stroke-width="0.2" data-patch-id={quoteattr(src.patch_id)}>',
        *paths,
        "  </g>",
        '  <g id="numbers" font-family="Helvetica, Arial, sans-serif" font-size="6" fill="#ff0000">',
        *labels,
        "  </g>",
        "</svg>",
        "",
    ])
