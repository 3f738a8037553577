"""Read a patch to print: an attack run directory or its ``patch.json``, with ``patch.png`` and ``mask.png``.

Coordinates of the slot ("patch space") are in metres or millimetres from the slot's top-left corner,
x to the right, y down, the same convention as ``patch.json``'s ``stickers_m``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from patchsim.errors import ConfigError, ShapeError

SLOT_KINDS = ("sign_face", "road")
MASK_KINDS = ("full", "stickers", "file")
SIGN_KINDS = ("stop_sign", "yield", "speed_limit")
MM_PER_INCH = 25.4


@dataclass(frozen=True)
class Sticker:
    """One sticker rectangle in millimetres from the slot's top-left corner (x right, y down)."""

    number: int
    x_mm: float
    y_mm: float
    w_mm: float
    h_mm: float


@dataclass
class PatchSource:
    """A patch ready to print.

    Attributes:
        patch_id: identifier for labels, e.g. ``"stop_sticker_vanish-s0"``.
        json_path: the ``patch.json`` it was read from.
        slot_kind: ``"sign_face"`` or ``"road"``; sign_kind: ``"stop_sign"`` etc. for sign faces, else None.
        width_mm, height_mm: physical size of the patch image (slot width and height).
        print_dpi: the resolution the patch was made for (dots per inch).
        mask_kind: ``"full"``, ``"stickers"`` or ``"file"``.
        stickers: sticker rectangles (only for ``"stickers"``), numbered from 1.
        image: (H, W, 3) uint8 RGB, the patch at ``print_dpi``.
        mask: (H, W) uint8, 255 where the patch is printed.
    """

    patch_id: str
    json_path: Path
    slot_kind: str
    sign_kind: str | None
    width_mm: float
    height_mm: float
    print_dpi: float
    mask_kind: str
    image: np.ndarray
    mask: np.ndarray
    stickers: list[Sticker] = field(default_factory=list)

    @property
    def px_per_mm(self) -> tuple[float, float]:
        """Actual image pixels per millimetre (x, y); equals print_dpi / 25.4 up to rounding."""
        h, w = self.image.shape[:2]
        return w / self.width_mm, h / self.height_mm

    @property
    def size_label(self) -> str:
        """E.g. ``"750 x 750 mm"``."""
        return f"{self.width_mm:.0f} x {self.height_mm:.0f} mm"


def load_source(source: str | Path) -> PatchSource:
    """Read a run directory (containing ``patch.json``) or a ``patch.json`` path.

    Raises:
        ConfigError: the directory has no patch.json, the JSON is invalid or lacks a key, a value is
            out of range, or an image is missing or unreadable; the message names the file.
        ShapeError: patch.png and mask.png disagree in size, or disagree with size_m and print_dpi.
    """
    path = Path(source)
    json_path = path / "patch.json" if path.is_dir() else path
    if not json_path.is_file():
        where = f"run directory {path} has no patch.json" if path.is_dir() else "patch.json not found"
        raise ConfigError(where, json_path)
    try:
        doc = json.loads(json_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON: {exc.msg}", json_path, line=exc.lineno) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read file: {exc}", json_path) from exc
    if not isinstance(doc, dict):
        raise ConfigError("expected a JSON object", json_path)

    slot = _get(doc, "slot", dict, json_path)
    slot_kind = _get(slot, "kind", str, json_path, "slot.")
    if slot_kind not in SLOT_KINDS:
        raise ConfigError(f"slot kind must be one of {', '.join(SLOT_KINDS)}, not {slot_kind!r}", json_path,
                          "slot.kind")
    size_m = slot.get("size_m")
    if (not isinstance(size_m, (list, tuple)) or len(size_m) != 2
            or not all(isinstance(v, (int, float)) and v > 0 for v in size_m)):
        raise ConfigError("size_m must be [width, height] in metres, both > 0", json_path, "slot.size_m")
    sign_kind = slot.get("sign_kind") if slot_kind == "sign_face" else None
    if sign_kind is not None and sign_kind not in SIGN_KINDS:
        raise ConfigError(f"sign_kind must be one of {', '.join(SIGN_KINDS)}, not {sign_kind!r}", json_path,
                          "slot.sign_kind")
    dpi = doc.get("print_dpi")
    if not isinstance(dpi, (int, float)) or not 1 <= dpi <= 4800:
        raise ConfigError(f"print_dpi must be a number in [1, 4800], not {dpi!r}", json_path, "print_dpi")
    mask_doc = _get(doc, "mask", dict, json_path)
    mask_kind = _get(mask_doc, "kind", str, json_path, "mask.")
    if mask_kind not in MASK_KINDS:
        raise ConfigError(f"mask kind must be one of {', '.join(MASK_KINDS)}, not {mask_kind!r}", json_path,
                          "mask.kind")
    width_mm, height_mm = float(size_m[0]) * 1000, float(size_m[1]) * 1000
    stickers = _stickers(mask_doc, mask_kind, width_mm, height_mm, json_path)

    files = doc.get("files") if isinstance(doc.get("files"), dict) else {}
    image_path = json_path.parent / str(files.get("patch", "patch.png"))
    mask_path = json_path.parent / str(files.get("mask", "mask.png"))
    image = _read_image(image_path, "RGB")
    mask = _read_image(mask_path, "L")
    if image.shape[:2] != mask.shape:
        raise ShapeError(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} px but {image_path.name} is "
                         f"{image.shape[1]}x{image.shape[0]} px")
    expected = (round(width_mm / MM_PER_INCH * dpi), round(height_mm / MM_PER_INCH * dpi))
    got = (image.shape[1], image.shape[0])
    if abs(got[0] - expected[0]) > 2 or abs(got[1] - expected[1]) > 2:
        raise ShapeError(f"{image_path}: image is {got[0]}x{got[1]} px, but {width_mm:.0f} x {height_mm:.0f} mm "
                         f"at {dpi:g} dpi needs {expected[0]}x{expected[1]} px (see {json_path.name})")
    return PatchSource(
        patch_id=str(doc.get("patch_id") or json_path.parent.name), json_path=json_path, slot_kind=slot_kind,
        sign_kind=sign_kind, width_mm=width_mm, height_mm=height_mm, print_dpi=float(dpi), mask_kind=mask_kind,
        image=image, mask=mask, stickers=stickers)


def _get(doc: dict, key: str, kind: type, source: Path, prefix: str = ""):
    if key not in doc:
        raise ConfigError("missing key", source, prefix + key)
    value = doc[key]
    if not isinstance(value, kind):
        raise ConfigError(f"expected {'an object' if kind is dict else 'a string'}, got {type(value).__name__}",
                          source, prefix + key)
    return value


def _stickers(mask_doc: dict, mask_kind: str, width_mm: float, height_mm: float, source: Path) -> list[Sticker]:
    if mask_kind != "stickers":
        return []
    items = mask_doc.get("stickers_m")
    if not isinstance(items, list) or not items:
        raise ConfigError("mask kind 'stickers' needs a non-empty stickers_m list", source, "mask.stickers_m")
    out = []
    for i, item in enumerate(items):
        key = f"mask.stickers_m.{i}"
        try:
            x, y, w, h = (float(item[k]) * 1000 for k in ("x_m", "y_m", "w_m", "h_m"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError("each sticker needs numbers x_m, y_m, w_m, h_m", source, key) from exc
        tol = 0.5  # mm, rounding in patch.json
        if w <= 0 or h <= 0 or x < -tol or y < -tol or x + w > width_mm + tol or y + h > height_mm + tol:
            raise ConfigError(f"sticker {w:.0f} x {h:.0f} mm at ({x:.0f}, {y:.0f}) mm is outside the "
                              f"{width_mm:.0f} x {height_mm:.0f} mm slot", source, key)
        out.append(Sticker(i + 1, x, y, w, h))
    return out


def _read_image(path: Path, mode: str) -> np.ndarray:
    """(H, W, 3) RGB or (H, W) grey uint8. OpenCV reads it: its pixel limit (2^30) suits road-sized patches."""
    import cv2

    if not path.is_file():
        raise ConfigError("image not found", path)
    flag = cv2.IMREAD_COLOR if mode == "RGB" else cv2.IMREAD_GRAYSCALE
    img = cv2.imread(str(path), flag)
    if img is None:
        raise ConfigError("not a readable image", path)
    if img.dtype != np.uint8:
        raise ConfigError(f"expected an 8-bit image, got {img.dtype}", path)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if mode == "RGB" else img
