"""Print-ready PDF of a patch at true physical size: single page, tiles with an assembly page, or sticker sheets.

The patch image is placed so that 1 m of patch is exactly 1 m of paper (1 mm = 72 / 25.4 pt), with the
pixels the patch was made for (no resampling; the PDF stores them losslessly). Every page carries a
label (patch id, page, tile row and column, physical size) and a 100 mm scale bar, so a page printed
at the wrong scale is caught before it is glued on a sign.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from patchsim.printing.canvas import CUT_COLOUR, GREY, GUIDE_COLOUR, MM_TO_PT, PageCanvas, binary_streams
from patchsim.printing.layout import (
    ORIENTATIONS,
    PageFrame,
    Rect,
    StickerPlacement,
    Tile,
    TileGrid,
    TilingError,
    crop_box_px,
    nice_scale,
    pack_stickers,
    page_frame,
    plan_tiles,
)
from patchsim.printing.outlines import cut_outlines_mm, printable_pixels, slot_outline_mm
from patchsim.printing.source import PatchSource, load_source
from patchsim.runs import atomic_path

DEFAULT_OUT_DIR = Path("printables")
STICKER_GAP_MM = 8.0  # between sticker cut lines on a sheet (room for the bleed and the number)
STICKER_LABEL_MM = 4.0


@dataclass(frozen=True)
class PlacedImage:
    """Pixels ``box_px`` = (x0, y0, x1, y1) of patch.png (end exclusive) drawn to cover ``page_rect`` (page mm)."""

    box_px: tuple[int, int, int, int]
    page_rect: Rect


@dataclass
class PageRecord:
    """What one page of the PDF holds.

    Attributes:
        kind: ``"tile"`` (a piece of the patch, or all of it), ``"assembly"``, ``"stickers"`` or ``"guide"``.
        images: the patch pixels on the page, and where.
        tile: for ``"tile"`` pages, the tile; its region's top-left is at the frame's content top-left.
        cuts_mm: cut outlines drawn on the page (page mm), each (K, 2).
    """

    kind: str
    images: list[PlacedImage] = field(default_factory=list)
    tile: Tile | None = None
    cuts_mm: list[np.ndarray] = field(default_factory=list)


@dataclass
class PrintJob:
    """The PDF written and its layout, for summaries and checks.

    Attributes:
        path: the PDF. frame: page geometry (paper, orientation, content area).
        grid: the tiling (None for sticker sheets). stickers: where each sticker is on the sheets.
        bleed_mm: patch pixels printed beyond each sticker's cut line.
    """

    path: Path
    patch_id: str
    frame: PageFrame
    pages: list[PageRecord]
    grid: TileGrid | None = None
    stickers: list[StickerPlacement] = field(default_factory=list)
    bleed_mm: float = 0.0

    @property
    def tile_pages(self) -> list[PageRecord]:
        return [p for p in self.pages if p.kind == "tile"]

    def summary(self) -> str:
        """One line for the command line, e.g. ``"printables/x.pdf: 12 pages, A4 portrait, 3 x 4 tiles"``."""
        what = (f"{self.grid.rows} x {self.grid.cols} tiles" if self.grid and self.grid.count > 1
                else f"{len(self.stickers)} stickers" if self.stickers else "1 tile")
        return (f"{self.path}: {len(self.pages)} page(s), {self.frame.paper} {self.frame.orientation}, {what}")


def export_pdf(source: str | Path | PatchSource, out_pdf: str | Path | None = None, paper: str = "A4",
               orientation: str = "auto", margin_mm: float = 10.0, overlap_mm: float = 10.0,
               custom_size_mm: tuple[float, float] | None = None, max_tiles: int = 64,
               bleed_mm: float = 2.0) -> PrintJob:
    """Write a print-ready PDF of a patch at its physical size.

    Args:
        source: a run directory, a ``patch.json`` path, or a loaded :class:`PatchSource`.
        out_pdf: the PDF to write; default ``printables/<patch_id>.pdf``.
        paper: ``A4``, ``A3``, ``A2``, ``A1``, ``A0``, ``Letter``, ``Legal``, ``Tabloid`` or ``custom``.
        orientation: ``portrait``, ``landscape`` or ``auto`` (the one needing fewer pages; portrait on a tie).
        margin_mm: unprinted border on every side (most printers need >= 5 mm).
        overlap_mm: how much neighbouring tiles overlap, for gluing and registration.
        custom_size_mm: (width, height) for ``paper="custom"``.
        max_tiles: refuse (before writing anything) a tiling with more tiles than this.
        bleed_mm: extra patch pixels printed around each sticker's cut line.

    Returns:
        the :class:`PrintJob`: the path and every page's layout.

    Raises:
        TilingError: the patch needs more than ``max_tiles`` tiles, a sticker does not fit the paper, or the
            page settings leave no room. No file is written.
        ConfigError, ShapeError: the patch files are missing or invalid (the message names the file).
    """
    src = source if isinstance(source, PatchSource) else load_source(source)
    out = Path(out_pdf) if out_pdf is not None else DEFAULT_OUT_DIR / f"{_safe_name(src.patch_id)}.pdf"
    if orientation not in ORIENTATIONS:
        raise TilingError(f"orientation must be one of {', '.join(ORIENTATIONS)}, not {orientation!r}")
    if src.mask_kind == "stickers":
        if bleed_mm < 0:
            raise TilingError(f"bleed_mm must be >= 0, not {bleed_mm:g}")
        frame, placements = _plan_sticker_sheets(src, paper, orientation, margin_mm, custom_size_mm,
                                                 gap_mm=max(STICKER_GAP_MM, 2 * bleed_mm + 4))
        job = PrintJob(out, src.patch_id, frame, [], stickers=placements, bleed_mm=bleed_mm)
        draw = _draw_sticker_job
    else:
        frame, grid = _plan_tiling(src, paper, orientation, margin_mm, overlap_mm, custom_size_mm, max_tiles)
        job = PrintJob(out, src.patch_id, frame, [], grid=grid)
        draw = _draw_tile_job
    from reportlab.pdfgen.canvas import Canvas

    with atomic_path(out) as tmp, binary_streams():
        canvas = Canvas(str(tmp), pagesize=(frame.width_mm * MM_TO_PT, frame.height_mm * MM_TO_PT),
                        pageCompression=1)
        canvas.setTitle(f"patchsim print: {src.patch_id}")
        canvas.setAuthor("patchsim")
        canvas.setCreator("patchsim")
        draw(canvas, src, job)
        canvas.save()
    return job


def _safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text) or "patch"


# ----------------------------------------------------------------------------------------------- planning


def _orientations(orientation: str) -> tuple[str, ...]:
    return ("portrait", "landscape") if orientation == "auto" else (orientation,)


def _plan_tiling(src: PatchSource, paper: str, orientation: str, margin_mm: float, overlap_mm: float,
                 custom_size_mm, max_tiles: int) -> tuple[PageFrame, TileGrid]:
    options = []
    for orient in _orientations(orientation):
        frame = page_frame(paper, orient, margin_mm, custom_size_mm)
        options.append((frame, plan_tiles(src.width_mm, src.height_mm, frame.content, overlap_mm)))
    frame, grid = min(options, key=lambda fg: fg[1].count)  # min keeps the first (portrait) on a tie
    if grid.count > max_tiles:
        tried = ", ".join(f"{g.count} ({g.rows} x {g.cols}) in {f.orientation}" for f, g in options)
        raise TilingError(f"{src.json_path}: the {src.size_label} patch needs {tried} tiles on {frame.paper} with "
                          f"{margin_mm:g} mm margins and {overlap_mm:g} mm overlap, more than max_tiles={max_tiles}; "
                          f"use larger paper or raise max_tiles")
    return frame, grid


def _plan_sticker_sheets(src: PatchSource, paper: str, orientation: str, margin_mm: float,
                         custom_size_mm, gap_mm: float) -> tuple[PageFrame, list[StickerPlacement]]:
    sizes = [(s.w_mm, s.h_mm) for s in src.stickers]
    options = []
    errors = []
    for orient in _orientations(orientation):
        frame = page_frame(paper, orient, margin_mm, custom_size_mm)
        try:
            options.append((frame, pack_stickers(sizes, frame.content, gap_mm, STICKER_LABEL_MM)))
        except TilingError as exc:
            errors.append(exc)
    if not options:
        raise TilingError(f"{src.json_path}: {errors[0]}")
    return min(options, key=lambda fp: fp[1][-1].page)


# ----------------------------------------------------------------------------------------------- common


def _footer(pc: PageCanvas, frame: PageFrame, lines: list[str]) -> None:
    """Label lines and the scale bar in the footer band."""
    f = frame.footer
    for i, line in enumerate(lines):
        pc.text(f.x_mm, f.y_mm + 3.5 + 3.0 * i, line, 6.5, bold=i == 0)
    bar_mm = min(100.0, 10.0 * int((f.w_mm - 10) // 10))
    pc.scale_bar(f.x_mm, f.y1_mm - 4.5, bar_mm)


def _label(src: PatchSource, page_no: int, n_pages: int, what: str) -> list[str]:
    return [f"{src.patch_id}  |  page {page_no} of {n_pages}  |  {what}",
            f"patch {src.size_label} ({src.slot_kind}{', ' + src.sign_kind if src.sign_kind else ''}, "
            f"{src.mask_kind}) at {src.print_dpi:g} dpi. Print at 100 % / actual size, no colour management."]


def _patch_to_page(points_mm: np.ndarray, origin_mm: tuple[float, float], scale: float = 1.0) -> np.ndarray:
    """Patch mm -> page mm: page = origin + points / scale (scale = the drawing's reduction, 1 = true size)."""
    return np.asarray(origin_mm, float) + np.asarray(points_mm, float) / scale


def _draw_drawing_image(pc: PageCanvas, rgb: np.ndarray, rect: Rect, px_per_mm: float = 4.0) -> None:
    """A reduced copy of an image for a to-scale drawing, at most ``px_per_mm`` page pixels per mm."""
    import cv2

    h, w = rgb.shape[:2]
    tw, th = max(1, int(rect.w_mm * px_per_mm)), max(1, int(rect.h_mm * px_per_mm))
    if tw < w or th < h:
        rgb = cv2.resize(rgb, (min(tw, w), min(th, h)), interpolation=cv2.INTER_AREA)
    pc.image(rgb, rect)


# ----------------------------------------------------------------------------------------------- tiles


def _draw_tile_job(canvas, src: PatchSource, job: PrintJob) -> None:
    grid, frame = job.grid, job.frame
    assert grid is not None
    pixels = printable_pixels(src)
    cuts = cut_outlines_mm(src)
    n_pages = grid.count + (1 if grid.count > 1 else 0)
    page_no = 1
    if grid.count > 1:
        pc = PageCanvas(canvas, frame.height_mm)
        _draw_assembly(pc, src, pixels, grid, frame, cuts)
        _footer(pc, frame, _label(src, page_no, n_pages, f"assembly: {grid.rows} x {grid.cols} tiles"))
        job.pages.append(PageRecord("assembly"))
        canvas.showPage()
        page_no += 1
    for tile in grid.tiles:
        pc = PageCanvas(canvas, frame.height_mm)
        record = _draw_tile(pc, src, pixels, grid, tile, frame, cuts)
        r = tile.region
        what = (f"tile {tile.number} of {grid.count} ({tile.label}), covers x {r.x_mm:.0f}-{r.x1_mm:.0f} mm, "
                f"y {r.y_mm:.0f}-{r.y1_mm:.0f} mm" if grid.count > 1 else "single page")
        _footer(pc, frame, _label(src, page_no, n_pages, what))
        job.pages.append(record)
        canvas.showPage()
        page_no += 1


def _draw_tile(pc: PageCanvas, src: PatchSource, pixels: np.ndarray, grid: TileGrid, tile: Tile,
               frame: PageFrame, cuts: list[np.ndarray]) -> PageRecord:
    """One tile at true size: its pixels, the cut outlines, seam cut lines and registration marks."""
    region, content = tile.region, frame.content
    origin = (content.x_mm - region.x_mm, content.y_mm - region.y_mm)  # patch mm -> page mm offset
    box, box_mm = crop_box_px(region, src.px_per_mm, pixels.shape[:2])
    x0, y0, x1, y1 = box
    placed = PlacedImage(box, Rect(box_mm.x_mm + origin[0], box_mm.y_mm + origin[1], box_mm.w_mm, box_mm.h_mm))
    on_page = Rect(content.x_mm, content.y_mm, region.w_mm, region.h_mm)
    page_cuts = [_patch_to_page(c, origin) for c in cuts]
    with pc.clipped(on_page):
        pc.image(pixels[y0:y1, x0:x1], placed.page_rect)
        for cut in page_cuts:
            pc.cut_line(cut)
        for mx, my in grid.marks_mm:
            if region.contains(mx, my):
                pc.crosshair(mx + origin[0], my + origin[1], grid.mark_arm_mm)
    if grid.count > 1:
        _draw_seams(pc, grid, tile, on_page)
    return PageRecord("tile", [placed], tile, page_cuts)


def _draw_seams(pc: PageCanvas, grid: TileGrid, tile: Tile, on_page: Rect) -> None:
    """Dashed cut lines through the crosshairs on the left and top seams, and where the right and lower
    neighbours' cut edges land; the notes sit in the margins, clear of the image and the footer."""
    half = grid.overlap_mm / 2
    dash = (3, 2)
    size = 5.5
    if tile.col > 0:
        x = on_page.x_mm + half
        pc.line(x, on_page.y_mm - 3, x, on_page.y1_mm, GUIDE_COLOUR, 0.5, dash)
        pc.text(x + 1, on_page.y_mm - 1.5, f"cut here, lay over tile {tile.number - 1}", size, colour=GUIDE_COLOUR)
    if tile.row > 0:
        y = on_page.y_mm + half
        pc.line(on_page.x_mm - 3, y, on_page.x1_mm, y, GUIDE_COLOUR, 0.5, dash)
        pc.text_down(on_page.x_mm - 1.5, y + 1, f"cut here, lay over tile {tile.number - grid.cols}", size,
                     GUIDE_COLOUR)
    if tile.col < grid.cols - 1:
        x = on_page.x1_mm - half
        pc.line(x, on_page.y_mm - 3, x, on_page.y_mm - 0.5, GUIDE_COLOUR, 0.5)
        pc.text(x - 1, on_page.y_mm - 1.5, f"edge of tile {tile.number + 1}", size, "right", GUIDE_COLOUR)
    if tile.row < grid.rows - 1:
        y = on_page.y1_mm - half
        pc.line(on_page.x1_mm + 0.5, y, on_page.x1_mm + 3, y, GUIDE_COLOUR, 0.5)
        pc.text_up(on_page.x1_mm + 3.5, y - 1, f"edge of tile {tile.number + grid.cols}", size, GUIDE_COLOUR)


def _draw_assembly(pc: PageCanvas, src: PatchSource, pixels: np.ndarray, grid: TileGrid, frame: PageFrame,
                   cuts: list[np.ndarray]) -> None:
    """To-scale drawing of the tile grid over a reduced patch, with tile numbers and instructions."""
    c = frame.content
    header_mm, notes_mm = 12.0, 22.0
    room = Rect(c.x_mm, c.y_mm + header_mm, c.w_mm, c.h_mm - header_mm - notes_mm)
    scale = nice_scale((src.width_mm, src.height_mm), (room.w_mm, room.h_mm))
    draw_w, draw_h = src.width_mm / scale, src.height_mm / scale
    origin = (room.x_mm + (room.w_mm - draw_w) / 2, room.y_mm)
    pc.text(c.x_mm, c.y_mm + 4, f"Assembly of {src.patch_id}", 11, bold=True)
    pc.text(c.x_mm, c.y_mm + 9, f"{grid.rows} rows x {grid.cols} columns = {grid.count} tiles on {frame.paper} "
            f"{frame.orientation}; each tile {grid.tiles[0].region.w_mm:.0f} x {grid.tiles[0].region.h_mm:.0f} mm, "
            f"overlap {grid.overlap_mm:g} mm; drawing at 1:{scale:g}", 7.5)
    _draw_drawing_image(pc, pixels, Rect(origin[0], origin[1], draw_w, draw_h))
    for cut in cuts:
        pc.cut_line(_patch_to_page(cut, origin, scale))
    for tile in grid.tiles:
        r = tile.region
        pc.rect(Rect(origin[0] + r.x_mm / scale, origin[1] + r.y_mm / scale, r.w_mm / scale, r.h_mm / scale),
                stroke=GUIDE_COLOUR, width_pt=0.6)
    for tile in grid.tiles:
        r = tile.region
        cx, cy = origin[0] + (r.x_mm + r.w_mm / 2) / scale, origin[1] + (r.y_mm + r.h_mm / 2) / scale
        pc.label_box(cx, cy, str(tile.number), 7 if grid.count > 30 else 9)
    notes = [
        "1. Print every page at 100 % (actual size). Each page's bar must measure 100 mm.",
        "2. Trim each tile along its dashed blue lines (left and top edges, through the crosshairs).",
        "3. Lay the tiles in number order, row by row, each over its left and upper neighbours so the",
        "    half crosshairs complete each other; tape or glue. 4. Cut the whole along the magenta outline.",
    ]
    y = room.y_mm + draw_h + 5
    for line in notes:
        pc.text(c.x_mm, y, line, 7)
        y += 3.6


# ----------------------------------------------------------------------------------------------- stickers


def _draw_sticker_job(canvas, src: PatchSource, job: PrintJob) -> None:
    frame = job.frame
    n_sheets = job.stickers[-1].page + 1
    n_pages = n_sheets + 1
    pc = PageCanvas(canvas, frame.height_mm)
    _draw_placement_guide(pc, src, frame)
    _footer(pc, frame, _label(src, 1, n_pages, f"placement guide for {len(src.stickers)} stickers"))
    job.pages.append(PageRecord("guide"))
    canvas.showPage()
    for sheet in range(n_sheets):
        pc = PageCanvas(canvas, frame.height_mm)
        on_sheet = [p for p in job.stickers if p.page == sheet]
        record = PageRecord("stickers")
        for placement in on_sheet:
            _draw_sticker(pc, src, placement, job.bleed_mm, record)
        numbers = ", ".join(str(p.number) for p in on_sheet)
        _footer(pc, frame, _label(src, sheet + 2, n_pages, f"sticker sheet {sheet + 1} of {n_sheets}: "
                                                         f"stickers {numbers}"))
        job.pages.append(record)
        canvas.showPage()


def _draw_sticker(pc: PageCanvas, src: PatchSource, placement: StickerPlacement, bleed: float,
                  record: PageRecord) -> None:
    """One sticker at true size: its pixels with ``bleed`` mm extra all round, the cut rectangle, its number."""
    s = src.stickers[placement.number - 1]
    region = Rect(s.x_mm - bleed, s.y_mm - bleed, s.w_mm + 2 * bleed, s.h_mm + 2 * bleed)
    box, box_mm = crop_box_px(region, src.px_per_mm, src.image.shape[:2])
    x0, y0, x1, y1 = box
    cut = placement.cut
    dx, dy = cut.x_mm - s.x_mm, cut.y_mm - s.y_mm  # patch mm -> page mm
    page_rect = Rect(box_mm.x_mm + dx, box_mm.y_mm + dy, box_mm.w_mm, box_mm.h_mm)
    pc.image(src.image[y0:y1, x0:x1], page_rect)
    outline = np.array([[cut.x_mm, cut.y_mm], [cut.x1_mm, cut.y_mm], [cut.x1_mm, cut.y1_mm], [cut.x_mm, cut.y1_mm]])
    pc.cut_line(outline)
    pc.text(cut.x_mm, cut.y1_mm + 2 + STICKER_LABEL_MM * 0.6,
            f"#{s.number}  {s.w_mm:.0f} x {s.h_mm:.0f} mm", 6.5, bold=True)
    record.images.append(PlacedImage(box, page_rect))
    record.cuts_mm.append(outline)


def _draw_placement_guide(pc: PageCanvas, src: PatchSource, frame: PageFrame) -> None:
    """To-scale drawing of the face with each sticker, dimension lines, and a table of distances in mm."""
    c = frame.content
    n = len(src.stickers)
    table_cols = 1 if n <= 12 else 2
    row_mm = 3.6
    table_h = row_mm * (1 + -(-n // table_cols)) + 4
    header_mm = 15.0
    room = Rect(c.x_mm + 8, c.y_mm + header_mm + 6, c.w_mm - 16, c.h_mm - header_mm - table_h - 12)
    scale = nice_scale((src.width_mm, src.height_mm), (room.w_mm, room.h_mm))
    draw_w, draw_h = src.width_mm / scale, src.height_mm / scale
    origin = (room.x_mm + (room.w_mm - draw_w) / 2, room.y_mm)
    shape = src.sign_kind.replace("_", " ") + " face" if src.sign_kind else "road marking"
    pc.text(c.x_mm, c.y_mm + 4, f"Placement guide: {src.patch_id}", 11, bold=True)
    pc.text(c.x_mm, c.y_mm + 9, f"{n} stickers on a {src.size_label} {shape}; drawing at 1:{scale:g}. "
            "Distances in mm from the face's left and top edges to each sticker's left and top edges.", 7.5)
    pc.text(c.x_mm, c.y_mm + 13, "Clean the sign, mark the positions with tape, then apply the stickers "
            "by number (cut along the magenta lines).", 7.5)

    outline = _patch_to_page(slot_outline_mm(src), origin, scale)
    pc.polygon(outline, stroke=(0, 0, 0), fill=(0.93, 0.93, 0.93), width_pt=0.8)
    pc.rect(Rect(origin[0], origin[1], draw_w, draw_h), stroke=GREY, width_pt=0.3, dash=(1, 1.5))
    for s in src.stickers:
        rect = Rect(origin[0] + s.x_mm / scale, origin[1] + s.y_mm / scale, s.w_mm / scale, s.h_mm / scale)
        box, _ = crop_box_px(Rect(s.x_mm, s.y_mm, s.w_mm, s.h_mm), src.px_per_mm, src.image.shape[:2])
        _draw_drawing_image(pc, src.image[box[1]:box[3], box[0]:box[2]], rect)
        pc.rect(rect, stroke=CUT_COLOUR, width_pt=0.6)
        _dimension_lines(pc, origin, scale, s.x_mm, s.y_mm, rect)
        pc.label_box(rect.x_mm + rect.w_mm / 2, rect.y_mm + rect.h_mm / 2, str(s.number), 7)
    # edge dimensions of the face
    pc.text(origin[0] + draw_w / 2, origin[1] - 1.5, f"{src.width_mm:.0f} mm", 6.5, "centre", GREY)
    pc.text(origin[0] + draw_w + 1.5, origin[1] + draw_h / 2, f"{src.height_mm:.0f} mm", 6.5, colour=GREY)

    y = room.y1_mm + 8
    headers = ("#", "from left", "from top", "from right", "from bottom", "size w x h")
    col_x = (0, 6, 21, 36, 53, 72)  # mm; two tables side by side fit in half a 190 mm content width each
    per_col = -(-n // table_cols)
    for t in range(table_cols):
        x0 = c.x_mm + t * (c.w_mm / 2)
        for hx, text in zip(col_x, headers):
            pc.text(x0 + hx, y, text, 7, bold=True)
        for i, s in enumerate(src.stickers[t * per_col:(t + 1) * per_col]):
            yy = y + row_mm * (i + 1)
            values = (f"{s.number}", f"{s.x_mm:.0f}", f"{s.y_mm:.0f}", f"{src.width_mm - s.x_mm - s.w_mm:.0f}",
                      f"{src.height_mm - s.y_mm - s.h_mm:.0f}", f"{s.w_mm:.0f} x {s.h_mm:.0f}")
            for hx, text in zip(col_x, values):
                pc.text(x0 + hx, yy, text, 7)


def _dimension_lines(pc: PageCanvas, origin: tuple[float, float], scale: float, x_mm: float, y_mm: float,
                     rect: Rect) -> None:
    """Thin lines from the face's left and top edges to the sticker, labelled with the distance in mm."""
    ymid = rect.y_mm + rect.h_mm / 2
    xmid = rect.x_mm + rect.w_mm / 2
    pc.line(origin[0], ymid, rect.x_mm, ymid, GUIDE_COLOUR, 0.3, (1, 1))
    pc.text((origin[0] + rect.x_mm) / 2, ymid - 0.8, f"{x_mm:.0f}", 5, "centre", GUIDE_COLOUR)
    pc.line(xmid, origin[1], xmid, rect.y_mm, GUIDE_COLOUR, 0.3, (1, 1))
    pc.text(xmid + 0.8, (origin[1] + rect.y_mm) / 2, f"{y_mm:.0f}", 5, colour=GUIDE_COLOUR)
