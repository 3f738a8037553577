"""Fixtures for the printing tests: small synthetic attack outputs (patch.png, mask.png, patch.json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

MM_PER_INCH = 25.4


def patch_image(w_px: int, h_px: int, seed: int = 0, block_px: int | None = None) -> np.ndarray:
    """A colourful test image (H, W, 3) uint8: smooth waves plus flat blocks (default: 8 blocks across)."""
    rng = np.random.default_rng(seed)
    x = (np.arange(w_px, dtype=np.float32) / max(w_px, h_px))[None, :]
    y = (np.arange(h_px, dtype=np.float32) / max(w_px, h_px))[:, None]
    diagonal = np.sin(4 * x) * np.cos(4 * y) + np.cos(4 * x) * np.sin(4 * y)  # sin(4 (x + y))
    img = np.empty((h_px, w_px, 3), np.float32)
    img[..., 0] = 0.5 + 0.4 * np.sin(6 * x + 1)
    img[..., 1] = 0.5 + 0.4 * np.cos(5 * y)
    img[..., 2] = 0.5 + 0.4 * diagonal
    block = block_px or max(4, min(w_px, h_px) // 8)
    colours = rng.uniform(0.1, 0.9, (h_px // block + 1, w_px // block + 1, 3)).astype(np.float32)
    img = 0.6 * img + 0.4 * colours[(np.arange(h_px) // block)[:, None], (np.arange(w_px) // block)[None, :]]
    return (img * 255 + 0.5).astype(np.uint8)


def write_run(root: Path, size_m: tuple[float, float], dpi: float, slot_kind: str = "sign_face",
              sign_kind: str | None = "stop_sign", mask_kind: str = "full", stickers_m: list[dict] | None = None,
              image: np.ndarray | None = None, patch_id: str = "test-patch") -> Path:
    """Write patch.png, mask.png and patch.json into ``root`` as the attack would; returns ``root``."""
    import cv2

    root.mkdir(parents=True, exist_ok=True)
    w_px = max(1, int(round(size_m[0] / 0.0254 * dpi)))
    h_px = max(1, int(round(size_m[1] / 0.0254 * dpi)))
    img = patch_image(w_px, h_px) if image is None else image
    mask = np.full((h_px, w_px), 255, np.uint8)
    if mask_kind == "stickers":
        mask[:] = 0
        for s in stickers_m or []:
            x0, y0 = int(s["x_m"] / size_m[0] * w_px), int(s["y_m"] / size_m[1] * h_px)
            mask[y0:y0 + int(s["h_m"] / size_m[1] * h_px), x0:x0 + int(s["w_m"] / size_m[0] * w_px)] = 255
    cv2.imwrite(str(root / "patch.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(root / "mask.png"), mask)
    doc = {"patch_id": patch_id,
           "slot": {"name": "slot", "kind": slot_kind, "size_m": list(size_m),
                    "sign_kind": sign_kind if slot_kind == "sign_face" else None},
           "pixels_per_m": 128.0, "print_dpi": dpi,
           "mask": {"kind": mask_kind, "coverage": 0.2, "stickers_m": stickers_m or []},
           "files": {"patch": "patch.png", "mask": "mask.png"}}
    (root / "patch.json").write_text(json.dumps(doc, indent=2))
    return root


def render_pages(pdf_path: Path, dpi: float, pages: list[int] | None = None) -> list[np.ndarray]:
    """Render PDF pages to (H, W, 3) uint8 RGB arrays at ``dpi``."""
    import pypdfium2

    doc = pypdfium2.PdfDocument(str(pdf_path))
    try:
        idx = range(len(doc)) if pages is None else pages
        return [np.asarray(doc[i].render(scale=dpi / 72).to_pil().convert("RGB")) for i in idx]
    finally:
        doc.close()


def page_texts(pdf_path: Path) -> list[str]:
    """The text of every page."""
    import pypdfium2

    doc = pypdfium2.PdfDocument(str(pdf_path))
    try:
        return [page.get_textpage().get_text_range() for page in doc]
    finally:
        doc.close()


@pytest.fixture()
def make_run(tmp_path):
    """Factory: ``make_run(name, size_m=..., dpi=..., ...)`` writes a fake attack run under tmp_path."""

    def _make(name: str = "run", **kwargs) -> Path:
        return write_run(tmp_path / name, **kwargs)

    return _make
