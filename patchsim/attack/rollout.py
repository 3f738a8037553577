"""Drives rolled out under a lane-keeper's own steering, differentiably (Dirty Road Patch, Sato et al. 2021).

A road marking that turns the wheel for a fraction of a second does not take a car out of its lane:
the lane-keeper sees itself drift and steers back. What matters is the drive: the victim steers, the
car moves, the next view shows the marking (and the lane) from the new pose, the victim steers again.
:func:`roll_out` plays that out from one rendered frame per sample:

1. The frame (patch rendered in, through the camera model) is the view at the start pose.
2. Each step the victim steers from the current view; a kinematic bicycle (rear axle, the
   simulator's model) moves the car ``speed x dt`` along its heading and turns it by
   ``speed x tan(wheel angle) / wheelbase x dt``.
3. The view from the new pose is the start frame warped by the road plane's homography: a road
   pixel of the new view is where its road point was in the start frame (the frame's ``ground``
   homography maps car-frame road points to pixels), sampled bilinearly (``grid_sample`` on a
   grid built here rather than kornia's ``warp_perspective``, whose grid turns non-finite above the
   horizon and then breaks the backward pass). Pixels above the horizon, or that see the
   road further than ``ROAD_RANGE_M``, keep the start frame's (the sky and far scenery hardly move
   over a few metres). Forward motion only magnifies the start frame, so the near road is always
   there; objects standing on the road are drawn as if painted on it, which the lane-keepers,
   looking at the road, hardly notice (Dirty Road Patch makes the same approximation).

Gradients reach the marking through every step's view, and through the poses (the warp depends on
where the car is), so steering errors that add up over the drive are what the loss sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from patchsim.config import param

ROAD_RANGE_M = 120.0  # road points further than this keep the start frame's pixels


@dataclass
class RolloutConfig:
    """How the ``depart`` goal rolls drives out from each sample's frame."""

    steps: int = param(15, range=(1, 200), help="steering decisions per rolled-out drive")
    dt_s: float = param(0.1, unit="s", range=(0.01, 1.0), help="time between steering decisions")
    speed_mps: tuple[float, float] = param((10.0, 15.0), unit="m/s", range=(0.5, 60.0),
                                           help="car speeds, spread evenly over each batch")
    past_edge_m: float = param(0.3, unit="m", range=(0.0, 5.0),
                               help="a drive this far past the departure limit stops pulling: the margin kept for "
                                    "conditions the attack did not sample")

    def __post_init__(self) -> None:
        from patchsim.config import FieldError

        if self.speed_mps[0] > self.speed_mps[1]:
            raise FieldError("speed_mps", f"speed_mps {list(self.speed_mps)} is not [low, high]")

    def speeds(self, batch: int, device: torch.device | str = "cpu") -> torch.Tensor:
        """(batch,) speeds spread evenly over the range (the samples themselves are drawn at random)."""
        lo, hi = self.speed_mps
        return lo + (hi - lo) * (torch.arange(batch, device=device, dtype=torch.float32) + 0.5) / batch


@dataclass
class Rollout:
    """Rolled-out drives of a batch.

    Attributes:
        lane_offset_m: (B, T + 1) the rear axle left of the lane centre, at the start and after each step.
        steer: (B, T) the victim's steering commands in [-1, 1].
        lane_width_m: (B,).
    """

    lane_offset_m: torch.Tensor
    steer: torch.Tensor
    lane_width_m: torch.Tensor


def pose_matrix(x_m: torch.Tensor, y_m: torch.Tensor, yaw_rad: torch.Tensor) -> torch.Tensor:
    """(B, 3, 3) the rigid map from the car's frame at pose (x, y, yaw) (each (B,), in the start pose's
    frame) to the start pose's frame, on homogeneous road points."""
    c, s = torch.cos(yaw_rad), torch.sin(yaw_rad)
    one, zero = torch.ones_like(c), torch.zeros_like(c)
    return torch.stack([torch.stack([c, -s, x_m], -1), torch.stack([s, c, y_m], -1),
                        torch.stack([zero, zero, one], -1)], -2)


def view_from(images: torch.Tensor, H: torch.Tensor, pose: torch.Tensor,
              rays: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """The start frames seen from moved poses.

    Args:
        images: (B, 3, h, w) start frames. H: (B, 3, 3) road plane (start car frame, metres) -> pixels.
        pose: (B, 3, 3) :func:`pose_matrix` of the new poses.
        rays: :func:`road_rays` of ``H`` for these frames, when already worked out (they do not depend on the pose).

    Returns:
        (B, 3, h, w): road pixels warped to the new pose, the rest as in the start frames.
    """
    h, w = images.shape[-2:]
    H = H.to(images.dtype)
    road_new, seen = rays if rays is not None else road_rays(H, h, w)
    src = H @ pose @ road_new  # where those road points were in the start frame
    z = src[:, 2].where(seen, torch.ones_like(src[:, 2]))
    # normalized sampling coordinates; pixels off the road (whose points lie at or past the horizon) are
    # masked out below, but their coordinates must stay finite for grid_sample's backward pass
    gx = src[:, 0] / z / w * 2 - 1
    gy = src[:, 1] / z / h * 2 - 1
    grid = torch.stack([gx, gy], -1).where(seen[..., None], torch.zeros(())).clamp(-2.0, 2.0)
    warped = F.grid_sample(images, grid.reshape(-1, h, w, 2), mode="bilinear", padding_mode="border",
                           align_corners=False)
    return torch.where(seen.reshape(-1, 1, h, w), warped, images)


def road_rays(H: torch.Tensor, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The road point each pixel centre of an (h, w) view sees, for road-plane homographies ``H`` (B, 3, 3).

    Returns:
        (B, 3, h*w) homogeneous road points in the viewing car's frame, and (B, h*w) bool: whether the pixel
        sees the road ahead within ``ROAD_RANGE_M`` (the rest is at or past the horizon).
    """
    ys, xs = torch.meshgrid(torch.arange(h, device=H.device, dtype=H.dtype),
                            torch.arange(w, device=H.device, dtype=H.dtype), indexing="ij")
    q = torch.stack([xs + 0.5, ys + 0.5, torch.ones_like(xs)], 0).reshape(3, -1)  # pixel centres
    road = torch.linalg.inv(H) @ q
    with torch.no_grad():
        fwd = road[:, 0] / road[:, 2]
        seen = (road[:, 2] * _side(H)[:, None] > 0) & (fwd > 0) & (fwd < ROAD_RANGE_M)
    return road, seen


def _side(H: torch.Tensor) -> torch.Tensor:
    """(B,) the sign the homogeneous scale of a road point ahead takes under ``H``'s inverse."""
    ahead = H @ torch.tensor([10.0, 0.0, 1.0], device=H.device, dtype=H.dtype)
    return torch.sign(ahead[:, 2])


def roll_out(victim, images: torch.Tensor, ground: dict[str, torch.Tensor], speed_mps: torch.Tensor,
             steps: int, dt_s: float) -> Rollout:
    """Drive each sample ``steps`` steps from its frame under ``victim``'s steering (see the module docstring).

    Args:
        victim: frames (B, 3, h, w) -> steering commands (B,) in [-1, 1] (left positive).
        images: (B, 3, h, w) start frames in [0, 1]. ground: :attr:`~patchsim.eot.pipeline.EOTBatch.ground`.
        speed_mps: (B,). The car's wheelbase and wheel angle at full steer come with ``ground``.
    """
    b = images.shape[0]
    dev = images.device
    x = torch.zeros(b, device=dev)
    y = torch.zeros(b, device=dev)
    yaw = torch.zeros(b, device=dev)
    h0 = ground["heading_rad"].to(dev).float()
    lane0 = ground["lane_offset_m"].to(dev).float()
    H = ground["H"].to(dev).float()
    wheelbase = ground["wheelbase_m"].to(dev).float()
    max_steer = ground["max_steer_rad"].to(dev).float()
    offsets, steers = [lane0], []
    v = speed_mps.to(dev).float()
    rays = road_rays(H.to(images.dtype), *images.shape[-2:]) if steps > 1 else None
    for t in range(steps):
        view = images if t == 0 else view_from(images, H, pose_matrix(x, y, yaw), rays)
        steer = victim(view).float().clamp(-1.0, 1.0)
        steers.append(steer)
        turn = v * dt_s * torch.tan(steer * max_steer) / wheelbase
        mid = yaw + turn / 2  # the arc's chord points half-way through the turn
        x = x + v * dt_s * torch.cos(mid)
        y = y + v * dt_s * torch.sin(mid)
        yaw = yaw + turn
        offsets.append(lane0 + _lateral(x, y, h0))
    return Rollout(torch.stack(offsets, 1), torch.stack(steers, 1), ground["lane_width_m"].to(dev).float())


def _lateral(x: torch.Tensor, y: torch.Tensor, heading_rad: torch.Tensor) -> torch.Tensor:
    """(B,) the road-lateral part (left positive) of a displacement (x, y) in a car frame at ``heading_rad``
    from the road."""
    return x * torch.sin(heading_rad) + y * torch.cos(heading_rad)
