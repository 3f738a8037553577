"""Ground truth for a frame, projected from the layout through the camera model.

Pure numpy, shared by every backend that knows its layout. When a label render is available,
visibility (occlusion by other objects) is measured on it.
"""

from __future__ import annotations

import math

import numpy as np

from patchsim.sim.base import LaneTruth, ObjectTruth, SignTruth, SlotTruth
from patchsim.sim.camera import CameraModel, box_from_polygon
from patchsim.sim.layout import Layout, VehiclePlacement
from patchsim.sim.meshes import box_corners
from patchsim.sim.road import Road

LANE_AHEAD_M = np.arange(0.0, 50.0, 2.0)


def polygon_area(poly: np.ndarray) -> float:
    """Shoelace area of a polygon (K, 2)."""
    if poly is None or len(poly) < 3:
        return 0.0
    x, y = poly[:, 0], poly[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def clip_to_image(poly: np.ndarray | None, width_px: int, height_px: int) -> np.ndarray | None:
    """Clip a polygon (K, 2) to the image rectangle (Sutherland-Hodgman)."""
    if poly is None or len(poly) < 3:
        return None
    pts = [tuple(p) for p in poly]
    for axis, bound, keep_less in ((0, 0.0, False), (0, float(width_px), True), (1, 0.0, False),
                                   (1, float(height_px), True)):
        out = []
        n = len(pts)
        for i in range(n):
            a, b = pts[i], pts[(i + 1) % n]
            a_in = a[axis] <= bound if keep_less else a[axis] >= bound
            b_in = b[axis] <= bound if keep_less else b[axis] >= bound
            if a_in:
                out.append(a)
            if a_in != b_in:
                t = (bound - a[axis]) / (b[axis] - a[axis])
                out.append((a[0] + t * (b[0] - a[0]), a[1] + t * (b[1] - a[1])))
        pts = out
        if len(pts) < 3:
            return None
    return np.array(pts)


def _visible_fraction(labels: np.ndarray | None, label_id: int | None, poly: np.ndarray | None,
                      cam: CameraModel) -> float | None:
    if labels is None or label_id is None:
        return None
    clipped = clip_to_image(poly, cam.width_px, cam.height_px)
    area = polygon_area(clipped)
    if area < 1.0:
        return 0.0
    x1, y1 = np.floor(clipped.min(0)).astype(int)
    x2, y2 = np.ceil(clipped.max(0)).astype(int)
    seen = int(np.count_nonzero(labels[max(y1, 0):y2, max(x1, 0):x2] == label_id))
    return float(min(1.0, seen / area))


def sign_truths(layout: Layout, cam: CameraModel, labels: np.ndarray | None = None,
                label_ids: dict[str, int] | None = None) -> list[SignTruth]:
    out = []
    for sign in layout.signs:
        corners, _ = cam.project(sign.face_corners_m)
        poly = cam.project_polygon(sign.outline_m)
        facing = float(np.dot(sign.normal, cam.position_m - sign.centre_m)) > 0
        box = box_from_polygon(poly, cam.width_px, cam.height_px) if facing else None
        lid = None if label_ids is None else label_ids.get(f"sign:{sign.spec.id}")
        vis = _visible_fraction(labels, lid, poly, cam) if box is not None else (None if labels is None else 0.0)
        out.append(SignTruth(
            sign.spec.id, sign.spec.kind, sign.spec.speed_limit_mph if sign.spec.kind == "speed_limit" else None,
            corners, poly, box, float(np.linalg.norm(sign.centre_m - cam.position_m)), vis,
        ))
    return out


def slot_truths(layout: Layout, cam: CameraModel) -> dict[str, SlotTruth]:
    out = {}
    for name, slot in layout.slots.items():
        corners, depth = cam.project(slot.corners_m)
        in_view = bool(np.all(depth > cam.near_m)) and box_from_polygon(corners, cam.width_px, cam.height_px) is not None
        out[name] = SlotTruth(name, slot.spec.kind, corners, slot.size_m,
                              float(np.linalg.norm(slot.corners_m.mean(0) - cam.position_m)), in_view)
    return out


def vehicle_truths(vehicles: list[VehiclePlacement], cam: CameraModel, labels: np.ndarray | None = None,
                   label_ids: dict[str, int] | None = None) -> list[ObjectTruth]:
    out = []
    for v in vehicles:
        corners = box_corners(v.centre_m, v.size_m, v.yaw_rad)
        pc = cam.to_camera(corners)
        box = None
        poly = None
        if np.all(pc[:, 2] > cam.near_m):
            uv, _ = cam.project(corners)
            box = box_from_polygon(uv, cam.width_px, cam.height_px)
            poly = uv[_hull(uv)] if box is not None else None
        lid = None if label_ids is None else label_ids.get(f"vehicle:{v.spec.id}")
        vis = _visible_fraction(labels, lid, poly, cam) if box is not None else (None if labels is None else 0.0)
        out.append(ObjectTruth(v.spec.id, "vehicle", box, float(np.linalg.norm(v.centre_m - cam.position_m)), vis))
    return out


def _hull(points: np.ndarray) -> np.ndarray:
    """Indices of the convex hull of (N, 2) points, counter-clockwise (monotone chain)."""
    order = np.lexsort((points[:, 1], points[:, 0]))

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list[int] = []
    for i in order:
        while len(lower) >= 2 and cross(points[lower[-2]], points[lower[-1]], points[i]) <= 0:
            lower.pop()
        lower.append(int(i))
    upper: list[int] = []
    for i in order[::-1]:
        while len(upper) >= 2 and cross(points[upper[-2]], points[upper[-1]], points[i]) <= 0:
            upper.pop()
        upper.append(int(i))
    return np.array(lower[:-1] + upper[:-1])


def lane_truth(road: Road, lane: int, x_m: float, y_m: float, yaw_rad: float, cam: CameraModel) -> LaneTruth:
    s, d = road.project(x_m, y_m)
    centre_d = road.lane_centre_m(lane)
    _, _, heading = road.pose(s)
    err = (yaw_rad - float(heading) + math.pi) % (2 * math.pi) - math.pi
    w = road.spec.lane_width_m
    ahead = s + LANE_AHEAD_M
    c, sn = math.cos(yaw_rad), math.sin(yaw_rad)

    def ego_frame(points: np.ndarray) -> np.ndarray:
        rel = points - np.array([x_m, y_m])
        return np.stack([rel[:, 0] * c + rel[:, 1] * sn, -rel[:, 0] * sn + rel[:, 1] * c], 1)

    def image(points: np.ndarray) -> np.ndarray:
        uv, _ = cam.project(np.c_[points, np.zeros(len(points))])
        return uv

    centre = road.point(ahead, centre_d)
    left = road.point(ahead, centre_d + w / 2)
    right = road.point(ahead, centre_d - w / 2)
    return LaneTruth(lane, w, d - centre_d, err, road.curvature_at(s), ego_frame(centre), ego_frame(left),
                     ego_frame(right), image(centre), image(left), image(right))
