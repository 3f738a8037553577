"""Printer colour calibration from a photo of the printed chart.

Steps: find the four ArUco markers; rectify the chart with a homography; check it is sharp; read
each patch (median of its inner area); remove uneven lighting and exposure with the white and black
references; fit the printer-to-camera colour model; save a printer profile.

Lighting correction, per channel, in linear light: smooth fields W(x, y) and B(x, y) are fitted to
the white and black references, and a reading v becomes
``(v - B) / (W - B) * (w - b) + b``, where ``w`` is the paper white level (``white_level``, sRGB, the
same for all channels, so the result is white-balanced on the paper) and ``b`` the black
reference's level relative to paper. This removes vignetting, exposure and colour cast while
keeping the printer's own contrast.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from patchsim.errors import PatchsimError
from patchsim.printing.chart import MARKER_IDS, ChartLayout, aruco_dictionary, chart_layout, load_chart_layout
from patchsim.printing.colour import delta_e_srgb, linear_to_srgb, srgb_to_linear
from patchsim.printing.fit import fit_model, palette_inputs
from patchsim.printing.layout import Rect

if TYPE_CHECKING:
    from patchsim.eot.printer import PrinterProfile

RECTIFY_PX_PER_MM = 5.0
#: Sharpness (variance of the Laplacian of the rectified chart at 5 px/mm, grey levels normalised by
#: the white-black contrast) below which a photo counts as blurred. A sharp photo scores about 0.07
#: even with the chart only 3 px/mm in the photo; a Gaussian blur of 0.4 mm (sigma) scores about 0.003.
MIN_SHARPNESS = 0.005
#: paper white in the fitted model (sRGB): the simulator's white sign sheeting and the default profile's paper.
DEFAULT_WHITE_LEVEL = 0.94
MAX_MARKER_ERROR_MM = 1.5


class CalibrationError(PatchsimError, ValueError):
    """The photo cannot be used for calibration: unreadable, markers missing, blurred, badly exposed."""


@dataclass
class CalibrationResult:
    """What :func:`calibrate` produced.

    Attributes:
        profile: the fitted :class:`~patchsim.eot.printer.PrinterProfile`. path: where it was saved.
        nominal_rgb: (N, 3) the colour patches' printer input; measured_rgb: (N, 3) as read, corrected.
        delta_e: (N,) CIEDE2000 between the model and each measurement.
        sharpness: the blur score (see ``MIN_SHARPNESS``). info: fit details.
    """

    profile: "PrinterProfile"
    path: Path
    nominal_rgb: np.ndarray
    measured_rgb: np.ndarray
    delta_e: np.ndarray
    sharpness: float
    info: dict = field(default_factory=dict)


def calibrate(photo_path: str | Path, name: str, out_dir: str | Path = "printables/profiles",
              chart: str | Path | ChartLayout | None = None, white_level: float = DEFAULT_WHITE_LEVEL,
              min_sharpness: float = MIN_SHARPNESS) -> CalibrationResult:
    """Fit a printer profile from a photo of the printed colour chart and save ``out_dir/NAME.json``.

    Args:
        photo_path: the photo (any format OpenCV reads; sRGB assumed).
        name: the profile name (letters, digits, ``-``, ``_``, ``.``); ``load_profile(name)`` finds it.
        chart: the chart layout (JSON written beside the chart PDF, or a layout); default: the default
            chart (140 patches on A4).
        white_level: the sRGB level paper white maps to.
        min_sharpness: blur threshold.

    Raises:
        CalibrationError: unreadable photo, markers missing (says which were found), blurred photo,
            bad exposure, or a bad profile name (``default`` is reserved).
    """
    from patchsim.eot.printer import PrinterProfile

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name or ""):
        raise CalibrationError(f"profile name {name!r} must be letters, digits, '-', '_' or '.'")
    if name == "default":
        raise CalibrationError("the name 'default' is kept for the shipped generic profile; choose another name")
    if not 0.5 <= white_level <= 1.0:
        raise CalibrationError(f"white_level must be in [0.5, 1], not {white_level:g}")
    photo_path = Path(photo_path)
    layout = chart if isinstance(chart, ChartLayout) else (
        chart_layout() if chart is None else load_chart_layout(chart))
    photo = read_photo(photo_path)
    rectified = rectify(photo, layout, photo_path)
    sharpness = chart_sharpness(rectified, layout)
    if sharpness < min_sharpness:
        raise CalibrationError(f"{photo_path}: the chart is blurred (sharpness {sharpness:.3g}, variance of the "
                               f"Laplacian, below {min_sharpness:g}); retake it in focus, held still, and closer")
    readings = read_patches(rectified, layout)
    corrected = correct_lighting(readings, layout, white_level, photo_path)
    colour_idx = [i for i, p in enumerate(layout.patches) if p.role == "colour"]
    nominal = np.array([layout.patches[i].rgb for i in colour_idx])
    measured = corrected[colour_idx]
    model, info = fit_model(nominal, measured)
    delta_e = delta_e_srgb(model.apply(nominal), measured)
    profile = PrinterProfile(name, model.matrix, model.offset, model.apply(palette_inputs()), model.tone,
                             round(float(delta_e.mean()), 4))
    profile.meta = {
        "description": f"fitted to a photo of the patchsim colour chart ({len(nominal)} colours)",
        "photo": photo_path.name, "white_level": white_level, "sharpness": round(sharpness, 5),
        "max_delta_e": round(float(delta_e.max()), 3), "tone_used": info["tone_used"],
        "affine_delta_e": round(info["affine_delta_e"], 4),
    }
    path = profile.save(Path(out_dir) / f"{name}.json")
    return CalibrationResult(profile, path, nominal, measured, delta_e, sharpness, info)


# ----------------------------------------------------------------------------------------------- steps


def read_photo(path: Path) -> np.ndarray:
    """(H, W, 3) float32 sRGB in [0, 1]."""
    import cv2

    if not path.is_file():
        raise CalibrationError(f"{path}: photo not found")
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise CalibrationError(f"{path}: not a readable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0


def find_markers(photo: np.ndarray) -> dict[int, np.ndarray]:
    """Chart markers found in a photo: id -> (4, 2) corners in photo pixels (ArUco order)."""
    import cv2

    grey = cv2.cvtColor((photo * 255).astype(np.uint8), cv2.COLOR_RGB2GRAY)
    params = cv2.aruco.DetectorParameters()
    params.cornerRefinementMethod = cv2.aruco.CORNER_REFINE_SUBPIX
    detector = cv2.aruco.ArucoDetector(aruco_dictionary(), params)
    corners, ids, _ = detector.detectMarkers(grey)
    found: dict[int, np.ndarray] = {}
    for c, i in zip(corners, [] if ids is None else ids.ravel()):
        c = c.reshape(4, 2).astype(np.float64)
        if int(i) in MARKER_IDS:
            area = cv2.contourArea(c.astype(np.float32))
            if int(i) not in found or area > cv2.contourArea(found[int(i)].astype(np.float32)):
                found[int(i)] = c
    return found


def rectify(photo: np.ndarray, layout: ChartLayout, photo_path: Path,
            px_per_mm: float = RECTIFY_PX_PER_MM) -> np.ndarray:
    """Warp the photo onto the chart page: (page_h * px_per_mm, page_w * px_per_mm, 3) float32 sRGB."""
    import cv2

    found = find_markers(photo)
    missing = [i for i in MARKER_IDS if i not in found]
    if missing:
        have = (f"found chart marker(s) {sorted(found)} but not {missing}" if found
                else "found none of the chart's corner markers")
        raise CalibrationError(f"{photo_path}: {have}; the photo must show all four corner markers of the "
                               "colour chart (ArUco DICT_4X4_50, ids 0-3), flat and unobstructed")
    src = np.concatenate([found[i] for i in MARKER_IDS])
    dst = np.concatenate([layout.marker_corners_mm(i) for i in MARKER_IDS])
    h_mm, _ = cv2.findHomography(src, dst, 0)
    if h_mm is None:
        raise CalibrationError(f"{photo_path}: the chart markers are degenerate (cannot fit a homography)")
    projected = cv2.perspectiveTransform(src[None], h_mm)[0]
    error_mm = float(np.abs(projected - dst).max())
    if error_mm > MAX_MARKER_ERROR_MM:
        raise CalibrationError(f"{photo_path}: the markers do not match the chart layout (off by {error_mm:.1f} mm); "
                               "is the chart bent, or printed with a different layout (pass its chart JSON)?")
    scale = np.diag([px_per_mm, px_per_mm, 1.0])
    size = (int(round(layout.width_mm * px_per_mm)), int(round(layout.height_mm * px_per_mm)))
    return cv2.warpPerspective(photo, scale @ h_mm, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def chart_sharpness(rectified: np.ndarray, layout: ChartLayout, px_per_mm: float = RECTIFY_PX_PER_MM) -> float:
    """Variance of the Laplacian of the rectified chart's grey levels, normalised by the white-black contrast."""
    import cv2

    frame = layout.frame
    x0, y0 = int(frame.x_mm * px_per_mm), int(frame.y_mm * px_per_mm)
    x1, y1 = int(frame.x1_mm * px_per_mm), int(frame.y1_mm * px_per_mm)
    grey = cv2.cvtColor(rectified[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY)
    white = np.median([_inner_median(grey[..., None], p.rect, px_per_mm, (frame.x_mm, frame.y_mm))
                       for p in layout.role("white")])
    black = np.median([_inner_median(grey[..., None], p.rect, px_per_mm, (frame.x_mm, frame.y_mm))
                       for p in layout.role("black")])
    contrast = max(float(white - black), 0.05)
    lap = cv2.Laplacian(grey / contrast, cv2.CV_32F, ksize=3)
    return float(lap.var())


def _inner_median(img: np.ndarray, rect: Rect, px_per_mm: float, origin_mm: tuple[float, float] = (0.0, 0.0),
                  border: float = 0.25) -> np.ndarray:
    """Per-channel median of the inner part of ``rect`` (a ``border`` share cut from each side)."""
    inset_x, inset_y = max(1.0, rect.w_mm * border), max(1.0, rect.h_mm * border)
    x0 = int(round((rect.x_mm + inset_x - origin_mm[0]) * px_per_mm))
    x1 = int(round((rect.x1_mm - inset_x - origin_mm[0]) * px_per_mm))
    y0 = int(round((rect.y_mm + inset_y - origin_mm[1]) * px_per_mm))
    y1 = int(round((rect.y1_mm - inset_y - origin_mm[1]) * px_per_mm))
    region = img[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)]
    return np.median(region.reshape(-1, img.shape[-1]), axis=0)


def read_patches(rectified: np.ndarray, layout: ChartLayout, px_per_mm: float = RECTIFY_PX_PER_MM) -> np.ndarray:
    """(P, 3) sRGB readings of every patch in the layout (white and black references included)."""
    return np.array([_inner_median(rectified, p.rect, px_per_mm) for p in layout.patches])


def _poly_terms(xy: np.ndarray, degree: int) -> np.ndarray:
    """(N, T) polynomial terms in normalised page coordinates up to ``degree`` (1 or 2)."""
    x, y = xy[:, 0], xy[:, 1]
    terms = [np.ones_like(x), x, y]
    if degree >= 2:
        terms += [x * x, x * y, y * y]
    return np.stack(terms, 1)


def _fit_field(xy: np.ndarray, values: np.ndarray, degree: int) -> np.ndarray:
    """Least-squares polynomial coefficients (T, 3) of a smooth field through per-channel values (N, 3)."""
    coef, *_ = np.linalg.lstsq(_poly_terms(xy, degree), values, rcond=None)
    return coef


def correct_lighting(readings: np.ndarray, layout: ChartLayout, white_level: float,
                     photo_path: Path) -> np.ndarray:
    """Remove vignetting, exposure and colour cast using the white and black references (see module doc).

    Args:
        readings: (P, 3) sRGB per layout patch. Returns (P, 3) corrected sRGB, clipped to [0, 1].
    """
    centres = np.array([[p.rect.x_mm + p.rect.w_mm / 2, p.rect.y_mm + p.rect.h_mm / 2] for p in layout.patches])
    xy = (centres - [layout.width_mm / 2, layout.height_mm / 2]) / max(layout.width_mm, layout.height_mm)
    roles = np.array([p.role for p in layout.patches])
    white, black = roles == "white", roles == "black"
    lin = srgb_to_linear(readings)
    if np.mean(readings[white] > 0.995) > 0.5:
        raise CalibrationError(f"{photo_path}: the white paper is clipped (overexposed); retake the photo darker")
    w_field = _poly_terms(xy, 2 if white.sum() >= 9 else 1) @ _fit_field(xy[white], lin[white],
                                                                          2 if white.sum() >= 9 else 1)
    b_field = _poly_terms(xy, 1) @ _fit_field(xy[black], lin[black], 1)
    span = w_field - b_field
    if (span < 0.03).any():
        raise CalibrationError(f"{photo_path}: too little contrast between the white and black references "
                               "(underexposed, glare, or not the patchsim chart)")
    w_target = float(srgb_to_linear(np.array(white_level)))
    b_ratio = np.median(lin[black] / w_field[black], axis=0)  # printed black relative to paper, per channel
    b_target = w_target * np.clip(b_ratio, 0, 0.9)
    out = (lin - b_field) / span * (w_target - b_target) + b_target
    return np.clip(linear_to_srgb(out), 0, 1)


def write_default_profile(out_dir: str | Path = "printables/profiles") -> Path:
    """Write ``out_dir/default.json`` from :func:`patchsim.eot.printer.default_profile` (for users without a
    calibration); returns the path."""
    from patchsim.eot.printer import default_profile

    return default_profile().save(Path(out_dir) / "default.json")
