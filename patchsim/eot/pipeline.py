"""The EOT pipeline: place a patch on scene frames under sampled physical conditions.

Order of effects, as in the world: patch colours -> printer profile and print error -> placement
on the slot by homography (with geometric jitter) -> the slot's light (shade) -> occluders ->
camera: exposure, contrast, gamma, white balance -> haze -> blur -> sensor noise -> compression.

For speed the pipeline can cut a square window (``crop_px``) around the slot out of each frame: the
detector is fully convolutional, so the scores near the sign barely depend on far-away pixels,
and a 256 px window costs a fraction of a full frame. Held-out evaluation uses full frames.

When gradients are wanted, the clean frames go through the camera without autograd
(:meth:`EOT.background`) and only a window around the slot is rendered again with the patch and
differentiated; its interior replaces the frame there, so the pixels are those of one full pass.
Contrast pivots on the clean frame's mean (the patch does not move the camera's exposure), which
is what lets a clean background be rendered once and reused by several optimizer steps
(:mod:`patchsim.eot.pool`).

>>> eot = EOT(EOTConfig())                                  # doctest: +SKIP
>>> params = eot.sample(bank, 8, torch.Generator().manual_seed(0))
>>> batch = eot.render(patch.image(), patch.mask, params, bank)
>>> batch.images.shape                                      # (8, 3, 256, 256)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from patchsim.config import param
from patchsim.eot import ops
from patchsim.eot.printer import PrinterProfile
from patchsim.eot.scenes import SceneBank
from patchsim.eot.transforms import (
    Blur,
    Compression,
    Haze,
    Lighting,
    Occlusion,
    Placement,
    PrinterError,
    SensorNoise,
)


@dataclass
class EOTConfig:
    crop_px: int = param(256, unit="px", range=(0, 4096), help="window around the slot; 0 = full frames")
    background_reuse: float = param(1.0, range=(1.0, 1000.0),
                                    help="optimizer steps reuse each clean background this many times (1 = never)")
    background_pool: int = param(48, range=(1, 100000), help="backgrounds rendered at once when reused")
    placement: Placement = param(default_factory=Placement)
    printer_error: PrinterError = param(default_factory=PrinterError)
    occlusion: Occlusion = param(default_factory=Occlusion)
    lighting: Lighting = param(default_factory=Lighting)
    haze: Haze = param(default_factory=Haze)
    blur: Blur = param(default_factory=Blur)
    noise: SensorNoise = param(default_factory=SensorNoise)
    compression: Compression = param(default_factory=Compression)


@dataclass
class EOTBatch:
    """Rendered samples.

    Attributes:
        images: (B, 3, S, S) in [0, 1] (S = crop size, or the frame size for full frames).
        boxes: (B, 4) xyxy of the slot's real outline in the rendered images (the object box).
        corners: (B, 4, 2) the slot corners in the rendered images.
    """

    images: torch.Tensor
    boxes: torch.Tensor
    corners: torch.Tensor


@dataclass
class Background:
    """Clean frames through the camera, ready for a patch window to be pasted in.

    Attributes:
        images: (B, 3, S, S) in [0, 1], no patch and no occluder.
        pivot: (B,) the mean each sample's contrast change pivots on (of the clean frame).
        scene, origin: (B,) and (B, 2) the scenes and crop origins it was rendered for; a render
            checks them against its params.
    """

    images: torch.Tensor
    pivot: torch.Tensor
    scene: torch.Tensor
    origin: torch.Tensor

    def select(self, index: torch.Tensor) -> Background:
        return Background(self.images[index.to(self.images.device)], self.pivot[index.to(self.pivot.device)],
                          self.scene[index], self.origin[index])

    def check(self, params: dict, out_hw: tuple[int, int]) -> None:
        """Raise ValueError unless this background was rendered for ``params``' samples and frame size."""
        if tuple(self.images.shape[-2:]) != tuple(out_hw) or not torch.equal(self.scene.cpu(), params["scene"].cpu()) \
                or not torch.equal(self.origin.cpu(), params["crop"]["origin"].cpu()):
            raise ValueError("background rendered for other samples (scenes, crop windows or size differ from params)")


@dataclass
class EOT:
    cfg: EOTConfig = field(default_factory=EOTConfig)
    profile: PrinterProfile | None = None

    # ------------------------------------------------------------------ sampling

    def sample(self, bank: SceneBank, batch: int, gen: torch.Generator, full_frame: bool = False,
               scenes: torch.Tensor | None = None) -> dict:
        """Draw the parameters of ``batch`` samples (CPU tensors), replayable with :meth:`render`."""
        c = self.cfg
        scene = scenes if scenes is not None else torch.randint(0, len(bank), (batch,), generator=gen)
        corners = bank.corners[scene].cpu().float()
        params = {"scene": scene, "placement": c.placement.sample(batch, gen, corners),
                  "printer_error": c.printer_error.sample(batch, gen), "occlusion": c.occlusion.sample(batch, gen),
                  "lighting": c.lighting.sample(batch, gen),
                  "haze": c.haze.sample(batch, gen, bank.distance_m[scene].cpu()),
                  "blur": c.blur.sample(batch, gen), "noise": c.noise.sample(batch, gen),
                  "compression": c.compression.sample(batch, gen)}
        h, w = bank.hw
        size = 0 if full_frame else c.crop_px
        if size and size < min(h, w):
            q = params["placement"]["corners"]
            lo, hi = q.min(1).values, q.max(1).values  # (B, 2)
            lim = torch.tensor([w - size, h - size], dtype=torch.float32)
            start_min = (hi - size).clamp(min=0)
            start_max = torch.minimum(lo, lim).clamp(min=0)
            start_min = torch.minimum(start_min, start_max)
            u = torch.rand(batch, 2, generator=gen)
            origin = (start_min + u * (start_max - start_min)).floor()
            origin = torch.maximum(origin, start_min.ceil()).clamp(max=start_max.floor()).long()
            params["crop"] = {"origin": origin, "size": torch.full((batch,), size, dtype=torch.long)}
        else:
            params["crop"] = {"origin": torch.zeros(batch, 2, dtype=torch.long),
                              "size": torch.zeros(batch, dtype=torch.long)}
        return params

    def resample_patch(self, params: dict, bank: SceneBank, gen: torch.Generator) -> dict:
        """``params`` with fresh placement, print error and occluder (what happens on the slot); the scene,
        window and camera stay. For samples that reuse a rendered :class:`Background`."""
        c = self.cfg
        b = int(params["scene"].shape[0])
        corners = bank.corners[params["scene"]].cpu().float()
        return {**params, "placement": c.placement.sample(b, gen, corners),
                "printer_error": c.printer_error.sample(b, gen), "occlusion": c.occlusion.sample(b, gen)}

    # ------------------------------------------------------------------ rendering

    def render(self, colours: torch.Tensor | None, mask: torch.Tensor | None, params: dict, bank: SceneBank,
               device: str | torch.device | None = None, background: Background | None = None) -> EOTBatch:
        """Render sampled conditions, with the patch (``colours`` (3, h, w), ``mask`` (1, h, w)) or without it
        (``colours=None``: the clean slot under the same conditions).

        ``background``: the clean frames of these samples through the camera (:meth:`background`),
        rendered earlier and reused; only the window around the slot is then rendered anew.
        """
        device = torch.device(device) if device is not None else bank.images.device
        scene = params["scene"].to(bank.images.device)
        b = int(scene.shape[0])
        out_hw = self._out_hw(params, bank)
        origin = params["crop"]["origin"].to(device)
        corners = params["placement"]["corners"].to(device) - origin[:, None, :].float()
        slot_hw = mask.shape[-2:] if mask is not None else (64, int(64 * bank.slot_size_m[0] / bank.slot_size_m[1]))
        H = ops.quad_homography((slot_hw[1], slot_hw[0]), corners)

        occ = Occlusion.alpha(params["occlusion"], slot_hw, device)  # (B, 1, h, w)
        seen = None
        if colours is not None:
            seen = colours[None].to(device)
            if self.profile is not None:
                seen = self.profile.apply(seen)
            seen = self.cfg.printer_error.apply(seen.expand(b, -1, -1, -1), {k: v.to(device) for k, v in
                                                                              params["printer_error"].items()})
            cover = torch.cat([mask[None].to(device).expand(b, -1, -1, -1), occ], 1)
        else:
            cover = torch.cat([torch.zeros_like(occ), occ], 1)
        occ_col = params["occlusion"]["colour"].to(device)
        out_h, out_w = out_hw
        roi = _roi(corners, out_hw)
        grid = ops.patch_grid(H, roi.origin.float(), (roi.h, roi.w), slot_hw)
        # colours and coverage warped apart: only the colours carry gradients
        warped = ops.sample_patch(seen, grid) if seen is not None else None
        cover = ops.sample_patch(cover, grid)
        # light on the slot, window only, read straight from the bank's frames
        shade = _cut(bank.shade, scene, origin + roi.origin, roi.h, roi.w).to(device).float()
        differentiable = torch.is_grad_enabled() and warped is not None and warped.requires_grad
        if not differentiable or roi.area > 0.4 * out_h * out_w or not roi.aligned:
            # nothing to differentiate, the slot fills much of the frame, or the window cannot align
            # with the frame's JPEG blocks: one pass over everything
            images, pivot, noise = self._clean_frames(params, bank, device)
            composed = _paste(images, _blend(_window(images, roi), shade, warped, cover, occ_col), roi.origin)
            images = self._camera(composed, params, pivot, noise)
        else:
            # the clean frames through the camera without autograd (or reused), and a differentiable
            # pass over the window around the slot only; the window's interior replaces the frame there
            if background is None:
                background = self.background(params, bank, device)
            background.check(params, out_hw)
            region = _cut(bank.images, scene, origin + roi.origin, roi.h, roi.w).to(device=device,
                                                                                    dtype=torch.float32) / 255.0
            roi_in = _blend(region, shade, warped, cover, occ_col)
            noise = self.cfg.noise.noise(params["noise"], (3, roi.h, roi.w), device, origin=roi.origin)
            roi_out = self._camera(roi_in, params, background.pivot, noise)
            images = _paste(background.images.to(device), roi_out, roi.origin, inner=ROI_EDGE_PX)
        boxes = outline_boxes(H, bank.outline_uv, slot_hw)
        return EOTBatch(images, boxes, corners)

    @torch.no_grad()
    def background(self, params: dict, bank: SceneBank, device: str | torch.device | None = None) -> Background:
        """The samples' clean frames (no patch, no occluder) through the camera, and their contrast pivots."""
        device = torch.device(device) if device is not None else bank.images.device
        images, pivot, noise = self._clean_frames(params, bank, device)
        return Background(self._camera(images, params, pivot, noise), pivot, params["scene"].cpu(),
                          params["crop"]["origin"].cpu())

    @staticmethod
    def _out_hw(params: dict, bank: SceneBank) -> tuple[int, int]:
        size = int(params["crop"]["size"][0])
        return (size, size) if size else bank.hw

    def _clean_frames(self, params: dict, bank: SceneBank,
                      device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The samples' scene frames (or crop windows of them) (B, 3, S, S) in [0, 1], the contrast pivots (B,)
        of these clean frames, and their sensor noise (B, 3, S, S)."""
        scene = params["scene"].to(bank.images.device)
        size = int(params["crop"]["size"][0])
        imgs = _cut(bank.images, scene, params["crop"]["origin"].to(device), size, size) if size else bank.images[scene]
        images = imgs.to(device=device, dtype=torch.float32).div_(255.0)
        pivot = self.cfg.lighting.pivot(images, params["lighting"]).detach()
        return images, pivot, self.cfg.noise.noise(params["noise"], tuple(images.shape[1:]), device)

    def _camera(self, x: torch.Tensor, params: dict, pivot: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Camera and atmosphere effects on (B, 3, H, W) images (or windows of them); the result is in [0, 1]."""
        x = self.cfg.lighting.apply(x, params["lighting"], mean=pivot)
        x = self.cfg.haze.apply(x, params["haze"])
        x = self.cfg.blur.apply(x, params["blur"])
        x = self.cfg.noise.apply(x, params["noise"], noise=noise)
        return self.cfg.compression.apply(x.clamp(0, 1), params["compression"])


#: the differentiable window reaches this far past the slot. The patch changes pixels up to the blur
#: radius (3) past it, and JPEG spreads that over their 8 px block (7 more); the outer ROI_EDGE_PX of the
#: window are not pasted: 3 + 7 + 8 = 18
ROI_MARGIN_PX = 18
#: values within one JPEG block of a window edge are inexact (the blur there sees the window's padding,
#: and JPEG spreads that over the block) and not pasted: the frame keeps its own
ROI_EDGE_PX = 8


@dataclass
class _Roi:
    origin: torch.Tensor  # (B, 2) long (x, y), multiples of 8 (JPEG blocks align with the frame's)
    h: int  # common window height and width, multiples of 8 or the frame's own
    w: int
    aligned: bool = True  # False when a window start is off the 8 px grid: its JPEG blocks would not match

    @property
    def area(self) -> int:
        return self.h * self.w


def _roi(corners: torch.Tensor, frame_hw: tuple[int, int]) -> _Roi:
    """Block-aligned windows around each quad, one size for the batch, inside the frame."""
    h, w = frame_hw
    lo = (corners.detach().min(1).values - ROI_MARGIN_PX).floor()
    hi = (corners.detach().max(1).values + ROI_MARGIN_PX).ceil()
    start = (torch.div(lo, 8, rounding_mode="floor") * 8).long().clamp(min=0)
    need = ((hi - start).max(0).values + 7) // 8 * 8  # (2,) x and y extents
    size_w, size_h = min(int(need[0]), w), min(int(need[1]), h)
    start = torch.minimum(start, torch.tensor([w - size_w, h - size_h], device=start.device))
    return _Roi(start, size_h, size_w, aligned=bool((start % 8 == 0).all()))


def _cut(source: torch.Tensor, index, origin: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, C, h, w): ``source[index[i], :, y:y + h, x:x + w]`` for each sample, ``origin`` (B, 2) as (x, y)."""
    index = index.tolist() if torch.is_tensor(index) else list(index)
    return torch.stack([source[k, :, y:y + h, x:x + w] for k, (x, y) in zip(index, origin.tolist())])


def _window(x: torch.Tensor, roi: _Roi) -> torch.Tensor:
    """(B, C, h, w) windows of (B, C, H, W) at each sample's origin."""
    return _cut(x, range(x.shape[0]), roi.origin, roi.h, roi.w)


def _paste(frame: torch.Tensor, win: torch.Tensor, origin: torch.Tensor, inner: int = 0) -> torch.Tensor:
    """``frame`` with each window (B, C, sh, sw) written at its origin; ``inner`` px of window edges that are
    not frame edges keep the frame's values. One scatter, so gradients flow to ``win`` cheaply."""
    b, c, h, w = frame.shape
    sh, sw = win.shape[-2:]
    dev = frame.device
    oy, ox = origin[:, 1:2].to(dev), origin[:, 0:1].to(dev)
    ly, lx = torch.arange(sh, device=dev), torch.arange(sw, device=dev)
    keep_y = ((ly[None] >= inner) | (oy == 0)) & ((ly[None] < sh - inner) | (oy + sh == h))
    keep_x = ((lx[None] >= inner) | (ox == 0)) & ((lx[None] < sw - inner) | (ox + sw == w))
    keep = (keep_y[:, :, None] & keep_x[:, None, :]).reshape(b, 1, sh * sw)
    index = ((ly[None, :, None] + oy[:, :, None]) * w + (lx[None, None, :] + ox[:, :, None]))
    index = index.reshape(b, 1, sh * sw).expand(b, c, sh * sw)
    flat = frame.reshape(b, c, h * w)
    values = torch.where(keep, win.reshape(b, c, sh * sw), flat.gather(2, index))
    return flat.scatter(2, index, values).reshape(b, c, h, w)


def _blend(region: torch.Tensor, light: torch.Tensor, warped: torch.Tensor | None, cover: torch.Tensor,
           occ_colour: torch.Tensor) -> torch.Tensor:
    """Patch (lit by ``light``) and occluder over ``region``; all (B, ., S, S) and aligned.

    ``warped`` (B, 3, S, S): the patch's colours (None: no patch); ``cover`` (B, 2, S, S): how much of each
    pixel the patch and the occluder cover.
    """
    if warped is not None:
        region = torch.lerp(region, light * warped, cover[:, 0:1])
    return torch.lerp(region, light * occ_colour.to(region)[:, :, None, None], cover[:, 1:2])


def outline_boxes(H: torch.Tensor, outline_uv, slot_hw: tuple[int, int]) -> torch.Tensor:
    """(B, 4) image boxes of the slot's outline (normalized (K, 2)) under patch->image homographies."""
    h, w = slot_hw
    pts = torch.as_tensor(outline_uv, dtype=H.dtype, device=H.device) * torch.tensor([w, h], dtype=H.dtype,
                                                                                         device=H.device)
    hom = torch.cat([pts, torch.ones(len(pts), 1, dtype=H.dtype, device=H.device)], 1)  # (K, 3)
    img = torch.einsum("bij,kj->bki", H, hom)
    xy = img[..., :2] / img[..., 2:3]
    return torch.cat([xy.min(1).values, xy.max(1).values], 1)

