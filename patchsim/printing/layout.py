"""Page geometry: paper sizes, printable areas, tiling a large patch, packing stickers onto sheets.

Everything here is plain geometry in millimetres, with the origin at the top-left and y pointing
down, both on the page ("page mm") and on the patch ("patch mm"). Nothing is drawn here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from patchsim.errors import PatchsimError

#: Portrait paper sizes (width, height) in mm.
PAPER_SIZES_MM: dict[str, tuple[float, float]] = {
    "A4": (210.0, 297.0),
    "A3": (297.0, 420.0),
    "A2": (420.0, 594.0),
    "A1": (594.0, 841.0),
    "A0": (841.0, 1189.0),
    "Letter": (215.9, 279.4),
    "Legal": (215.9, 355.6),
    "Tabloid": (279.4, 431.8),
}
ORIENTATIONS = ("auto", "portrait", "landscape")
#: Height of the band at the bottom of each page's printable area for the label and the scale bar.
FOOTER_MM = 16.0
CUSTOM_MIN_MM, CUSTOM_MAX_MM = 50.0, 3300.0  # [mm] a custom paper side: a label sheet to the widest roll printer
MIN_CONTENT_MM = 30.0


class TilingError(PatchsimError, ValueError):
    """The patch cannot be laid out on the paper: too many tiles, a sticker too big, or bad page settings."""


@dataclass(frozen=True)
class Rect:
    """Axis-aligned rectangle in mm, top-left corner (x_mm, y_mm), y down."""

    x_mm: float
    y_mm: float
    w_mm: float
    h_mm: float

    @property
    def x1_mm(self) -> float:
        return self.x_mm + self.w_mm

    @property
    def y1_mm(self) -> float:
        return self.y_mm + self.h_mm

    def contains(self, x_mm: float, y_mm: float, tol_mm: float = 1e-6) -> bool:
        inside_x = self.x_mm - tol_mm <= x_mm <= self.x1_mm + tol_mm
        return inside_x and self.y_mm - tol_mm <= y_mm <= self.y1_mm + tol_mm


@dataclass(frozen=True)
class PageFrame:
    """One page's geometry: paper size, the content area (where the patch goes) and the footer band."""

    paper: str
    orientation: str  # "portrait" or "landscape"
    width_mm: float
    height_mm: float
    margin_mm: float
    content: Rect
    footer: Rect


def paper_size_mm(paper: str, custom_size_mm: tuple[float, float] | None = None) -> tuple[str, tuple[float, float]]:
    """(canonical name, portrait (width, height) mm) for a paper name (case-insensitive) or ``"custom"``."""
    if paper.lower() == "custom" or custom_size_mm is not None:
        if custom_size_mm is None or len(custom_size_mm) != 2 or min(custom_size_mm) <= 0:
            raise TilingError("custom paper needs custom_size_mm=(width, height), both > 0")
        w, h = float(custom_size_mm[0]), float(custom_size_mm[1])
        if min(w, h) < CUSTOM_MIN_MM or max(w, h) > CUSTOM_MAX_MM:
            raise TilingError(f"custom paper {w:g}x{h:g} mm: each side must be {CUSTOM_MIN_MM:g}-{CUSTOM_MAX_MM:g} mm "
                              f"(a label sheet up to the widest roll printer); is the size in mm?")
        return "custom", (min(w, h), max(w, h))
    for name, size in PAPER_SIZES_MM.items():
        if name.lower() == paper.lower():
            return name, size
    raise TilingError(f"unknown paper {paper!r}; use one of {', '.join(PAPER_SIZES_MM)} or custom")


def page_frame(paper: str = "A4", orientation: str = "portrait", margin_mm: float = 10.0,
               custom_size_mm: tuple[float, float] | None = None, footer_mm: float = FOOTER_MM) -> PageFrame:
    """The page geometry for a paper in a fixed orientation (``"portrait"`` or ``"landscape"``)."""
    name, (w, h) = paper_size_mm(paper, custom_size_mm)
    if orientation not in ("portrait", "landscape"):
        raise TilingError(f"orientation must be portrait or landscape here, not {orientation!r}")
    if orientation == "landscape":
        w, h = h, w
    if margin_mm < 0:
        raise TilingError(f"margin_mm must be >= 0, not {margin_mm}")
    content = Rect(margin_mm, margin_mm, w - 2 * margin_mm, h - 2 * margin_mm - footer_mm)
    if content.w_mm < MIN_CONTENT_MM or content.h_mm < MIN_CONTENT_MM:
        raise TilingError(f"{name} {w:g} x {h:g} mm with {margin_mm:g} mm margins leaves "
                          f"{content.w_mm:.0f} x {content.h_mm:.0f} mm to print on; need at least "
                          f"{MIN_CONTENT_MM:.0f} mm each way")
    footer = Rect(margin_mm, content.y1_mm, content.w_mm, footer_mm)
    return PageFrame(name, orientation, w, h, margin_mm, content, footer)


# ---------------------------------------------------------------------------------------------- tiling


@dataclass(frozen=True)
class Tile:
    """One tile: the region of the patch (patch mm) printed on one page, at the content area's top-left."""

    number: int  # 1-based, row-major
    row: int  # 0-based
    col: int  # 0-based
    region: Rect

    @property
    def label(self) -> str:
        return f"row {self.row + 1}, column {self.col + 1}"


@dataclass
class TileGrid:
    """A patch split into rows x cols equal tiles that overlap by ``overlap_mm``.

    Attributes:
        marks_mm: registration crosshair centres in patch mm, in the middle of the overlap strips near
            each tile corner; every tile whose region contains a mark prints it, so marks line up.
        mark_arm_mm: half-length of a crosshair arm (it stays inside the overlap strip).
    """

    width_mm: float
    height_mm: float
    rows: int
    cols: int
    overlap_mm: float
    tiles: list[Tile]
    marks_mm: list[tuple[float, float]] = field(default_factory=list)
    mark_arm_mm: float = 0.0

    @property
    def count(self) -> int:
        return self.rows * self.cols

    def tile(self, row: int, col: int) -> Tile:
        return self.tiles[row * self.cols + col]


def _split(length_mm: float, room_mm: float, overlap_mm: float) -> tuple[int, float]:
    """(pieces, piece length) covering ``length_mm`` with pieces <= ``room_mm`` that overlap by ``overlap_mm``."""
    if length_mm <= room_mm + 1e-6:
        return 1, length_mm
    n = math.ceil((length_mm - overlap_mm) / (room_mm - overlap_mm) - 1e-9)
    return n, (length_mm + (n - 1) * overlap_mm) / n


def plan_tiles(width_mm: float, height_mm: float, content: Rect, overlap_mm: float) -> TileGrid:
    """Split a width x height mm patch into equal tiles that fit ``content`` and overlap by ``overlap_mm``."""
    if overlap_mm < 0 or overlap_mm > min(content.w_mm, content.h_mm) / 2:
        raise TilingError(f"overlap_mm must be between 0 and half the printable area "
                          f"({min(content.w_mm, content.h_mm) / 2:.0f} mm), not {overlap_mm:g}")
    cols, tile_w = _split(width_mm, content.w_mm, overlap_mm)
    rows, tile_h = _split(height_mm, content.h_mm, overlap_mm)
    step_x, step_y = tile_w - overlap_mm, tile_h - overlap_mm
    tiles = [Tile(r * cols + c + 1, r, c, Rect(c * step_x, r * step_y, tile_w, tile_h))
             for r in range(rows) for c in range(cols)]
    grid = TileGrid(width_mm, height_mm, rows, cols, overlap_mm, tiles)
    if overlap_mm >= 2 and rows * cols > 1:
        grid.mark_arm_mm = min(4.0, overlap_mm / 2 - 0.5)
        grid.marks_mm = _registration_marks(grid, step_x, step_y, tile_w, tile_h)
    return grid


def _registration_marks(grid: TileGrid, step_x: float, step_y: float, tile_w: float,
                        tile_h: float) -> list[tuple[float, float]]:
    half = grid.overlap_mm / 2
    marks: set[tuple[float, float]] = set()
    for c in range(grid.cols - 1):  # vertical seams: marks near the top and bottom of every tile row
        x = (c + 1) * step_x + half
        for r in range(grid.rows):
            marks.update({(x, r * step_y + half), (x, r * step_y + tile_h - half)})
    for r in range(grid.rows - 1):  # horizontal seams
        y = (r + 1) * step_y + half
        for c in range(grid.cols):
            marks.update({(c * step_x + half, y), (c * step_x + tile_w - half, y)})
    return sorted((round(x, 6), round(y, 6)) for x, y in marks)


# ---------------------------------------------------------------------------------------------- stickers


@dataclass(frozen=True)
class StickerPlacement:
    """Where a sticker goes on a sticker sheet.

    Attributes:
        number: the sticker's number (1-based, as in the placement guide).
        page: 0-based sheet index.
        cut: the sticker's cut rectangle on the page (page mm).
    """

    number: int
    page: int
    cut: Rect


def pack_stickers(sizes_mm: list[tuple[float, float]], content: Rect, gap_mm: float,
                  label_mm: float) -> list[StickerPlacement]:
    """Shelf-pack stickers (in order) onto sheets, ``gap_mm`` apart, with ``label_mm`` under each for its number.

    Raises:
        TilingError: a sticker (plus its gap) is larger than the printable area.
    """
    out: list[StickerPlacement] = []
    page, x, y, shelf_h = 0, content.x_mm, content.y_mm, 0.0
    for i, (w, h) in enumerate(sizes_mm):
        box_w, box_h = w + gap_mm, h + gap_mm + label_mm
        if box_w > content.w_mm + 1e-6 or box_h > content.h_mm + 1e-6:
            raise TilingError(f"sticker {i + 1} ({w:.0f} x {h:.0f} mm) does not fit the printable area "
                              f"({content.w_mm:.0f} x {content.h_mm:.0f} mm); use larger paper or smaller margins")
        if x + box_w > content.x1_mm + 1e-6:  # next shelf
            x, y, shelf_h = content.x_mm, y + shelf_h, 0.0
        if y + box_h > content.y1_mm + 1e-6:  # next sheet
            page, x, y, shelf_h = page + 1, content.x_mm, content.y_mm, 0.0
        out.append(StickerPlacement(i + 1, page, Rect(x + gap_mm / 2, y + gap_mm / 2, w, h)))
        x += box_w
        shelf_h = max(shelf_h, box_h)
    return out


def crop_box_px(region: Rect, px_per_mm: tuple[float, float],
                shape_hw: tuple[int, int]) -> tuple[tuple[int, int, int, int], Rect]:
    """The whole pixels of an image covering ``region`` (patch mm).

    Returns:
        ((x0, y0, x1, y1) pixel box, clipped to the image, end exclusive; the box's extent in patch mm).
    """
    sx, sy = px_per_mm
    h, w = shape_hw
    x0 = max(0, math.floor(region.x_mm * sx + 1e-6))
    y0 = max(0, math.floor(region.y_mm * sy + 1e-6))
    x1 = min(w, math.ceil(region.x1_mm * sx - 1e-6))
    y1 = min(h, math.ceil(region.y1_mm * sy - 1e-6))
    return (x0, y0, x1, y1), Rect(x0 / sx, y0 / sy, (x1 - x0) / sx, (y1 - y0) / sy)


def nice_scale(length_mm: tuple[float, float], room_mm: tuple[float, float]) -> float:
    """The smallest "round" reduction N (1, 2, 2.5, 4, 5, 10, 20, 25, ...) so that length / N fits room (each way)."""
    need = max(length_mm[0] / room_mm[0], length_mm[1] / room_mm[1])
    decade = 1.0
    while True:
        for step in (1, 2, 2.5, 4, 5):
            if step * decade >= need - 1e-9:
                return step * decade
        decade *= 10
