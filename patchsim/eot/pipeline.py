"""The EOT pipeline: place a patch on scene frames under sampled physical conditions.

Order of effects, as in the world: patch colours -> printer profile and print error -> placement
on the slot by homography (with geometric jitter) -> the slot's light (shade) -> occluders ->
camera: exposure, contrast, gamma, white balance -> haze -> blur -> sensor noise -> compression.

For speed the pipeline can cut a square window (``crop_px``) around the slot out of each frame: the
detector is fully convolutional, so the scores near the sign barely depend on far-away pixels,
and a 256 px window costs a fraction of a full frame. Held-out evaluation uses full frames.

When gradients are wanted, the clean frames go through the camera without autograd
(:meth:`EOT.background`) and only a window around the slot is rendered again with the patch and
differentiated. The window covers whole JPEG blocks and carries the blur's reach of real context on
each side, so it replaces the frame there whole and the pixels are those of one full pass. Its camera
is one autograd step (:mod:`patchsim.eot.window`).
Contrast pivots on the clean frame's mean (the patch does not move the camera's exposure), which
is what lets a clean background be rendered once and reused by several optimizer steps
(:mod:`patchsim.eot.pool`).

>>> eot = EOT(EOTConfig())                                  # doctest: +SKIP
>>> params = eot.sample(bank, 8, torch.Generator().manual_seed(0))
>>> batch = eot.render(patch.image(), patch.mask, params, bank)
>>> batch.images.shape                                      # (8, 3, 256, 256)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from patchsim.config import FieldError, param
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
    select,
)
from patchsim.eot.window import camera_window


@dataclass
class EOTConfig:
    crop_px: int = param(256, unit="px", range=(0, 4096), help="window around the slot; 0 = full frames")
    background_reuse: float = param(1.0, range=(1.0, 1000.0),
                                    help="optimizer steps reuse each clean background this many times (1 = never)")
    background_pool: int = param(48, range=(1, 100000), help="backgrounds rendered at once when reused")
    drive_frames: int = param(1, range=(1, 64),
                              help="draw the samples in groups of this many frames of one drive (one randomized "
                                   "scene of the bank), for the drive-level losses; 1 = frames drawn one by one")
    placement: Placement = param(default_factory=Placement)
    printer_error: PrinterError = param(default_factory=PrinterError)
    occlusion: Occlusion = param(default_factory=Occlusion)
    lighting: Lighting = param(default_factory=Lighting)
    haze: Haze = param(default_factory=Haze)
    blur: Blur = param(default_factory=Blur)
    noise: SensorNoise = param(default_factory=SensorNoise)
    compression: Compression = param(default_factory=Compression)
    patch_filter: str = param("bilinear", help="how the image reads the patch: bilinear (the few texels nearest "
                                               "each pixel) or footprint (each pixel averages the patch over its "
                                               "footprint, as a renderer's mipmaps and a camera's pixels do)")

    def __post_init__(self) -> None:
        if self.patch_filter not in ops.PATCH_FILTERS:
            raise FieldError("patch_filter", f"patch_filter must be {' or '.join(ops.PATCH_FILTERS)}, "
                                             f"not {self.patch_filter!r}")


@dataclass
class EOTBatch:
    """Rendered samples.

    Attributes:
        images: (B, 3, S, S) in [0, 1] (S = crop size, or the frame size for full frames).
        boxes: (B, 4) xyxy of the slot's real outline in the rendered images (the object box).
        corners: (B, 4, 2) the slot corners in the rendered images.
        ground: when the bank has them (:attr:`SceneBank.ground`), each sample's road-plane homography to the
            rendered image (``H`` (B, 3, 3)), and the car's ``lane_offset_m``, ``heading_rad`` and
            ``lane_width_m`` (B,).
        drive: (B,) long when the samples were drawn in drives (``EOTConfig.drive_frames`` > 1): samples with
            the same value are frames of one drive past the slot. None when they were drawn one by one.
    """

    images: torch.Tensor
    boxes: torch.Tensor
    corners: torch.Tensor
    ground: dict[str, torch.Tensor] | None = None
    drive: torch.Tensor | None = None


@dataclass
class Layout:
    """Where the slot lies in each sample's rendered image: the geometry of a batch's params, apart from any
    pixel (:meth:`EOT.layout`). A :class:`~patchsim.eot.pool.BackgroundPool` works out those of all its steps
    at once, which costs a fraction of doing it a step at a time.

    Attributes:
        slot_hw: (h, w) of the patch (its mask) the layout is for.
        corners: (B, 4, 2) the slot's corners in the rendered images.
        H: (B, 3, 3) patch -> rendered image homographies.
        boxes: (B, 4) xyxy of the slot's real outline in the rendered images.
        occluders: the samples' occluder params; ``occlusion`` (B, 1, h, w) their coverage in slot coordinates,
            made here for layouts of up to ``LAYOUT_OCCLUSION_MAX`` values, else by each :meth:`part`.
        rois: the block-aligned windows around the slots, one per ``batch`` consecutive samples.
        batch: samples per window (all of them when None).
    """

    slot_hw: tuple[int, int]
    corners: torch.Tensor
    H: torch.Tensor
    boxes: torch.Tensor
    occluders: dict[str, torch.Tensor]
    rois: list[_Roi]
    batch: int | None = None
    occlusion: torch.Tensor | None = None

    def __post_init__(self):
        values = int(self.corners.shape[0]) * self.slot_hw[0] * self.slot_hw[1]
        if self.occlusion is None and (len(self.rois) == 1 or values <= LAYOUT_OCCLUSION_MAX):
            self.occlusion = Occlusion.alpha(self.occluders, self.slot_hw, self.corners.device)

    def check(self, params: dict) -> None:
        """Raise ValueError unless this is the layout of ``params``' placement and occluders."""
        if not torch.equal(_slot_corners(params, self.corners.device), self.corners) or not all(
                torch.equal(v.cpu(), params["occlusion"][k].cpu()) for k, v in self.occluders.items()):
            raise ValueError("the background's layout was worked out for other samples (placement or occluders "
                             "differ from params)")

    @property
    def roi(self) -> _Roi:
        """The one window of a layout of one batch."""
        if len(self.rois) != 1:
            raise ValueError(f"a layout of {len(self.rois)} batches has no single window; take one with .part()")
        return self.rois[0]

    def part(self, k: int) -> Layout:
        """The layout of the ``k``-th batch of ``batch`` samples (views)."""
        b = self.batch or int(self.corners.shape[0])
        rows = slice(k * b, (k + 1) * b)
        return Layout(self.slot_hw, self.corners[rows], self.H[rows], self.boxes[rows],
                      {n: v[rows] for n, v in self.occluders.items()}, [self.rois[k]],
                      occlusion=self.occlusion[rows] if self.occlusion is not None else None)


@dataclass
class Background:
    """Clean frames through the camera, ready for a patch window to be pasted in.

    Attributes:
        images: (B, 3, S, S) in [0, 1], no patch and no occluder (until a render writes its window in).
        pivot: (B,) the mean each sample's contrast change pivots on (of the clean frame).
        scene, origin: (B,) and (B, 2) the scenes and crop origins it was rendered for; a render
            checks them against its params.
        kernel: (B, k, k) the samples' blur kernels, kept for the window's render (None: made again there).
        curve: the samples' exposure, contrast and tone curve (:meth:`Lighting.curve
            <patchsim.eot.transforms.Lighting.curve>`), kept likewise.
        layout: the slot's geometry for the params it is served with (None: the render works it out).
        keep_clean: a render keeps the clean pixels of the window it writes, and :meth:`restore` puts them
            back (the frames are a pool's, shared by later steps).
    """

    images: torch.Tensor
    pivot: torch.Tensor
    scene: torch.Tensor
    origin: torch.Tensor
    kernel: torch.Tensor | None = None
    curve: tuple[torch.Tensor, ...] | None = None
    layout: Layout | None = None
    keep_clean: bool = False
    used: bool = False  # a render writes its patch window into ``images``: one render per background
    expired: bool = False  # ``images`` now serve another step
    _clean: tuple[torch.Tensor, torch.Tensor] | None = None  # (windows (B, 3, h, w), origins (B, 2))

    def rows(self, start: int, stop: int, layout: Layout | None = None) -> Background:
        """Samples ``start .. stop - 1``: views of the same frames (a render writes into them), with ``layout``;
        the render keeps the clean pixels it overwrites for :meth:`restore`."""
        rows = slice(start, stop)
        # detached after slicing: the in-place render then puts these frames alone, not the whole pool's, into
        # the step's graph
        return Background(self.images[rows].detach(), self.pivot[rows], self.scene[rows], self.origin[rows],
                          self.kernel[rows] if self.kernel is not None else None,
                          tuple(t[rows] for t in self.curve) if self.curve is not None else None,
                          layout=layout, keep_clean=True)

    def restore(self) -> None:
        """Put back the clean pixels a render wrote its window over (kept with ``keep_clean``)."""
        if self._clean is not None:
            _write_windows(self.images.detach(), *self._clean)
            self._clean = None

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
        """Draw the parameters of ``batch`` samples (CPU tensors), replayable with :meth:`render`.

        The frames are ``scenes`` when given, else drawn from the bank: one by one, or with ``drive_frames``
        > 1 as ``batch / drive_frames`` drives of that many frames each, consecutive, with ``params["drive"]``
        (B,) numbering the drives."""
        c = self.cfg
        drive = None
        if scenes is not None:
            scene = scenes
        elif c.drive_frames > 1:
            scene = draw_drives(bank, batch, c.drive_frames, gen)
            drive = torch.arange(batch) // c.drive_frames
        else:
            scene = torch.randint(0, len(bank), (batch,), generator=gen)
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
        if drive is not None:
            params["drive"] = drive
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

    def printed(self, colours: torch.Tensor) -> torch.Tensor:
        """(3, h, w) or (B, 3, h, w) the colours as printed by the printer profile (the same colours without one)."""
        if self.profile is None:
            return colours
        return self.profile.apply(colours) if colours.dim() == 4 else self.profile.apply(colours[None])[0]

    def render(self, colours: torch.Tensor | None, mask: torch.Tensor | None, params: dict, bank: SceneBank,
               device: str | torch.device | None = None, background: Background | None = None,
               printed: bool = False) -> EOTBatch:
        """Render sampled conditions, with the patch (``colours`` (3, h, w), ``mask`` (1, h, w)) or without it
        (``colours=None``: the clean slot under the same conditions). ``printed``: ``colours`` already went
        through :meth:`printed`. ``colours`` (B, 3, h, w) and ``mask`` (B, 1, h, w) give each sample its own
        patch (an attacker network's batch).

        ``background``: the clean frames of these samples through the camera (:meth:`background`),
        rendered earlier and reused; only the window around the slot is then rendered anew, and written
        into ``background.images`` in place (no copy of the frames), so a background serves one render.
        :meth:`BackgroundPool.draw <patchsim.eot.pool.BackgroundPool.draw>` serves slices of the pool's
        frames, with the slot's geometry worked out already; the next draw puts the clean pixels back, so
        the returned images hold the patch only until then.
        """
        device = torch.device(device) if device is not None else bank.images.device
        scene = params["scene"].to(bank.images.device)
        b = int(scene.shape[0])
        out_hw = self._out_hw(params, bank)
        origin = params["crop"]["origin"].to(device)
        slot_hw = tuple(mask.shape[-2:]) if mask is not None else (64, int(64 * bank.slot_size_m[0] / bank.slot_size_m[1]))
        layout = background.layout if background is not None else None
        if layout is not None:
            layout.check(params)
        if layout is None or layout.slot_hw != slot_hw or layout.corners.device != device:
            layout = self.layout(params, bank, slot_hw, device)
        roi = layout.roi
        seen = None
        if colours is not None:
            seen = colours if printed else self.printed(colours)
            seen = (seen if seen.dim() == 4 else seen[None]).to(device)
            seen = self.cfg.printer_error.apply(seen.expand(b, -1, -1, -1), {k: v.to(device) for k, v in
                                                                              params["printer_error"].items()})
            masks = mask if mask.dim() == 4 else mask[None]
            cover = torch.cat([masks.to(device).expand(b, -1, -1, -1), layout.occlusion], 1)
        else:
            cover = torch.cat([torch.zeros_like(layout.occlusion), layout.occlusion], 1)
        occ_col = params["occlusion"]["colour"].to(device)
        out_h, out_w = out_hw
        differentiable = torch.is_grad_enabled() and seen is not None and seen.requires_grad
        if not differentiable or roi.area > 0.4 * out_h * out_w or not roi.aligned:
            # nothing to differentiate, the slot fills much of the frame, or the window cannot align
            # with the frame's JPEG blocks: one pass over everything
            ys, xs = _pixels(roi.origin[:, 1], roi.h, out_h), _pixels(roi.origin[:, 0], roi.w, out_w)
            warped, cover, shade = self._slot_layer(seen, cover, layout.H, ys, xs, slot_hw, bank, scene, origin,
                                                    self.cfg.patch_filter)
            images, pivot = self._clean_frames(params, bank, device)
            composed = _paste(images, ops.blend(_window(images, roi), shade, warped, cover, occ_col), roi.origin)
            images = self._camera(composed, params, pivot)
        else:
            # the clean frames through the camera without autograd (or reused), and a differentiable pass over
            # the window around the slot only. The window carries the blur's reach of real context on each
            # side (replicated past the frame's edges, as the full pass pads), so every one of its pixels, and
            # every JPEG block, is the full pass's own: the whole window replaces the frame there
            if background is None:
                background = self.background(params, bank, device)
            background.check(params, out_hw)
            if background.expired:
                raise ValueError("this background's frames now serve a later draw of its pool; render each "
                                 "background before drawing the next")
            if background.used:
                raise ValueError("this background was already rendered into (its frames now hold a patch); "
                                 "draw a fresh one for each render")
            background.used = True
            r = ops.BLUR_RADIUS_PX
            ys = _pixels(roi.origin[:, 1], roi.h, out_h, context=r)
            xs = _pixels(roi.origin[:, 0], roi.w, out_w, context=r)
            warped, cover, shade = self._slot_layer(seen, cover, layout.H, ys, xs, slot_hw, bank, scene, origin,
                                                    self.cfg.patch_filter)
            region = _gather(bank.images, scene, ys + origin[:, 1:2], xs + origin[:, 0:1]).to(
                device=device, dtype=torch.float32).div_(255.0)
            roi_out = camera_window(self.cfg, warped, region, shade, cover, occ_col, params, background.pivot,
                                    roi.origin, background.kernel, background.curve)
            frames = background.images.to(device)
            if background.keep_clean:
                background._clean = (_window(frames, roi), roi.origin)
            images = _paste(frames, roi_out, roi.origin)
        drive = params.get("drive")
        return EOTBatch(images, layout.boxes, layout.corners, _ground(bank, scene, origin, device),
                        None if drive is None else drive.to(device))

    def layout(self, params: dict, bank: SceneBank, slot_hw: tuple[int, int], device: str | torch.device | None = None,
               batch: int | None = None) -> Layout:
        """The slot's geometry in the rendered images of ``params``' samples, for a patch of ``slot_hw`` (h, w),
        with one window per ``batch`` consecutive samples (all of them when None)."""
        device = torch.device(device) if device is not None else bank.images.device
        corners = _slot_corners(params, device)
        H = ops.quad_homography((slot_hw[1], slot_hw[0]), corners)
        return Layout(tuple(slot_hw), corners, H, outline_boxes(H, bank.outline_uv, slot_hw), params["occlusion"],
                      _rois(corners, self._out_hw(params, bank), batch or int(corners.shape[0])), batch)

    @torch.no_grad()
    def background(self, params: dict, bank: SceneBank, device: str | torch.device | None = None) -> Background:
        """The samples' clean frames (no patch, no occluder) through the camera, and their contrast pivots.

        Rendered BACKGROUND_CHUNK samples at a time: on the CPU, tensors of many frames are slower per
        frame (each operation's result is fresh memory the system must map and zero): in the optimizer's
        loop a pool of 48 took 199 ms on average in chunks of 12 against 240 ms at once (14 pools each)."""
        n = int(params["scene"].shape[0])
        if n > BACKGROUND_CHUNK:
            parts = [self.background(select(params, torch.arange(i, min(i + BACKGROUND_CHUNK, n))), bank, device)
                     for i in range(0, n, BACKGROUND_CHUNK)]
            return Background(torch.cat([p.images for p in parts]), torch.cat([p.pivot for p in parts]),
                              params["scene"].cpu(), params["crop"]["origin"].cpu(),
                              torch.cat([p.kernel for p in parts]),
                              tuple(torch.cat(t) for t in zip(*(p.curve for p in parts))))
        device = torch.device(device) if device is not None else bank.images.device
        images, pivot = self._clean_frames(params, bank, device)
        kernel = self.cfg.blur.kernel(params["blur"], images)
        curve = self.cfg.lighting.curve(images, params["lighting"], pivot)
        return Background(self._camera(images, params, pivot, kernel=kernel, curve=curve), pivot,
                          params["scene"].cpu(), params["crop"]["origin"].cpu(), kernel, curve)

    @staticmethod
    def _out_hw(params: dict, bank: SceneBank) -> tuple[int, int]:
        size = int(params["crop"]["size"][0])
        return (size, size) if size else bank.hw

    def _clean_frames(self, params: dict, bank: SceneBank,
                      device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The samples' scene frames (or crop windows of them) (B, 3, S, S) in [0, 1] and the contrast pivots
        (B,) of these clean frames."""
        scene = params["scene"].to(bank.images.device)
        size = int(params["crop"]["size"][0])
        imgs = _cut(bank.images, scene, params["crop"]["origin"].to(device), size, size) if size else bank.images[scene]
        images = imgs.to(device=device, dtype=torch.float32).div_(255.0)
        pivot = self.cfg.lighting.pivot(images, params["lighting"]).detach()
        return images, pivot

    @staticmethod
    def _slot_layer(seen: torch.Tensor | None, cover: torch.Tensor, H: torch.Tensor, ys: torch.Tensor,
                    xs: torch.Tensor, slot_hw: tuple[int, int], bank: SceneBank, scene: torch.Tensor,
                    origin: torch.Tensor, patch_filter: str = "bilinear"
                    ) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor]:
        """The patch's colours (B, 3, h, w) (None without a patch), its and the occluder's coverage (B, 2, h, w)
        and the slot's light (B, 3, h, w) at the window pixels ``ys`` (B, h) and ``xs`` (B, w) (of the frame or
        crop window whose top-left is at ``origin`` (B, 2) in the bank's frames), read as ``patch_filter``
        (:class:`EOTConfig`) says."""
        grid = ops.patch_grid(H, xs, ys, slot_hw)
        # colours and coverage warped apart: only the colours carry gradients
        warped, cover = ops.read_patch(seen, cover, grid, patch_filter)
        shade = _gather(bank.shade, scene, ys + origin[:, 1:2], xs + origin[:, 0:1]).to(device=cover.device,
                                                                                        dtype=torch.float32)
        return warped, cover, shade

    def _camera(self, x: torch.Tensor, params: dict, pivot: torch.Tensor, window_origin: torch.Tensor | None = None,
                kernel: torch.Tensor | None = None, curve: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        """Camera and atmosphere effects on (B, 3, H, W) images; the result is in [0, 1].

        ``window_origin`` (B, 2) (x, y): ``x`` holds windows of the frames, whose result starts there, with
        ``ops.BLUR_RADIUS_PX`` px of context on each side, which the blur uses in place of padding and the
        result leaves out. ``kernel``, ``curve``: the samples' blur kernels and tone curves, when already
        made. The differentiable window takes the same steps as one autograd step
        (:func:`patchsim.eot.window.camera_window`)."""
        context = window_origin is not None
        x = self.cfg.lighting.apply(x, params["lighting"], mean=pivot, curve=curve)
        x = self.cfg.haze.apply(x, params["haze"])
        x = self.cfg.blur.apply(x, params["blur"], context=context, kernel=kernel)
        x = self.cfg.noise.apply(x, params["noise"], origin=window_origin)
        return self.cfg.compression.apply(ops.clamp(x, 0, 1), params["compression"])


#: a :class:`Layout` of several batches makes its occluders' coverage at once up to this many values (a pool's
#: 64 steps of 12 samples with 96 x 96 px patches: 7.1 M, 28 MB); larger ones make it a batch at a time
LAYOUT_OCCLUSION_MAX = 16_000_000

#: clean backgrounds are rendered this many samples at a time (:meth:`EOT.background`)
BACKGROUND_CHUNK = 12

#: the patch changes pixels this far past the slot's corners: the blur's reach (ops.BLUR_RADIUS_PX) and one
#: more for bilinear sampling, plus one. The window is then widened to whole JPEG blocks, so every block the
#: patch reaches is inside it
ROI_MARGIN_PX = 5


@dataclass
class _Roi:
    origin: torch.Tensor  # (B, 2) long (x, y), multiples of 8 (JPEG blocks align with the frame's)
    h: int  # common window height and width, multiples of 8 or the frame's own
    w: int
    aligned: bool = True  # False when a window start is off the 8 px grid: its JPEG blocks would not match

    @property
    def area(self) -> int:
        return self.h * self.w


def _rois(corners: torch.Tensor, frame_hw: tuple[int, int], batch: int) -> list[_Roi]:
    """Block-aligned windows around each quad (B, 4, 2), one size for each ``batch`` consecutive quads, inside
    the frame. Worked out in Python on the CPU: for a dozen quads, a dozen tensor operations cost more than
    the arithmetic."""
    h, w = frame_hw
    quads = corners.detach().cpu().tolist()
    rois = []
    for k in range(0, len(quads), batch):
        starts, ends = [], []
        for quad in quads[k:k + batch]:
            xs, ys = [p[0] for p in quad], [p[1] for p in quad]
            starts.append((max(math.floor(min(xs) - ROI_MARGIN_PX) // 8 * 8, 0),
                           max(math.floor(min(ys) - ROI_MARGIN_PX) // 8 * 8, 0)))
            ends.append((math.ceil(max(xs) + ROI_MARGIN_PX), math.ceil(max(ys) + ROI_MARGIN_PX)))
        size_w = min((max(e[0] - s[0] for s, e in zip(starts, ends)) + 7) // 8 * 8, w)
        size_h = min((max(e[1] - s[1] for s, e in zip(starts, ends)) + 7) // 8 * 8, h)
        origin = [(min(x, w - size_w), min(y, h - size_h)) for x, y in starts]
        rois.append(_Roi(torch.tensor(origin, dtype=torch.long, device=corners.device), size_h, size_w,
                         aligned=all(x % 8 == 0 and y % 8 == 0 for x, y in origin)))
    return rois


def _ground(bank: SceneBank, scene: torch.Tensor, origin: torch.Tensor,
            device: torch.device) -> dict[str, torch.Tensor] | None:
    """The samples' :attr:`EOTBatch.ground`: the bank's entries, homographies moved into the crop windows."""
    if bank.ground is None:
        return None
    out = {k: v[scene].to(device) for k, v in bank.ground.items()}
    shift = torch.eye(3, device=device).repeat(len(scene), 1, 1)
    shift[:, :2, 2] = -origin.to(device=device, dtype=torch.float32)
    out["H"] = shift @ out["H"]
    return out


def _slot_corners(params: dict, device: torch.device) -> torch.Tensor:
    """(B, 4, 2) the slot's corners of ``params``' samples in their rendered images (frames or crop windows)."""
    return params["placement"]["corners"].to(device) - params["crop"]["origin"].to(device)[:, None, :].float()


def _pixels(start: torch.Tensor, size: int, limit: int, context: int = 0) -> torch.Tensor:
    """(B, size + 2 context) pixel indices ``start - context .. start + size + context - 1`` along one axis,
    clamped to ``0 .. limit - 1`` (what replicate padding reads past an edge)."""
    steps = torch.arange(-context, size + context, device=start.device)
    return (start[:, None] + steps[None]).clamp(0, limit - 1)


def _gather(source: torch.Tensor, index: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w): ``source[index[i], :, ys[i]][:, :, xs[i]]`` for each sample; ``source`` (N, C, H, W),
    ``ys`` (B, h) and ``xs`` (B, w) ascending pixel indices (repeats allowed: a replicated edge). A slice per
    sample, indexed again only where indices repeat."""
    sh, sw = ys.shape[1], xs.shape[1]
    parts = []
    for k, y, x in zip(index.tolist(), ys.tolist(), xs.tolist()):
        box = source[k, :, y[0]:y[-1] + 1, x[0]:x[-1] + 1]
        if box.shape[1] != sh:
            box = box.index_select(1, torch.tensor(y, device=box.device) - y[0])
        if box.shape[2] != sw:
            box = box.index_select(2, torch.tensor(x, device=box.device) - x[0])
        parts.append(box)
    return torch.stack(parts)


def _cut(source: torch.Tensor, index, origin: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(B, C, h, w): ``source[index[i], :, y:y + h, x:x + w]`` for each sample, ``origin`` (B, 2) as (x, y)."""
    index = index.tolist() if torch.is_tensor(index) else list(index)
    return torch.stack([source[k, :, y:y + h, x:x + w] for k, (x, y) in zip(index, origin.tolist())])


def _window(x: torch.Tensor, roi: _Roi) -> torch.Tensor:
    """(B, C, h, w) windows of (B, C, H, W) at each sample's origin."""
    return _cut(x, range(x.shape[0]), roi.origin, roi.h, roi.w)


def _paste(frame: torch.Tensor, win: torch.Tensor, origin: torch.Tensor) -> torch.Tensor:
    """``frame`` (B, C, H, W) with each window (B, C, sh, sw) written at its origin (B, 2) (x, y), in place.
    ``frame`` must not need gradients (clean frames); gradients flow to ``win``, without the copy of the
    whole frame a scatter's backward makes."""
    if frame.requires_grad:
        raise ValueError("_paste writes into the frame in place; it takes clean frames, which need no gradient")
    return _PasteInPlace.apply(frame, win, origin)


class _PasteInPlace(torch.autograd.Function):
    @staticmethod
    def forward(ctx, frame: torch.Tensor, win: torch.Tensor, origin: torch.Tensor) -> torch.Tensor:
        ctx.origin, ctx.win_hw = origin, tuple(win.shape[-2:])
        _write_windows(frame, win, origin)
        ctx.mark_dirty(frame)
        return frame

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return None, _cut(grad, range(grad.shape[0]), ctx.origin, *ctx.win_hw), None


def _write_windows(frame: torch.Tensor, win: torch.Tensor, origin: torch.Tensor) -> None:
    """Write each window (B, C, sh, sw) into ``frame`` (B, C, H, W) at its origin (B, 2) (x, y), in place."""
    sh, sw = win.shape[-2:]
    for i, (x, y) in enumerate(origin.tolist()):
        frame[i, :, y:y + sh, x:x + sw] = win[i]


def outline_boxes(H: torch.Tensor, outline_uv, slot_hw: tuple[int, int]) -> torch.Tensor:
    """(B, 4) image boxes of the slot's outline (normalized (K, 2)) under patch->image homographies."""
    h, w = slot_hw
    pts = torch.as_tensor(outline_uv, dtype=H.dtype, device=H.device) * torch.tensor([w, h], dtype=H.dtype,
                                                                                         device=H.device)
    hom = torch.cat([pts, torch.ones(len(pts), 1, dtype=H.dtype, device=H.device)], 1)  # (K, 3)
    img = torch.einsum("bij,kj->bki", H, hom)
    xy = img[..., :2] / img[..., 2:3]
    return torch.cat([xy.min(1).values, xy.max(1).values], 1)


def draw_drives(bank: SceneBank, n: int, frames: int, gen: torch.Generator) -> torch.Tensor:
    """(n,) frame indices: ``n / frames`` drives (randomized scenes of the bank, drawn uniformly), each
    followed by ``frames`` of its frames (distinct while it has enough, then again in a new order)."""
    if n % frames:
        raise ValueError(f"{n} samples do not split into drives of {frames} frames; make the batch a multiple "
                         f"of eot.drive_frames")
    if bank.drive is None:
        raise ValueError("this scene bank does not record which drive its frames come from (photo banks do not); "
                         "drawing by drive (eot.drive_frames > 1) needs a simulator bank")
    ids, inverse = torch.unique(bank.drive.cpu(), return_inverse=True)
    out = []
    for d in torch.randint(0, len(ids), (n // frames,), generator=gen).tolist():
        members = (inverse == d).nonzero()[:, 0]
        order = torch.cat([torch.randperm(len(members), generator=gen) for _ in range(-(-frames // len(members)))])
        out.append(members[order[:frames]])
    return torch.cat(out)
