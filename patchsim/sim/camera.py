"""Pinhole camera model shared by every backend, the ground truth and the EOT placement.

World frame: x east, y north, z up, metres; yaw counter-clockwise from +x, radians.
Camera frame (OpenCV): x right, y down, z forward. Pixel (u, v) has its origin at the top-left
corner of the image; pixel ``i`` covers ``[i, i + 1)``, so the principal point of a centred
camera is ``(W / 2, H / 2)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


def rotation_world_from_camera(yaw_rad: float, pitch_rad: float, roll_rad: float = 0.0) -> np.ndarray:
    """Columns are the camera's right, down and forward axes in world coordinates. Shape (3, 3)."""
    cy, sy, cp, sp = math.cos(yaw_rad), math.sin(yaw_rad), math.cos(pitch_rad), math.sin(pitch_rad)
    forward = np.array([cp * cy, cp * sy, sp])
    right = np.array([sy, -cy, 0.0])
    down = np.cross(forward, right)
    if roll_rad:
        cr, sr = math.cos(roll_rad), math.sin(roll_rad)
        right, down = cr * right + sr * down, -sr * right + cr * down
    return np.stack([right, down, forward], axis=1)


@dataclass
class CameraModel:
    """Intrinsics and pose of one camera.

    Attributes:
        width_px, height_px: image size.
        fx_px, fy_px, cx_px, cy_px: intrinsics in pixels.
        position_m: (3,) camera centre in world coordinates.
        rotation: (3, 3) world-from-camera rotation (columns right, down, forward).
        near_m: points closer than this along the optical axis are not projected.
    """

    width_px: int
    height_px: int
    fx_px: float
    fy_px: float
    cx_px: float
    cy_px: float
    position_m: np.ndarray = field(default_factory=lambda: np.zeros(3))
    rotation: np.ndarray = field(default_factory=lambda: np.eye(3))
    near_m: float = 0.3

    @classmethod
    def from_fov(cls, width_px: int, height_px: int, hfov_deg: float) -> "CameraModel":
        """Square pixels, centred principal point, horizontal field of view ``hfov_deg``."""
        f = (width_px / 2) / math.tan(math.radians(hfov_deg) / 2)
        return cls(width_px, height_px, f, f, width_px / 2, height_px / 2)

    @property
    def K(self) -> np.ndarray:  # noqa: N802 - standard name
        """(3, 3) intrinsic matrix."""
        return np.array([[self.fx_px, 0, self.cx_px], [0, self.fy_px, self.cy_px], [0, 0, 1.0]])

    @property
    def vfov_deg(self) -> float:
        return math.degrees(2 * math.atan((self.height_px / 2) / self.fy_px))

    def posed(self, position_m: np.ndarray, yaw_rad: float, pitch_rad: float, roll_rad: float = 0.0) -> "CameraModel":
        """A copy at a new pose."""
        return CameraModel(
            self.width_px, self.height_px, self.fx_px, self.fy_px, self.cx_px, self.cy_px,
            np.asarray(position_m, dtype=float).copy(), rotation_world_from_camera(yaw_rad, pitch_rad, roll_rad),
            self.near_m,
        )

    def to_camera(self, points_world: np.ndarray) -> np.ndarray:
        """(N, 3) world points -> (N, 3) camera-frame points."""
        return (np.asarray(points_world, dtype=float) - self.position_m) @ self.rotation

    def project(self, points_world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project world points.

        Args:
            points_world: (N, 3).

        Returns:
            uv: (N, 2) pixel coordinates (NaN for points behind ``near_m``); depth: (N,) metres along the axis.
        """
        pc = self.to_camera(points_world)
        z = pc[:, 2]
        uv = np.full((len(pc), 2), np.nan)
        ok = z > self.near_m
        uv[ok, 0] = self.fx_px * pc[ok, 0] / z[ok] + self.cx_px
        uv[ok, 1] = self.fy_px * pc[ok, 1] / z[ok] + self.cy_px
        return uv, z

    def project_polygon(self, polygon_world: np.ndarray) -> np.ndarray | None:
        """Project a planar polygon (N, 3), clipped at the near plane first. None if fully behind."""
        pc = self.to_camera(polygon_world)
        clipped = _clip_near(pc, self.near_m)
        if len(clipped) < 3:
            return None
        z = clipped[:, 2]
        return np.stack([self.fx_px * clipped[:, 0] / z + self.cx_px, self.fy_px * clipped[:, 1] / z + self.cy_px], 1)

    def pixel_rays(self, stride: int = 1) -> np.ndarray:
        """World-frame ray directions through pixel centres. Shape (H // stride, W // stride, 3)."""
        v, u = np.mgrid[0 : self.height_px : stride, 0 : self.width_px : stride].astype(np.float64)
        x = (u + 0.5 * stride - self.cx_px) / self.fx_px
        y = (v + 0.5 * stride - self.cy_px) / self.fy_px
        dirs = np.stack([x, y, np.ones_like(x)], -1)
        return dirs @ self.rotation.T

    def to_json(self) -> dict:
        return {
            "width_px": self.width_px, "height_px": self.height_px,
            "fx_px": self.fx_px, "fy_px": self.fy_px, "cx_px": self.cx_px, "cy_px": self.cy_px,
            "position_m": [float(v) for v in self.position_m],
            "rotation": [[float(v) for v in row] for row in self.rotation],
        }


def _clip_near(points_cam: np.ndarray, near: float) -> np.ndarray:
    """Sutherland-Hodgman clip of a polygon against the plane z = near (keep z >= near)."""
    out = []
    n = len(points_cam)
    for i in range(n):
        a, b = points_cam[i], points_cam[(i + 1) % n]
        a_in, b_in = a[2] >= near, b[2] >= near
        if a_in:
            out.append(a)
        if a_in != b_in:
            t = (near - a[2]) / (b[2] - a[2])
            out.append(a + t * (b - a))
    return np.array(out) if out else np.zeros((0, 3))


def box_from_polygon(uv: np.ndarray | None, width_px: int, height_px: int) -> np.ndarray | None:
    """Axis-aligned box (x1, y1, x2, y2) of a projected polygon, clipped to the image. None if outside."""
    if uv is None or len(uv) == 0 or np.isnan(uv).any():
        return None
    x1, y1 = np.clip(uv.min(0), 0, [width_px, height_px])
    x2, y2 = np.clip(uv.max(0), 0, [width_px, height_px])
    if x2 - x1 < 1e-6 or y2 - y1 < 1e-6:
        return None
    return np.array([x1, y1, x2, y2])
