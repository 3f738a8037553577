"""The EOT pipeline: place a patch on scene frames under sampled physical conditions.

Order of effects, as in the world: patch colours -> printer profile and print error -> placement
on the slot by homography (with geometric jitter) -> the slot's light (shade) -> occluders ->
camera: exposure, contrast, gamma, white balance -> haze -> blur -> sensor noise -> compression.

For speed the pipeline can cut a square window (``crop_px``) around the slot out of each frame: the
detector is fully convolutional, so the scores near the sign barely depend on far-away pixels,
and a 256 px window costs a fraction of a full frame. Held-out evaluation uses full frames.

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
            origin = (start_min + u * (start_max - start_min)).floor().long()
            params["crop"] = {"origin": origin, "size": torch.full((batch,), size, dtype=torch.long)}
        else:
            params["crop"] = {"origin": torch.zeros(batch, 2, dtype=torch.long),
                              "size": torch.zeros(batch, dtype=torch.long)}
        return params

    # ------------------------------------------------------------------ rendering

    def render(self, colours: torch.Tensor | None, mask: torch.Tensor | None, params: dict, bank: SceneBank,
               device: str | torch.device | None = None) -> EOTBatch:
        """Render sampled conditions, with the patch (``colours`` (3, h, w), ``mask`` (1, h, w)) or without it
        (``colours=None``: the clean slot under the same conditions)."""
        device = torch.device(device) if device is not None else bank.images.device
        scene = params["scene"].to(bank.images.device)
        b = int(scene.shape[0])
        h, w = bank.hw
        size = int(params["crop"]["size"][0])
        origin = params["crop"]["origin"].to(device)
        if size:
            idx_y = (origin[:, 1:2] + torch.arange(size, device=device)[None]).to(bank.images.device)
            idx_x = (origin[:, 0:1] + torch.arange(size, device=device)[None]).to(bank.images.device)
            rows = torch.arange(b, device=bank.images.device)[:, None, None]
            imgs = bank.images[scene][rows, :, idx_y[:, :, None], idx_x[:, None, :]].permute(0, 3, 1, 2)
            shade = bank.shade[scene][rows, :, idx_y[:, :, None], idx_x[:, None, :]].permute(0, 3, 1, 2)
            out_hw = (size, size)
        else:
            imgs, shade = bank.images[scene], bank.shade[scene]
            out_hw = (h, w)
        images = imgs.to(device).float() / 255.0
        shade = shade.to(device).float()
        corners = params["placement"]["corners"].to(device) - origin[:, None, :].float()
        slot_hw = mask.shape[-2:] if mask is not None else (64, int(64 * bank.slot_size_m[0] / bank.slot_size_m[1]))
        H = ops.quad_homography((slot_hw[1], slot_hw[0]), corners)

        occ = Occlusion.alpha(params["occlusion"], slot_hw, device)  # (B, 1, h, w)
        if colours is not None:
            seen = colours[None].to(device)
            if self.profile is not None:
                seen = self.profile.apply(seen)
            seen = self.cfg.printer_error.apply(seen.expand(b, -1, -1, -1), {k: v.to(device) for k, v in
                                                                              params["printer_error"].items()})
            layers = torch.cat([seen, mask[None].to(device).expand(b, -1, -1, -1), occ], 1)
        else:
            layers = torch.cat([torch.zeros(b, 4, *slot_hw, device=device), occ], 1)
        # warp only a window around the quad: the same size for the whole batch
        lo = corners.min(1).values.floor() - 1
        hi = corners.max(1).values.ceil() + 1
        extent = int((hi - lo).max().clamp(min=2, max=max(out_hw)))
        win_origin = lo.long()
        warped = ops.warp_patch(layers, H, win_origin.float(), (extent, extent))
        occ_col = params["occlusion"]["colour"].to(device)
        images = _composite(images, shade, warped, win_origin, occ_col, colours is not None)

        images = self.cfg.lighting.apply(images, params["lighting"])
        images = self.cfg.haze.apply(images, params["haze"])
        images = self.cfg.blur.apply(images, params["blur"])
        images = self.cfg.noise.apply(images, params["noise"])
        images = self.cfg.compression.apply(images.clamp(0, 1), params["compression"])
        boxes = outline_boxes(H, bank.outline_uv, slot_hw)
        return EOTBatch(images.clamp(0, 1), boxes, corners)


def _composite(images: torch.Tensor, shade: torch.Tensor, warped: torch.Tensor, origin: torch.Tensor,
               occ_colour: torch.Tensor, with_patch: bool) -> torch.Tensor:
    """Put the warped patch (lit by ``shade``) and the occluder into each image window."""
    out = images.clone()
    _, _, H, W = images.shape
    s = warped.shape[-1]
    for i in range(images.shape[0]):
        x0, y0 = int(origin[i, 0]), int(origin[i, 1])
        xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + s, W), min(y0 + s, H)
        if xb <= xa or yb <= ya:
            continue
        win = warped[i, :, ya - y0:yb - y0, xa - x0:xb - x0]
        region = images[i, :, ya:yb, xa:xb]
        light = shade[i, :, ya:yb, xa:xb]
        if with_patch:
            a = win[3:4]
            region = region * (1 - a) + light * win[:3] * a
        o = win[4:5]
        region = region * (1 - o) + light * occ_colour[i][:, None, None] * o
        out[i, :, ya:yb, xa:xb] = region
    return out


def outline_boxes(H: torch.Tensor, outline_uv, slot_hw: tuple[int, int]) -> torch.Tensor:
    """(B, 4) image boxes of the slot's outline (normalized (K, 2)) under patch->image homographies."""
    h, w = slot_hw
    pts = torch.as_tensor(outline_uv, dtype=H.dtype, device=H.device) * torch.tensor([w, h], dtype=H.dtype,
                                                                                         device=H.device)
    hom = torch.cat([pts, torch.ones(len(pts), 1, dtype=H.dtype, device=H.device)], 1)  # (K, 3)
    img = torch.einsum("bij,kj->bki", H, hom)
    xy = img[..., :2] / img[..., 2:3]
    return torch.cat([xy.min(1).values, xy.max(1).values], 1)

