"""A thin millimetre-based wrapper around a reportlab canvas (origin top-left, y down).

reportlab works in points with the origin at the bottom-left; every drawing call here takes page mm
and converts, so the drawing code reads in the same units as the layout.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import numpy as np

from patchsim.printing.layout import Rect

MM_TO_PT = 72.0 / 25.4
CUT_COLOUR = (0.85, 0.0, 0.55)  # magenta: visible on most patch colours
GUIDE_COLOUR = (0.1, 0.3, 0.75)
GREY = (0.45, 0.45, 0.45)
FONT = "Helvetica"
FONT_BOLD = "Helvetica-Bold"


@contextlib.contextmanager
def binary_streams() -> Iterator[None]:
    """Write PDF streams Flate-compressed without ASCII85 (smaller files; much faster without reportlab's
    C accelerator). Wrap everything from creating the canvas to ``save()``."""
    from reportlab import rl_config

    before = rl_config.useA85
    rl_config.useA85 = 0
    try:
        yield
    finally:
        rl_config.useA85 = before


class PageCanvas:
    """Draw on one page of a reportlab canvas in page mm.

    Args:
        canvas: a ``reportlab.pdfgen.canvas.Canvas``.
        height_mm: the page height, to flip y.
    """

    def __init__(self, canvas, height_mm: float):
        self.c = canvas
        self.height_mm = height_mm

    def pt(self, x_mm: float, y_mm: float) -> tuple[float, float]:
        """Page mm (top-left origin) -> PDF points (bottom-left origin)."""
        return x_mm * MM_TO_PT, (self.height_mm - y_mm) * MM_TO_PT

    # ----------------------------------------------------------------- state

    @contextlib.contextmanager
    def clipped(self, rect: Rect) -> Iterator[None]:
        """Clip drawing inside ``rect`` for the duration of the block."""
        self.c.saveState()
        path = self.c.beginPath()
        x, y = self.pt(rect.x_mm, rect.y1_mm)
        path.rect(x, y, rect.w_mm * MM_TO_PT, rect.h_mm * MM_TO_PT)
        self.c.clipPath(path, stroke=0, fill=0)
        try:
            yield
        finally:
            self.c.restoreState()

    def _stroke(self, colour: Sequence[float], width_pt: float, dash: Sequence[float] | None) -> None:
        self.c.setStrokeColorRGB(*colour)
        self.c.setLineWidth(width_pt)
        self.c.setDash(list(dash) if dash else [])

    # ----------------------------------------------------------------- shapes

    def image(self, rgb: np.ndarray, rect: Rect) -> None:
        """Place an (H, W, 3) uint8 image so that it exactly covers ``rect`` (stored lossless, Flate)."""
        from PIL import Image
        from reportlab.lib.utils import ImageReader

        img = Image.fromarray(np.ascontiguousarray(rgb))
        x, y = self.pt(rect.x_mm, rect.y1_mm)
        self.c.drawImage(ImageReader(img), x, y, rect.w_mm * MM_TO_PT, rect.h_mm * MM_TO_PT)

    def line(self, x0_mm: float, y0_mm: float, x1_mm: float, y1_mm: float, colour: Sequence[float] = (0, 0, 0),
             width_pt: float = 0.5, dash: Sequence[float] | None = None) -> None:
        self._stroke(colour, width_pt, dash)
        self.c.line(*self.pt(x0_mm, y0_mm), *self.pt(x1_mm, y1_mm))

    def rect(self, rect: Rect, stroke: Sequence[float] | None = (0, 0, 0), fill: Sequence[float] | None = None,
             width_pt: float = 0.5, dash: Sequence[float] | None = None) -> None:
        if stroke is not None:
            self._stroke(stroke, width_pt, dash)
        if fill is not None:
            self.c.setFillColorRGB(*fill)
        x, y = self.pt(rect.x_mm, rect.y1_mm)
        self.c.rect(x, y, rect.w_mm * MM_TO_PT, rect.h_mm * MM_TO_PT, stroke=int(stroke is not None),
                    fill=int(fill is not None))

    def polygon(self, points_mm: np.ndarray, stroke: Sequence[float] | None = (0, 0, 0),
                fill: Sequence[float] | None = None, width_pt: float = 0.5,
                dash: Sequence[float] | None = None) -> None:
        """A closed polygon through (K, 2) page-mm points."""
        if stroke is not None:
            self._stroke(stroke, width_pt, dash)
        if fill is not None:
            self.c.setFillColorRGB(*fill)
        path = self.c.beginPath()
        path.moveTo(*self.pt(*points_mm[0]))
        for x, y in points_mm[1:]:
            path.lineTo(*self.pt(x, y))
        path.close()
        self.c.drawPath(path, stroke=int(stroke is not None), fill=int(fill is not None))

    def cut_line(self, points_mm: np.ndarray) -> None:
        """A closed cut outline: a thin magenta line over a white halo, readable on any background."""
        self.polygon(points_mm, stroke=(1, 1, 1), width_pt=1.6)
        self.polygon(points_mm, stroke=CUT_COLOUR, width_pt=0.6)

    def crosshair(self, x_mm: float, y_mm: float, arm_mm: float) -> None:
        """A registration crosshair with a circle, black over a white halo."""
        x, y = self.pt(x_mm, y_mm)
        arm = arm_mm * MM_TO_PT
        path = self.c.beginPath()
        path.moveTo(x - arm, y)
        path.lineTo(x + arm, y)
        path.moveTo(x, y - arm)
        path.lineTo(x, y + arm)
        path.circle(x, y, arm * 0.5)
        for colour, width in (((1, 1, 1), 1.4), ((0, 0, 0), 0.4)):
            self._stroke(colour, width, None)
            self.c.drawPath(path, stroke=1, fill=0)

    def text(self, x_mm: float, y_mm: float, text: str, size_pt: float = 7.0, anchor: str = "left",
             colour: Sequence[float] = (0, 0, 0), bold: bool = False) -> None:
        """Text with its baseline at ``y_mm``; anchor ``"left"``, ``"centre"`` or ``"right"`` at ``x_mm``."""
        self.c.setFillColorRGB(*colour)
        self.c.setFont(FONT_BOLD if bold else FONT, size_pt)
        x, y = self.pt(x_mm, y_mm)
        if anchor == "centre":
            self.c.drawCentredString(x, y, text)
        elif anchor == "right":
            self.c.drawRightString(x, y, text)
        else:
            self.c.drawString(x, y, text)

    def text_down(self, x_mm: float, y_mm: float, text: str, size_pt: float = 7.0,
                  colour: Sequence[float] = (0, 0, 0)) -> None:
        """Text starting at (x, y) and running down the page (for a left margin)."""
        self._rotated(x_mm, y_mm, -90, text, size_pt, colour)

    def text_up(self, x_mm: float, y_mm: float, text: str, size_pt: float = 7.0,
                colour: Sequence[float] = (0, 0, 0)) -> None:
        """Text starting at (x, y) and running up the page (for a right margin)."""
        self._rotated(x_mm, y_mm, 90, text, size_pt, colour)

    def _rotated(self, x_mm: float, y_mm: float, angle_deg: float, text: str, size_pt: float,
                 colour: Sequence[float]) -> None:
        self.c.saveState()
        self.c.translate(*self.pt(x_mm, y_mm))
        self.c.rotate(angle_deg)
        self.c.setFillColorRGB(*colour)
        self.c.setFont(FONT, size_pt)
        self.c.drawString(0, 0, text)
        self.c.restoreState()

    def text_width_mm(self, text: str, size_pt: float, bold: bool = False) -> float:
        from reportlab.pdfbase.pdfmetrics import stringWidth

        return stringWidth(text, FONT_BOLD if bold else FONT, size_pt) / MM_TO_PT

    def label_box(self, x_mm: float, y_mm: float, text: str, size_pt: float = 8.0) -> None:
        """Centred text on a white box (for numbers drawn over images)."""
        w = self.text_width_mm(text, size_pt, bold=True) + 1.6
        h = size_pt * 0.3528 + 1.4
        self.rect(Rect(x_mm - w / 2, y_mm - h / 2, w, h), stroke=(0, 0, 0), fill=(1, 1, 1), width_pt=0.3)
        self.text(x_mm, y_mm + size_pt * 0.3528 * 0.36, text, size_pt, "centre", bold=True)

    def scale_bar(self, x_mm: float, y_mm: float, length_mm: float = 100.0) -> None:
        """A ``length_mm`` bar (top-left at x, y), black and white 10 mm segments, ticks every 10 mm."""
        height = 1.6
        for i in range(int(round(length_mm / 10))):
            fill = (0, 0, 0) if i % 2 == 0 else (1, 1, 1)
            self.rect(Rect(x_mm + 10 * i, y_mm, 10, height), stroke=None, fill=fill)
        self.rect(Rect(x_mm, y_mm, length_mm, height), stroke=(0, 0, 0), width_pt=0.3)
        for i in range(int(round(length_mm / 10)) + 1):
            tick = 1.4 if i % 5 == 0 else 0.7
            self.line(x_mm + 10 * i, y_mm + height, x_mm + 10 * i, y_mm + height + tick, width_pt=0.3)
        self.text(x_mm, y_mm + height + 3.6, "0", 5.5, "centre")
        self.text(x_mm + length_mm, y_mm + height + 3.6, f"{length_mm:.0f} mm", 5.5, "centre")
        self.text(x_mm + length_mm + 4, y_mm + height, f"<- this bar must measure {length_mm:.0f} mm; "
                  "if not, print at 100 % / actual size", 6.0)
