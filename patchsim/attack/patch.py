"""Patch parameterization: physical size, resolution, slot, mask, colours.

A patch lives in the coordinates of its slot: for a sign face, the face's bounding rectangle
(x right, y down from the top-left corner, metres); for a road region, the region seen from above
with its top edge farthest from an approaching car. ``pixels_per_m`` sets the optimization
resolution; ``print_dpi`` the resolution of the printable ``patch.png``.

Masks:
    - ``full``: the whole slot (for a sign, the face outline): a poster.
    - ``stickers``: N rectangles (RP2-style), at given positions or at positions found by a
      saliency search (see :func:`place_stickers`), within a coverage budget of the face area.
      With ``sticker_layout: grid`` the stickers are the most salient cells of a grid of
      ``sticker_size_m`` squares, as many as the budget allows, and neighbouring cells in a row
      merge into one longer sticker (see :func:`place_grid_stickers`): RP2's saliency-shaped
      mask, kept cuttable.
    - ``file``: any mask image (white = patch).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from patchsim.config import FieldError, param
from patchsim.sim.scenario import SIGN_KINDS
from patchsim.sim.textures import face_outline, sign_face


@dataclass
class PatchConfig:
    mask: str = param("stickers", help="full, stickers, or file")
    mask_file: str | None = param(None, help="mask image for mask: file (white = patch)")
    stickers: int = param(4, range=(1, 32), help="number of rectangular stickers (free layout)")
    sticker_layout: str = param("free", help="free (N stickers anywhere) or grid (salient grid cells, merged per row)")
    sticker_size_m: tuple[float, float] = param((0.17, 0.17), unit="m", range=(0.01, 5.0),
                                                help="sticker w, h (free layout); grid cell w, h (grid layout)")
    sticker_positions_m: list[tuple[float, float]] | None = param(
        None, unit="m", help="top-left corners in slot coordinates; unset: found by saliency search")
    max_coverage: float = param(0.25, range=(0.01, 1.0), help="largest share of the face the mask may cover")
    max_pieces: int | None = param(8, range=(1, 10000),
                                   help="most separate stickers a person has to apply (stickers and file masks)")
    min_piece_m: float = param(0.05, unit="m", range=(0.0, 5.0),
                               help="shortest side a sticker may have (narrower pieces do not survive cutting)")
    pixels_per_m: float = param(128.0, unit="px/m", range=(16.0, 4000.0), help="optimization resolution")
    print_dpi: float = param(150.0, unit="dpi", range=(10.0, 2400.0), help="resolution of the printable patch.png")
    init: str = param("base", help="base (the sign as it is), target (the face of the attack's target sign "
                                   "kind, stretched over the slot), grey, or random")

    def __post_init__(self) -> None:
        if self.mask not in ("full", "stickers", "file"):
            raise FieldError("mask", f"mask must be full, stickers or file, not {self.mask!r}")
        if self.mask == "file" and not self.mask_file:
            raise FieldError("mask_file", "mask: file needs mask_file")
        if self.sticker_layout not in ("free", "grid"):
            raise FieldError("sticker_layout", f"sticker_layout must be free or grid, not {self.sticker_layout!r}")
        if self.sticker_layout == "grid" and self.sticker_positions_m:
            raise FieldError("sticker_positions_m", "sticker_positions_m places free stickers; "
                                                    "with sticker_layout: grid the cells are chosen by saliency")
        if self.init not in ("base", "target", "grey", "random"):
            raise FieldError("init", f"init must be base, target, grey or random, not {self.init!r}")


@dataclass
class SlotInfo:
    """What a patch needs to know about its slot."""

    name: str
    kind: str  # "sign_face" or "road"
    size_m: tuple[float, float]  # (width, height) of the patch image
    sign_kind: str | None = None  # for sign faces
    speed_limit_mph: int = 35

    def outline_uv(self) -> np.ndarray:
        """Slot outline in normalized coordinates (K, 2); the whole rectangle for road slots."""
        if self.kind == "sign_face" and self.sign_kind:
            return face_outline(self.sign_kind)
        return np.array([[0, 0], [1, 0], [1, 1], [0, 1.0]])


def raster_polygon(poly_uv: np.ndarray, hw: tuple[int, int], supersample: int = 4) -> np.ndarray:
    """Anti-aliased coverage (H, W) float32 of a polygon in normalized coordinates."""
    h, w = hw
    big = np.zeros((h * supersample, w * supersample), np.uint8)
    pts = np.round(poly_uv * [w * supersample, h * supersample]).astype(np.int32)
    cv2.fillPoly(big, [pts], 255)
    return cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def face_colours(kind: str, hw: tuple[int, int], speed_limit_mph: int = 35) -> torch.Tensor:
    """(3, H, W) colours in [0, 1] of a sign face's texture, stretched over its bounding rectangle."""
    face = sign_face(kind, 256, speed_limit_mph)[..., :3]
    img = cv2.resize(face, (hw[1], hw[0]), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    return torch.from_numpy(img).permute(2, 0, 1).contiguous()


class Patch:
    """Patch colours and mask on a slot.

    Attributes:
        slot: the slot it goes on.
        hw: (H, W) optimization resolution.
        outline: (1, H, W) coverage of the slot's real outline (octagon for a stop sign).
        mask: (1, H, W) where the patch is printed (inside the outline).
        base: (3, H, W) what the slot shows without a patch (the sign face texture, or grey road).
        colours: (3, H, W) the optimized colours in [0, 1], as sent to the printer.
    """

    def __init__(self, slot: SlotInfo, cfg: PatchConfig, device: str | torch.device = "cpu",
                 generator: torch.Generator | None = None, target_kind: str | None = None):
        """``target_kind``: the sign kind ``init: target`` paints (a misclassification attack's target)."""
        self.slot = slot
        self.cfg = cfg
        w_m, h_m = slot.size_m
        self.hw = (max(8, int(round(h_m * cfg.pixels_per_m))), max(8, int(round(w_m * cfg.pixels_per_m))))
        h, w = self.hw
        self.outline = torch.from_numpy(raster_polygon(slot.outline_uv(), self.hw))[None].to(device)
        if slot.kind == "sign_face" and slot.sign_kind:
            self.base = face_colours(slot.sign_kind, self.hw, slot.speed_limit_mph).to(device)
        else:
            self.base = torch.full((3, h, w), 0.33, device=device)
        self.mask = self.outline.clone()
        if cfg.init == "base":
            init = self.base.clone()
        elif cfg.init == "target":
            if target_kind not in SIGN_KINDS:
                raise FieldError("patch.init", f"init: target needs a sign kind to paint ({', '.join(SIGN_KINDS)}), "
                                               f"got target class {target_kind!r}")
            init = face_colours(target_kind, self.hw, slot.speed_limit_mph).to(device)
        elif cfg.init == "grey":
            init = torch.full((3, h, w), 0.5, device=device)
        else:
            init = torch.rand((3, h, w), generator=generator).to(device)
        self.colours = init.requires_grad_(True)

    # ------------------------------------------------------------------ masks

    @property
    def outline_area_m2(self) -> float:
        w_m, h_m = self.slot.size_m
        return float(self.outline.mean()) * w_m * h_m

    def coverage(self) -> float:
        """Share of the slot outline's area that the mask covers."""
        return float(self.mask.sum() / self.outline.sum().clamp(min=1e-8))  # the mask lies inside the outline

    def set_mask(self, mask: torch.Tensor) -> None:
        """Set the mask (1, H, W) in [0, 1]; it is clipped to the outline."""
        self.mask = (mask.to(self.outline) * self.outline).clamp(0, 1)

    def pieces(self) -> list[dict]:
        """The mask's separate pieces (8-connected): area (m²) and the short and long sides (m) of
        each one's smallest enclosing rectangle, largest piece first."""
        import cv2

        h, w = self.hw
        m_per_px = (self.slot.size_m[0] / w, self.slot.size_m[1] / h)
        binary = (self.mask[0].detach().cpu().numpy() > 0.5).astype(np.uint8)
        n, labels = cv2.connectedComponents(binary, connectivity=8)
        out = []
        for k in range(1, n):
            ys, xs = np.nonzero(labels == k)
            # pixel corners, so a one-pixel-wide strip is one pixel wide
            pts = np.concatenate([np.stack([xs + dx, ys + dy], 1) for dx in (0, 1) for dy in (0, 1)]).astype(np.float32)
            pts *= np.array(m_per_px, np.float32)
            (_, _), (a, b), _ = cv2.minAreaRect(pts)
            out.append({"area_m2": round(float(len(xs) * m_per_px[0] * m_per_px[1]), 5),
                        "short_side_m": round(float(min(a, b)), 4), "long_side_m": round(float(max(a, b)), 4)})
        return sorted(out, key=lambda p: -p["area_m2"])

    def check_applicable(self) -> None:
        """A sticker mask must be something a person can cut and apply: at most ``max_pieces`` pieces,
        none narrower than ``min_piece_m``, within ``max_coverage``.

        Raises:
            FieldError: naming the ``patch.*`` key that the mask breaks.
        """
        if self.cfg.mask == "full":
            return
        if self.coverage() > self.cfg.max_coverage + 1e-6:
            raise FieldError("patch.max_coverage", f"mask covers {self.coverage():.1%} of the face, above "
                                                   f"max_coverage {self.cfg.max_coverage:.0%}")
        pieces = self.pieces()
        if self.cfg.max_pieces is not None and len(pieces) > self.cfg.max_pieces:
            raise FieldError("patch.max_pieces", f"the mask has {len(pieces)} separate pieces, above max_pieces "
                                                 f"{self.cfg.max_pieces}; use fewer, larger stickers")
        narrow = [p for p in pieces if p["short_side_m"] < self.cfg.min_piece_m - 1e-6]
        if narrow:
            raise FieldError("patch.min_piece_m", f"{len(narrow)} of the mask's pieces are narrower than "
                                                  f"min_piece_m {self.cfg.min_piece_m:g} m (the narrowest: "
                                                  f"{min(p['short_side_m'] for p in narrow):.3f} m)")

    def sticker_mask(self, stickers_m: list) -> torch.Tensor:
        """(1, H, W) mask of stickers given as top-left corners (x, y) of ``sticker_size_m`` rectangles,
        or as rectangles (x, y, w, h), in metres."""
        h, w = self.hw
        ppm_x, ppm_y = w / self.slot.size_m[0], h / self.slot.size_m[1]
        m = torch.zeros((1, h, w), device=self.outline.device)
        for x, y, sw, sh in sticker_rects(stickers_m, self.cfg.sticker_size_m):
            kw, kh = sticker_pixels((sw, sh), ppm_x, ppm_y)
            x0, y0 = int(round(x * ppm_x)), int(round(y * ppm_y))
            m[:, max(y0, 0):y0 + kh, max(x0, 0):x0 + kw] = 1.0
        return m

    def image(self) -> torch.Tensor:
        """(3, H, W) colours in [0, 1]."""
        return self.colours.clamp(0, 1)

    def composite(self) -> torch.Tensor:
        """(3, H, W) the slot as printed: patch inside the mask, the base elsewhere."""
        return self.base * (1 - self.mask) + self.image() * self.mask

    def rgba(self) -> np.ndarray:
        """(H, W, 4) uint8 for :meth:`Simulator.set_patch`: colours with the mask as alpha."""
        rgba = torch.cat([self.image(), self.mask], 0).detach().cpu().permute(1, 2, 0).numpy()
        return (rgba * 255 + 0.5).astype(np.uint8)

    def print_pixels(self) -> tuple[np.ndarray, np.ndarray]:
        """(patch RGB, mask) uint8 at ``print_dpi``: what goes to the printer."""
        w_m, h_m = self.slot.size_m
        px_per_m = self.cfg.print_dpi / 0.0254
        size = (max(1, int(round(w_m * px_per_m))), max(1, int(round(h_m * px_per_m))))
        img = (self.image().detach().cpu().permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        mask = (self.mask[0].detach().cpu().numpy() * 255 + 0.5).astype(np.uint8)
        return (cv2.resize(img, size, interpolation=cv2.INTER_LINEAR),
                cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST))


def sticker_rects(stickers_m: list, size_m: tuple[float, float]) -> list[tuple[float, float, float, float]]:
    """Stickers as rectangles (x, y, w, h) in metres; top-left corners (x, y) get the size ``size_m``."""
    return [(s[0], s[1], s[2], s[3]) if len(s) == 4 else (s[0], s[1], size_m[0], size_m[1]) for s in stickers_m]


def sticker_pixels(size_m: tuple[float, float], ppm_x: float, ppm_y: float) -> tuple[int, int]:
    """Sticker size in patch pixels, rounded down so the mask never exceeds the physical size."""
    return max(1, int(size_m[0] * ppm_x + 1e-6)), max(1, int(size_m[1] * ppm_y + 1e-6))


def place_stickers(saliency: torch.Tensor, patch: Patch, count: int, size_m: tuple[float, float],
                   max_coverage: float) -> list[tuple[float, float]]:
    """Greedy RP2-style sticker placement: rectangles over the most salient, non-overlapping areas.

    Args:
        saliency: (H, W) non-negative importance of each patch pixel (e.g. accumulated |gradient|).

    Returns:
        top-left corners in metres; the total sticker area stays within ``max_coverage`` of the outline.
    """
    h, w = patch.hw
    ppm_x, ppm_y = w / patch.slot.size_m[0], h / patch.slot.size_m[1]
    kw, kh = sticker_pixels(size_m, ppm_x, ppm_y)
    allowed_area = max_coverage * float(patch.outline.sum())
    count = min(count, max(1, int(allowed_area // (kw * kh))))
    sal = (saliency * patch.outline[0]).detach().cpu().numpy().astype(np.float64)
    inside = patch.outline[0].cpu().numpy()
    # box sums of saliency and of the outline for every top-left position
    integral = cv2.integral(sal)
    integral_in = cv2.integral(inside.astype(np.float64))

    def box_sum(ii: np.ndarray) -> np.ndarray:
        return ii[kh:, kw:] - ii[:-kh, kw:] - ii[kh:, :-kw] + ii[:-kh, :-kw]

    score = box_sum(integral)
    full_inside = box_sum(integral_in) >= kw * kh * 0.98
    taken = np.zeros((h, w), bool)
    chosen: list[tuple[float, float]] = []
    for _ in range(count):
        ok = full_inside.copy()
        # reject positions overlapping taken pixels
        taken_ii = cv2.integral(taken.astype(np.float64))
        ok &= box_sum(taken_ii) == 0
        if not ok.any():
            break
        s = np.where(ok, score, -np.inf)
        y, x = np.unravel_index(int(np.argmax(s)), s.shape)
        taken[y:y + kh, x:x + kw] = True
        chosen.append((float(x / ppm_x), float(y / ppm_y)))  # plain floats: they go into checkpoints
    return chosen


#: longest strip of merged grid cells: it fits across an A4 or Letter sheet with margins and bleed
MAX_STRIP_M = 0.15


def place_grid_stickers(saliency: torch.Tensor, patch: Patch, cell_m: tuple[float, float],
                        max_coverage: float) -> list[tuple[float, float, float, float]]:
    """The most salient cells of a grid over the face, within the coverage budget, as cuttable stickers.

    The grid of ``cell_m`` rectangles starts at the slot's top-left corner; only cells wholly inside the
    outline count. Chosen cells that touch in a row merge into one sticker, at most ``MAX_STRIP_M`` long.

    Args:
        saliency: (H, W) non-negative importance of each patch pixel.

    Returns:
        stickers (x, y, w, h) in metres, row by row.
    """
    h, w = patch.hw
    ppm_x, ppm_y = w / patch.slot.size_m[0], h / patch.slot.size_m[1]
    kw, kh = sticker_pixels(cell_m, ppm_x, ppm_y)
    ny, nx = h // kh, w // kw
    if ny == 0 or nx == 0:
        raise FieldError("patch.sticker_size_m", f"grid cells of {cell_m[0]} x {cell_m[1]} m do not fit the "
                                                 f"{patch.slot.size_m[0]} x {patch.slot.size_m[1]} m slot")

    def cell_sums(x: torch.Tensor) -> np.ndarray:
        return x[:ny * kh, :nx * kw].reshape(ny, kh, nx, kw).sum((1, 3)).detach().cpu().numpy()

    inside = cell_sums(patch.outline[0]) >= 0.98 * kw * kh
    score = np.where(inside, cell_sums(saliency.to(patch.outline)), -np.inf)
    budget = int(max_coverage * float(patch.outline.sum()) // (kw * kh))
    if budget == 0 or not inside.any():
        raise FieldError("patch.sticker_size_m", f"not one {cell_m[0]} x {cell_m[1]} m cell fits on the face within "
                                                 f"max_coverage {max_coverage:.0%}")
    order = np.argsort(-score, axis=None, kind="stable")[:min(budget, int(inside.sum()))]
    chosen = np.zeros((ny, nx), bool)
    chosen.flat[order] = True
    longest = max(1, int(MAX_STRIP_M * ppm_x + 1e-6) // kw)  # cells per strip
    out = []
    for r in range(ny):
        c = 0
        while c < nx:
            if not chosen[r, c]:
                c += 1
                continue
            start = c
            while c < nx and chosen[r, c] and c - start < longest:
                c += 1
            out.append((float(start * kw / ppm_x), float(r * kh / ppm_y), float((c - start) * kw / ppm_x),
                        float(kh / ppm_y)))
    return out


def total_variation(img: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute difference between neighbouring pixels of (C, H, W), inside ``mask``."""
    dx = (img[:, :, 1:] - img[:, :, :-1]).abs()
    dy = (img[:, 1:, :] - img[:, :-1, :]).abs()
    if mask is None:
        return dx.mean() + dy.mean()
    mx = mask[:, :, 1:] * mask[:, :, :-1]
    my = mask[:, 1:, :] * mask[:, :-1, :]
    return (dx * mx).sum() / (3 * mx.sum() + 1e-8) + (dy * my).sum() / (3 * my.sum() + 1e-8)

