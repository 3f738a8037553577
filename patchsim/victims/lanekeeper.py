"""Lane-keeping victims: camera frame -> steering command, differentiable end to end.

Two kinds, for transfer tests between different designs:

- :class:`PilotNet`: end-to-end CNN (Bojarski et al. 2016) on the road part of the frame,
  trained by behaviour cloning from the expert with noise injection and DAgger.
- :class:`LaneNetKeeper`: a small U-Net segments lane markings; the marking probabilities are
  warped to a bird's-eye view of the ground (known camera), the lane centre is found row by row
  with soft centroids and fitted with a weighted quadratic, and pure pursuit steers to it. Every
  step is differentiable, so an attack can reach the pixels through the geometry.

Both take images (B, 3, H, W) in [0, 1] at the camera resolution they were trained for and
return the steer command (B,) in the units of :class:`patchsim.sim.base.Control` (fraction of
the maximum wheel angle, positive left).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from patchsim.errors import CheckpointError, ShapeError

LANEKEEPER_FORMAT = "patchsim-lanekeeper/1"


@dataclass
class LaneCameraSpec:
    """The camera a lane-keeper was trained with (defaults of :class:`patchsim.sim.scenario.CameraSpec`)."""

    width_px: int = 640
    height_px: int = 384
    hfov_deg: float = 50.0
    height_m: float = 1.4
    pitch_deg: float = -2.0
    forward_m: float = 1.8  # camera ahead of the rear axle
    road_view_top: float = 0.45  # the road view starts this far down the image (fraction of height)


@dataclass
class VehicleSpecLK:
    wheelbase_m: float = 2.7
    max_steer_deg: float = 35.0
    nominal_speed_mps: float = 10.0


class LaneKeeper(nn.Module):
    """Base class: holds the camera and vehicle it was trained for, crops the road view."""

    kind = "base"

    def __init__(self, camera: LaneCameraSpec | None = None, vehicle: VehicleSpecLK | None = None):
        super().__init__()
        self.camera = camera or LaneCameraSpec()
        self.vehicle = vehicle or VehicleSpecLK()

    def road_view(self, images: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
        """Crop the road part of (B, 3, H, W) frames and resize it to ``size_hw``. Differentiable."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ShapeError(f"lane-keeper input must be (B, 3, H, W), got {tuple(images.shape)}")
        h, w = images.shape[-2:]
        if (h, w) != (self.camera.height_px, self.camera.width_px):
            raise ShapeError(f"lane-keeper trained for {self.camera.width_px}x{self.camera.height_px} frames, "
                             f"got {w}x{h}")
        top = int(round(self.camera.road_view_top * h))
        return F.interpolate(images[:, :, top:], size=size_hw, mode="bilinear", align_corners=False,
                             antialias=False)

    def steer(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward(images)

    def config(self) -> dict:
        return {"camera": asdict(self.camera), "vehicle": asdict(self.vehicle)}


class PilotNet(LaneKeeper):
    """PilotNet: 5 convolutions and 4 dense layers on a 66 x 200 road view."""

    kind = "pilotnet"
    input_hw = (66, 200)

    def __init__(self, camera: LaneCameraSpec | None = None, vehicle: VehicleSpecLK | None = None,
                 dropout: float = 0.2):
        super().__init__(camera, vehicle)
        self.features = nn.Sequential(
            nn.Conv2d(3, 24, 5, 2), nn.ELU(),
            nn.Conv2d(24, 36, 5, 2), nn.ELU(),
            nn.Conv2d(36, 48, 5, 2), nn.ELU(),
            nn.Conv2d(48, 64, 3), nn.ELU(),
            nn.Conv2d(64, 64, 3), nn.ELU(),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(64 * 1 * 18, 100), nn.ELU(),
            nn.Linear(100, 50), nn.ELU(), nn.Linear(50, 10), nn.ELU(), nn.Linear(10, 1),
        )

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        return (self.road_view(images, self.input_hw) - 0.5) / 0.25

    def forward_view(self, view: torch.Tensor) -> torch.Tensor:
        """Steer from an already normalized road view (B, 3, 66, 200)."""
        return self.head(self.features(view)).squeeze(-1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> steer command (B,)."""
        return self.forward_view(self.preprocess(images))


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class MarkingSegmenter(nn.Module):
    """A three-level U-Net: road view (B, 3, h, w) -> marking logits (B, 1, h, w)."""

    def __init__(self, width: int = 8):
        super().__init__()
        c1, c2, c3 = width, width * 2, width * 4
        self.e1, self.e2, self.e3 = _block(3, c1), _block(c1, c2), _block(c2, c3)
        self.bottleneck = _block(c3, c3)
        self.d3, self.d2, self.d1 = _block(c3 * 2, c2), _block(c2 * 2, c1), _block(c1 * 2, c1)
        self.out = nn.Conv2d(c1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.e1(x)
        e2 = self.e2(F.max_pool2d(e1, 2))
        e3 = self.e3(F.max_pool2d(e2, 2))
        b = self.bottleneck(F.max_pool2d(e3, 2))
        d3 = self.d3(torch.cat([F.interpolate(b, size=e3.shape[-2:], mode="bilinear", align_corners=False), e3], 1))
        d2 = self.d2(torch.cat([F.interpolate(d3, size=e2.shape[-2:], mode="bilinear", align_corners=False), e2], 1))
        d1 = self.d1(torch.cat([F.interpolate(d2, size=e1.shape[-2:], mode="bilinear", align_corners=False), e1], 1))
        return self.out(d1)


@dataclass
class BevSpec:
    """Bird's-eye grid: x forward from the camera's ground point, y to the left, metres."""

    x_range_m: tuple[float, float] = (6.0, 26.0)
    y_range_m: tuple[float, float] = (-5.0, 5.0)
    resolution_m: float = 0.1
    search_m: tuple[float, float] = (0.4, 3.6)  # |y| window where each ego-lane boundary is looked for
    lane_width_m: float = 3.5
    lookahead_m: float = 8.0


class LaneNetKeeper(LaneKeeper):
    """Lane-marking segmentation + differentiable geometric lane fit + pure pursuit."""

    kind = "lanenet"
    input_hw = (64, 224)

    def __init__(self, camera: LaneCameraSpec | None = None, vehicle: VehicleSpecLK | None = None,
                 bev: BevSpec | None = None, width: int = 8):
        super().__init__(camera, vehicle)
        self.bev = bev or BevSpec()
        self.seg_width = width
        self.segmenter = MarkingSegmenter(width)
        grid, x_m, y_m = self._bev_grid()
        self.register_buffer("grid", grid, persistent=False)
        self.register_buffer("bev_x_m", x_m, persistent=False)
        self.register_buffer("bev_y_m", y_m, persistent=False)

    def _bev_grid(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """grid_sample grid (1, Hb, Wb, 2) mapping BEV cells to road-view coordinates."""
        from patchsim.sim.camera import CameraModel

        c, b = self.camera, self.bev
        nx = int(round((b.x_range_m[1] - b.x_range_m[0]) / b.resolution_m))
        ny = int(round((b.y_range_m[1] - b.y_range_m[0]) / b.resolution_m))
        x = b.x_range_m[1] - (np.arange(nx) + 0.5) * b.resolution_m  # row 0 is far
        y = b.y_range_m[1] - (np.arange(ny) + 0.5) * b.resolution_m  # column 0 is left
        cam = CameraModel.from_fov(c.width_px, c.height_px, c.hfov_deg).posed(
            np.array([0.0, 0.0, c.height_m]), 0.0, math.radians(c.pitch_deg))
        gx, gy = np.meshgrid(x, y, indexing="ij")
        uv, _ = cam.project(np.stack([gx.ravel(), gy.ravel(), np.zeros(gx.size)], 1))
        top = c.road_view_top * c.height_px
        u_n = uv[:, 0] / c.width_px * 2 - 1
        v_n = (uv[:, 1] - top) / (c.height_px - top) * 2 - 1
        grid = np.stack([u_n, v_n], 1).reshape(nx, ny, 2)
        return (torch.tensor(grid, dtype=torch.float32)[None], torch.tensor(x + c.forward_m, dtype=torch.float32),
                torch.tensor(y, dtype=torch.float32))

    def marking_logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 1, 64, 224) lane-marking logits of the road view."""
        return self.segmenter((self.road_view(images, self.input_hw) - 0.5) / 0.25)

    def lane_fit(self, prob: torch.Tensor) -> dict[str, torch.Tensor]:
        """Fit the lane centre y(x) = a + b x + k x^2 / 2 (x from the rear axle) from marking probabilities.

        Two passes: a straight line from the near rows (x <= 14 m) with fixed search windows either side
        of the car, then a quadratic over all rows with each boundary searched around where the first
        fit puts it, so a curve's far rows do not lend one boundary to the other.

        Returns tensors (B,): ``a`` (lane centre offset, left of the ego), ``b`` (slope), ``k``
        (curvature), ``evidence`` (share of BEV rows that saw a boundary).
        """
        bev = F.grid_sample(prob, self.grid.expand(prob.shape[0], -1, -1, -1), mode="bilinear",
                            padding_mode="zeros", align_corners=False)[:, 0]  # (B, Hb, Wb)
        y, x = self.bev_y_m, self.bev_x_m
        lo, hi = self.bev.search_m
        half = self.bev.lane_width_m / 2
        near = (x <= 14.0 + self.camera.forward_m).to(bev.dtype)
        fixed_left = ((y >= lo) & (y <= hi)).to(bev.dtype)[None, None].expand(bev.shape[0], len(x), -1)
        fixed_right = ((y <= -lo) & (y >= -hi)).to(bev.dtype)[None, None].expand(bev.shape[0], len(x), -1)
        centre, weight = self._centre_rows(bev, fixed_left, fixed_right)
        a, b, _ = self._fit(centre, weight * near, quadratic=False)
        guess = (a[:, None] + b[:, None] * x[None]).detach()  # (B, Hb): where the centre is, roughly
        span = hi - lo
        left = ((y[None, None] - (guess[..., None] + half)).abs() <= span / 2).to(bev.dtype)
        right = ((y[None, None] - (guess[..., None] - half)).abs() <= span / 2).to(bev.dtype)
        centre, weight = self._centre_rows(bev, left, right)
        a, b, k = self._fit(centre, weight, quadratic=True)
        return {"a": a, "b": b, "k": k, "evidence": (weight > 0.5).float().mean(-1)}

    def _centre_rows(self, bev: torch.Tensor, left_mask: torch.Tensor,
                     right_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per BEV row: the lane centre from the boundaries found in the masks, and its weight."""
        y = self.bev_y_m
        w_img = bev ** 2

        def side(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            w = w_img * mask
            mass = w.sum(-1)
            return (w * y).sum(-1) / (mass + 1e-6), mass / (mass + 0.5)

        y_l, e_l = side(left_mask)
        y_r, e_r = side(right_mask)
        half = self.bev.lane_width_m / 2
        both, only_l, only_r = e_l * e_r, e_l * (1 - e_r), e_r * (1 - e_l)
        weight = both + only_l + only_r
        centre = (both * (y_l + y_r) / 2 + only_l * (y_l - half) + only_r * (y_r + half)) / (weight + 1e-6)
        return centre, weight

    def _fit(self, centre: torch.Tensor, weight: torch.Tensor, quadratic: bool) -> tuple[torch.Tensor, ...]:
        """Weighted least squares of centre(x) on [1, x, x^2 / 2] (or [1, x]); returns (a, b, k)."""
        x = self.bev_x_m
        cols = [torch.ones_like(x), x] + ([x * x / 2] if quadratic else [])
        basis = torch.stack(cols, -1)  # (Hb, n)
        wb = weight[..., None] * basis
        n = basis.shape[1]
        normal = torch.einsum("bhi,hj->bij", wb, basis) + 1e-3 * torch.eye(n, device=x.device, dtype=x.dtype)
        coef = torch.linalg.solve(normal, torch.einsum("bhi,bh->bi", wb, centre))
        k = coef[:, 2] if quadratic else torch.zeros_like(coef[:, 0])
        return coef[:, 0], coef[:, 1], k

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> steer command (B,) by pure pursuit on the fitted lane centre."""
        fit = self.lane_fit(torch.sigmoid(self.marking_logits(images)))
        ld = max(self.bev.lookahead_m, 0.6 * self.vehicle.nominal_speed_mps)
        y_t = fit["a"] + fit["b"] * ld + fit["k"] * ld * ld / 2
        delta = torch.atan(2 * self.vehicle.wheelbase_m * y_t / (ld * ld + y_t * y_t))
        return (delta / math.radians(self.vehicle.max_steer_deg)).clamp(-1, 1)

    def config(self) -> dict:
        return {**super().config(), "bev": asdict(self.bev), "width": self.seg_width}


# --------------------------------------------------------------------------- checkpoints


def save_lanekeeper_checkpoint(path: str | Path, model: LaneKeeper, meta: dict) -> Path:
    from patchsim.runs import atomic_path

    ckpt = {"format": LANEKEEPER_FORMAT, "kind": model.kind, "config": model.config(),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "meta": meta}
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return Path(path)


def _read(path: Path) -> dict | None:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    return ckpt if isinstance(ckpt, dict) else None


def is_lanekeeper_checkpoint(path: Path) -> bool:
    if not path.is_file():
        return False
    ckpt = _read(path)
    return bool(ckpt) and ckpt.get("format") == LANEKEEPER_FORMAT


def load_lanekeeper(spec: str | Path, device: str | torch.device = "cpu") -> LaneKeeper:
    """Load a lane-keeper by name (``lanekeeper:pilotnet``, ``lanekeeper:lanenet``) or path.

    Raises:
        CheckpointError: missing, corrupt, or not a lane-keeper checkpoint.
    """
    from patchsim.victims.registry import resolve_weights

    path = resolve_weights(spec, "lanekeeper")
    if not path.is_file():
        raise CheckpointError(f"{path}: lane-keeper checkpoint not found")
    ckpt = _read(path)
    if ckpt is None:
        raise CheckpointError(f"{path}: not a readable checkpoint (corrupt, or a pickle that needs code to load)")
    if ckpt.get("format") != LANEKEEPER_FORMAT:
        raise CheckpointError(f"{path}: not a patchsim lane-keeper checkpoint (format {ckpt.get('format')!r})")
    cfg = ckpt["config"]
    camera, vehicle = LaneCameraSpec(**cfg["camera"]), VehicleSpecLK(**cfg["vehicle"])
    if ckpt["kind"] == "pilotnet":
        model: LaneKeeper = PilotNet(camera, vehicle)
    elif ckpt["kind"] == "lanenet":
        bev = cfg["bev"]
        model = LaneNetKeeper(camera, vehicle, BevSpec(**{k: tuple(v) if isinstance(v, list) else v
                                                          for k, v in bev.items()}), width=cfg.get("width", 8))
    else:
        raise CheckpointError(f"{path}: unknown lane-keeper kind {ckpt['kind']!r}")
    try:
        model.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit a {ckpt['kind']} ({exc})") from exc
    model.meta = ckpt.get("meta", {})  # type: ignore[attr-defined]
    return model.eval().to(device)


__all__ = ["PilotNet", "LaneNetKeeper", "LaneKeeper", "LaneCameraSpec", "VehicleSpecLK", "BevSpec",
           "load_lanekeeper", "save_lanekeeper_checkpoint", "is_lanekeeper_checkpoint"]
