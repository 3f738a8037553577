"""Cut outlines of a patch, in patch mm (origin at the slot's top-left, x right, y down).

- stickers: one rectangle per sticker;
- full: the slot outline (octagon for a stop sign, triangle for yield, rectangle otherwise);
- file: the outer contours of the mask.
"""

from __future__ import annotations

import numpy as np

from patchsim.printing.source import PatchSource


def slot_outline_mm(src: PatchSource) -> np.ndarray:
    """(K, 2) outline of the slot in patch mm: the sign face's shape, or the whole rectangle for road slots."""
    if src.slot_kind == "sign_face" and src.sign_kind:
        from patchsim.sim.textures import face_outline

        return face_outline(src.sign_kind, src.width_mm, src.height_mm)
    return rect_outline(0.0, 0.0, src.width_mm, src.height_mm)


def rect_outline(x_mm: float, y_mm: float, w_mm: float, h_mm: float) -> np.ndarray:
    """(4, 2) corners of a rectangle, clockwise in y-down coordinates, starting top-left."""
    return np.array([[x_mm, y_mm], [x_mm + w_mm, y_mm], [x_mm + w_mm, y_mm + h_mm], [x_mm, y_mm + h_mm]], float)


def cut_outlines_mm(src: PatchSource) -> list[np.ndarray]:
    """The closed polygons (each (K, 2), patch mm) to cut along."""
    if src.mask_kind == "stickers":
        return [rect_outline(s.x_mm, s.y_mm, s.w_mm, s.h_mm) for s in src.stickers]
    if src.mask_kind == "full":
        return [slot_outline_mm(src)]
    return mask_contours_mm(src)


def mask_contours_mm(src: PatchSource, tolerance_px: float = 0.75) -> list[np.ndarray]:
    """Outer contours of the mask (pixels >= 128), simplified by ``tolerance_px``, in patch mm."""
    import cv2

    binary = (src.mask >= 128).astype(np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    sx, sy = src.px_per_mm
    out = []
    for contour in contours:
        if cv2.contourArea(contour) < 4:
            continue
        poly = cv2.approxPolyDP(contour, tolerance_px, True)[:, 0, :].astype(float)
        # contour points are the boundary pixels' centres (pixel i spans [i, i + 1) px), so the cut runs
        # half a pixel inside the mask's edge and leaves no unprinted rim
        out.append(np.stack([(poly[:, 0] + 0.5) / sx, (poly[:, 1] + 0.5) / sy], -1))
    return out


def printable_pixels(src: PatchSource) -> np.ndarray:
    """(H, W, 3) uint8 RGB as printed: the whole image, except ``file`` masks, which print white outside the mask."""
    if src.mask_kind != "file":
        return src.image
    return np.where(src.mask[..., None] >= 128, src.image, np.uint8(255))
