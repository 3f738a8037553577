"""Printer colour chart: colour patches framed by four ArUco markers, with white and black references.

The chart is printed, photographed, and read back by :mod:`patchsim.printing.calibrate`. Its layout
(every patch's rectangle in page mm and its nominal RGB) is deterministic for a given patch count and
paper, and is also written as JSON beside the PDF.

Markers: ArUco ``DICT_4X4_50``, id 0 top-left, 1 top-right, 2 bottom-right, 3 bottom-left.
White references are blank paper (RGB 1, 1, 1); black references are RGB (0, 0, 0). They are spread
over the chart so calibration can correct uneven lighting (vignetting) and exposure.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from patchsim.errors import ConfigError
from patchsim.printing.canvas import MM_TO_PT, PageCanvas, binary_streams
from patchsim.printing.layout import Rect, TilingError, paper_size_mm
from patchsim.runs import atomic_path, write_json

CHART_FORMAT = "patchsim-colour-chart/1"
MARKER_IDS = (0, 1, 2, 3)  # top-left, top-right, bottom-right, bottom-left
MARKER_MM = 16.0
MARGIN_MM = 10.0
HEADER_MM = 14.0
FOOTER_MM = 8.0
GAP_MM = 3.0  # blank paper between patches
DEFAULT_PATCHES = 140
WHITE_REFS_GRID = (4, 3)  # white references on a rows x columns lattice of the patch grid


def aruco_dictionary():
    """The ArUco dictionary the chart uses (DICT_4X4_50)."""
    import cv2

    return cv2.aruco.getPredefinedDictionary(cv2.aruco.DICT_4X4_50)


@dataclass(frozen=True)
class ChartPatch:
    """One patch: ``role`` is ``"colour"``, ``"white"`` or ``"black"``; ``rgb`` the nominal colour in [0, 1]."""

    index: int
    role: str
    rgb: tuple[float, float, float]
    rect: Rect  # page mm


@dataclass
class ChartLayout:
    """Where everything is on the chart page (page mm, origin top-left, y down)."""

    paper: str
    width_mm: float
    height_mm: float
    markers: dict[int, Rect]
    patches: list[ChartPatch]

    def marker_corners_mm(self, marker_id: int) -> np.ndarray:
        """(4, 2) outer corners of a marker in ArUco order: top-left, top-right, bottom-right, bottom-left."""
        r = self.markers[marker_id]
        return np.array([[r.x_mm, r.y_mm], [r.x1_mm, r.y_mm], [r.x1_mm, r.y1_mm], [r.x_mm, r.y1_mm]], float)

    def role(self, role: str) -> list[ChartPatch]:
        return [p for p in self.patches if p.role == role]

    @property
    def frame(self) -> Rect:
        """The rectangle spanned by the four markers."""
        xs = [r.x_mm for r in self.markers.values()] + [r.x1_mm for r in self.markers.values()]
        ys = [r.y_mm for r in self.markers.values()] + [r.y1_mm for r in self.markers.values()]
        return Rect(min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))

    def to_json(self) -> dict:
        return {
            "format": CHART_FORMAT, "paper": self.paper, "page_mm": [self.width_mm, self.height_mm],
            "aruco_dictionary": "DICT_4X4_50",
            "markers": {str(k): _rect_list(r) for k, r in self.markers.items()},
            "patches": [{"index": p.index, "role": p.role, "rgb": list(p.rgb), "rect_mm": _rect_list(p.rect)}
                        for p in self.patches],
        }

    @classmethod
    def from_json(cls, data: dict, source: str | Path = "<dict>") -> "ChartLayout":
        found = data.get("format") if isinstance(data, dict) else None
        if found != CHART_FORMAT:
            raise ConfigError(f"not a colour chart layout (format {found!r})", source, "format")
        try:
            markers = {int(k): Rect(*map(float, v)) for k, v in data["markers"].items()}
            patches = [ChartPatch(int(p["index"]), str(p["role"]), tuple(float(c) for c in p["rgb"]),
                                  Rect(*map(float, p["rect_mm"]))) for p in data["patches"]]
            width, height = (float(v) for v in data["page_mm"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"invalid chart layout: {exc}", source) from exc
        if sorted(markers) != list(MARKER_IDS):
            raise ConfigError("chart layout needs markers 0, 1, 2, 3", source, "markers")
        return cls(str(data.get("paper", "custom")), width, height, markers, patches)


def _rect_list(r: Rect) -> list[float]:
    return [round(r.x_mm, 4), round(r.y_mm, 4), round(r.w_mm, 4), round(r.h_mm, 4)]


def load_chart_layout(path: str | Path) -> ChartLayout:
    """Read a chart layout JSON written by :func:`make_chart`."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError("chart layout not found", p)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON: {exc.msg}", p, line=exc.lineno) from exc
    return ChartLayout.from_json(data, p)


# ----------------------------------------------------------------------------------------------- colours


def chart_colours(n: int) -> np.ndarray:
    """(n, 3) nominal RGB in [0, 1], multiples of 1/255, in priority order.

    Greys (12 levels), primaries and secondaries at three levels, a 4-level RGB grid, then a
    low-discrepancy (Halton) fill of the RGB cube; duplicates are skipped.
    """
    greys = [(v, v, v) for v in np.linspace(0, 1, 12)]
    hues = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 1, 1), (1, 0, 1), (1, 1, 0)]
    primaries = [tuple(level * c for c in hue) for level in (1.0, 0.66, 0.33) for hue in hues]
    levels = np.linspace(0, 1, 4)
    grid = [(r, g, b) for r in levels for g in levels for b in levels]
    candidates = greys + primaries + grid + [_halton(i) for i in range(1, 4 * n + 1)]
    out: list[tuple[int, int, int]] = []
    seen: set[tuple[int, int, int]] = set()
    for c in candidates:
        q = tuple(int(round(v * 255)) for v in c)
        if q not in seen:
            seen.add(q)
            out.append(q)
        if len(out) == n:
            break
    return np.array(out, float) / 255


def _halton(i: int) -> tuple[float, float, float]:
    def radical(k: int, base: int) -> float:
        f, r = 1.0, 0.0
        while k > 0:
            f /= base
            r += f * (k % base)
            k //= base
        return r

    return radical(i, 2), radical(i, 3), radical(i, 5)


# ----------------------------------------------------------------------------------------------- layout


def chart_layout(patches: int = DEFAULT_PATCHES, paper: str = "A4",
                 custom_size_mm: tuple[float, float] | None = None) -> ChartLayout:
    """The chart layout for ``patches`` colour patches on portrait ``paper`` (deterministic).

    Raises:
        TilingError: ``patches`` is outside [24, 400] or the patches would be smaller than 6 mm.
    """
    if not 24 <= patches <= 400:
        raise TilingError(f"a colour chart needs between 24 and 400 patches, not {patches}")
    name, (width, height) = paper_size_mm(paper, custom_size_mm)
    frame = Rect(MARGIN_MM, MARGIN_MM + HEADER_MM, width - 2 * MARGIN_MM,
                 height - 2 * MARGIN_MM - HEADER_MM - FOOTER_MM)
    markers = {
        0: Rect(frame.x_mm, frame.y_mm, MARKER_MM, MARKER_MM),
        1: Rect(frame.x1_mm - MARKER_MM, frame.y_mm, MARKER_MM, MARKER_MM),
        2: Rect(frame.x1_mm - MARKER_MM, frame.y1_mm - MARKER_MM, MARKER_MM, MARKER_MM),
        3: Rect(frame.x_mm, frame.y1_mm - MARKER_MM, MARKER_MM, MARKER_MM),
    }
    area = Rect(frame.x_mm, frame.y_mm + MARKER_MM + GAP_MM, frame.w_mm, frame.h_mm - 2 * (MARKER_MM + GAP_MM))
    n_refs = 2 * WHITE_REFS_GRID[0] * WHITE_REFS_GRID[1]
    rows, cols = _grid_shape(patches + n_refs, area)
    pitch_x, pitch_y = area.w_mm / cols, area.h_mm / rows
    if min(pitch_x, pitch_y) - GAP_MM < 6:
        raise TilingError(f"{patches} patches on {name} would be smaller than 6 mm; use fewer patches or larger paper")

    def cell(r: int, c: int) -> Rect:
        return Rect(area.x_mm + c * pitch_x + GAP_MM / 2, area.y_mm + r * pitch_y + GAP_MM / 2,
                    pitch_x - GAP_MM, pitch_y - GAP_MM)

    roles: dict[tuple[int, int], str] = {}
    for r in np.round(np.linspace(0, rows - 1, WHITE_REFS_GRID[0])).astype(int):
        for c in np.round(np.linspace(0, cols - 1, WHITE_REFS_GRID[1])).astype(int):
            roles[(int(r), int(c))] = "white"
            roles[(int(r), int(c) + 1 if c < cols - 1 else int(c) - 1)] = "black"
    colours = chart_colours(patches)
    order = np.random.default_rng(0).permutation(patches)  # spread similar colours over the chart
    out: list[ChartPatch] = []
    k = 0
    for r in range(rows):
        for c in range(cols):
            role = roles.get((r, c))
            if role == "white":
                rgb = (1.0, 1.0, 1.0)
            elif role == "black":
                rgb = (0.0, 0.0, 0.0)
            elif k < patches:
                rgb, role = tuple(float(v) for v in colours[order[k]]), "colour"
                k += 1
            else:
                continue
            out.append(ChartPatch(len(out), role, rgb, cell(r, c)))
    return ChartLayout(name, width, height, markers, out)


def _grid_shape(cells: int, area: Rect) -> tuple[int, int]:
    """(rows, cols) holding ``cells`` with cells as close to square as possible."""
    best = None
    for cols in range(3, 40):
        rows = math.ceil(cells / cols)
        aspect = (area.w_mm / cols) / (area.h_mm / rows)
        score = abs(math.log(aspect)) + 0.01 * (rows * cols - cells)
        if best is None or score < best[0]:
            best = (score, rows, cols)
    return best[1], best[2]


# ----------------------------------------------------------------------------------------------- drawing


def make_chart(out_pdf: str | Path = "printables/chart.pdf", patches: int = DEFAULT_PATCHES, paper: str = "A4",
               custom_size_mm: tuple[float, float] | None = None) -> ChartLayout:
    """Write the colour chart PDF and its layout JSON (same name, ``.json``) beside it.

    Returns:
        the layout; pass the JSON to :func:`patchsim.printing.calibrate.calibrate` (``chart=``) when the
        chart is not the default (140 patches on A4).
    """
    from reportlab.pdfgen.canvas import Canvas

    layout = chart_layout(patches, paper, custom_size_mm)
    out = Path(out_pdf)
    with atomic_path(out) as tmp, binary_streams():
        canvas = Canvas(str(tmp), pagesize=(layout.width_mm * MM_TO_PT, layout.height_mm * MM_TO_PT))
        canvas.setTitle("patchsim printer colour chart")
        canvas.setCreator("patchsim")
        draw_chart(PageCanvas(canvas, layout.height_mm), layout, layout_name=out.with_suffix(".json").name)
        canvas.showPage()
        canvas.save()
    write_json(out.with_suffix(".json"), layout.to_json())
    return layout


def draw_chart(pc: PageCanvas, layout: ChartLayout, layout_name: str = "chart.json") -> None:
    """Draw the chart: header, markers, patches, footer."""
    n_colour = len(layout.role("colour"))
    pc.text(MARGIN_MM, MARGIN_MM + 4, f"patchsim printer colour chart: {n_colour} colours, "
            f"{len(layout.role('white'))} white and {len(layout.role('black'))} black references ({layout_name})",
            9, bold=True)
    pc.text(MARGIN_MM, MARGIN_MM + 8.5, "Print at 100 % with colour management off, on the paper and printer you "
            "will use. Photograph the whole chart flat, in diffuse daylight, no flash,", 7)
    pc.text(MARGIN_MM, MARGIN_MM + 12, "all four corner markers in view, in focus; then run: "
            "patchsim calibrate PHOTO.jpg --name NAME", 7)
    for marker_id, rect in layout.markers.items():
        _draw_marker(pc, marker_id, rect)
    for p in layout.patches:
        if p.role == "white":  # blank paper; a light corner tick shows where it is
            pc.rect(p.rect, stroke=(0.7, 0.7, 0.7), width_pt=0.25, dash=(0.5, 1.5))
        else:
            pc.rect(p.rect, stroke=None, fill=p.rgb)
    pc.text(MARGIN_MM, layout.height_mm - MARGIN_MM - 2, "Markers: ArUco DICT_4X4_50 ids 0-3. Keep the chart flat "
            "and out of direct sun; avoid glare and shadows across the patches.", 6.5)


def _draw_marker(pc: PageCanvas, marker_id: int, rect: Rect) -> None:
    """An ArUco marker (6 x 6 cells with its black border) as one vector path of black cells."""
    import cv2

    bits = cv2.aruco.generateImageMarker(aruco_dictionary(), marker_id, 6, borderBits=1)
    cell = rect.w_mm / bits.shape[1]
    c = pc.c
    c.setFillColorRGB(0, 0, 0)
    path = c.beginPath()
    for row in range(bits.shape[0]):
        for col in range(bits.shape[1]):
            if bits[row, col] < 128:
                x, y = pc.pt(rect.x_mm + col * cell, rect.y_mm + (row + 1) * cell)
                path.rect(x, y, cell * MM_TO_PT, cell * MM_TO_PT)
    c.drawPath(path, stroke=0, fill=1)
