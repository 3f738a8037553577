"""World placement of everything a scenario names, in plain numpy (no renderer).

The layout is the single source of geometry: the renderer builds its meshes from it and the
ground truth projects the same points, so boxes and corners match the pixels by construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from patchsim.sim.road import Road
from patchsim.sim.scenario import PatchSlotSpec, Scenario, SignSpec, VehicleSpec
from patchsim.sim.textures import face_outline

#: Vehicle body dimensions (length, width, height) in metres.
VEHICLE_SIZE_M = {"car": (4.5, 1.8, 1.45), "van": (5.1, 2.0, 2.1), "truck": (8.5, 2.5, 3.3)}
FRONT_OVERHANG_M = 0.9  # front bumper ahead of the front axle
REAR_OVERHANG_M = 1.0  # rear bumper behind the rear axle
EGO_WIDTH_M = 1.8  # the ego's body width: a wheel leaves the lane at |offset| > (lane width - this) / 2
POLE_WIDTH_M = 0.06


@dataclass
class SignPlacement:
    """A sign in the world.

    Attributes:
        face_corners_m: (4, 3) face bounding rectangle, TL, TR, BR, BL seen from the front.
        outline_m: (K, 3) real face outline (octagon, triangle, rectangle).
        outline_uv: (K, 2) the outline in face coordinates normalized to [0, 1], x right, y down.
        normal: (3,) unit normal of the front face.
        pole_base_m: (3,) foot of the pole.
    """

    spec: SignSpec
    face_corners_m: np.ndarray
    outline_m: np.ndarray
    outline_uv: np.ndarray
    normal: np.ndarray
    pole_base_m: np.ndarray
    pole_top_m: np.ndarray

    @property
    def centre_m(self) -> np.ndarray:
        return self.face_corners_m.mean(0)


@dataclass
class VehiclePlacement:
    spec: VehicleSpec
    s_m: float
    centre_m: np.ndarray  # (3,) at mid-height
    yaw_rad: float
    size_m: tuple[float, float, float]
    colour: tuple[float, float, float]


@dataclass
class Clutter:
    """A building, tree or roadside box: an oriented box (centre at mid-height)."""

    kind: str  # "building", "tree", "box"
    centre_m: np.ndarray
    size_m: tuple[float, float, float]
    yaw_rad: float
    colour: tuple[float, float, float]


@dataclass
class SlotPlacement:
    spec: PatchSlotSpec
    corners_m: np.ndarray  # (4, 3) TL, TR, BR, BL of the patch image in the world
    size_m: tuple[float, float]  # (width, height) of the patch image
    normal: np.ndarray


@dataclass
class Layout:
    road: Road
    signs: list[SignPlacement]
    vehicles: list[VehiclePlacement]
    clutter: list[Clutter]
    slots: dict[str, SlotPlacement]
    stop_line_s_m: float | None
    sun_direction: np.ndarray = field(default_factory=lambda: np.array([0.0, 0.0, 1.0]))


def _rot_z(v: np.ndarray, angle_rad: float) -> np.ndarray:
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1], v[2]])


def place_sign(road: Road, spec: SignSpec) -> SignPlacement:
    x, y, h = (float(v) for v in road.pose(spec.s_m))
    left_edge, right_edge = road.edges_m()
    d = right_edge - spec.offset_m if spec.side == "right" else left_edge + spec.offset_m
    base = np.r_[road.point(spec.s_m, d), 0.0]
    yaw = math.radians(spec.yaw_deg)
    normal = _rot_z(np.array([-math.cos(h), -math.sin(h), 0.0]), yaw)
    right = _rot_z(np.array([math.sin(h), -math.cos(h), 0.0]), yaw)
    up = np.array([0.0, 0.0, 1.0])
    w, hh = spec.face_size_m
    tl = base + up * (spec.height_m + hh) - right * w / 2
    corners = np.array([tl, tl + right * w, tl + right * w - up * hh, tl - up * hh])
    uv = face_outline(spec.kind)
    outline = tl + np.outer(uv[:, 0] * w, right) - np.outer(uv[:, 1] * hh, up)
    pole_base = base - normal * 0.04
    pole_top = pole_base + up * (spec.height_m + hh * 0.95)
    return SignPlacement(spec, corners, outline, uv, normal, pole_base, pole_top)


def place_vehicle(road: Road, spec: VehicleSpec, s_m: float | None = None, colour=None) -> VehiclePlacement:
    s = spec.s_m if s_m is None else s_m
    size = VEHICLE_SIZE_M[spec.kind]
    _, _, h = road.pose(s)
    xy = road.point(s, spec.lateral_m)
    yaw = float(h) + math.radians(spec.yaw_deg)
    return VehiclePlacement(spec, s, np.r_[xy, size[2] / 2], yaw, size, colour or spec.colour or (0.5, 0.5, 0.5))


def place_slot(road: Road, spec: PatchSlotSpec, signs: dict[str, SignPlacement], ego_lane: int) -> SlotPlacement:
    if spec.kind == "sign_face":
        sign = signs[spec.sign]  # type: ignore[index]
        return SlotPlacement(spec, sign.face_corners_m.copy(), sign.spec.face_size_m, sign.normal)
    lane = ego_lane if spec.lane is None else spec.lane
    s_c = float(spec.s_m) + spec.length_m / 2  # type: ignore[arg-type]
    _, _, h = (float(v) for v in road.pose(s_c))
    centre = np.r_[road.point(s_c, road.lane_centre_m(lane) + spec.lateral_m), 0.0]
    f = np.array([math.cos(h), math.sin(h), 0.0])
    left = np.array([-math.sin(h), math.cos(h), 0.0])
    half_l, half_w = spec.length_m / 2, spec.width_m / 2
    corners = np.array([
        centre + f * half_l + left * half_w,  # far-left: top-left of the image
        centre + f * half_l - left * half_w,
        centre - f * half_l - left * half_w,
        centre - f * half_l + left * half_w,
    ])
    return SlotPlacement(spec, corners, (spec.width_m, spec.length_m), np.array([0.0, 0.0, 1.0]))


def sun_direction(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """Unit vector from the ground towards the sun; azimuth is a compass bearing (0 = +y north, 90 = +x east)."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    return np.array([math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), math.sin(el)])


def _clutter(road: Road, scenario: Scenario, rng: np.random.Generator, sign_s: list[float]) -> list[Clutter]:
    spec = scenario.distractors
    out: list[Clutter] = []
    left_edge, right_edge = road.edges_m()
    outer = scenario.road.shoulder_m
    for side in (1.0, -1.0):
        edge = (left_edge if side > 0 else right_edge) + side * outer
        for kind, rate in (("building", spec.buildings_per_100m), ("tree", spec.trees_per_100m)):
            count = rng.poisson(rate * road.length_m / 100.0)
            for _ in range(count):
                s = float(rng.uniform(0, road.length_m))
                setback = float(rng.uniform(*spec.setback_m))
                if kind == "building":
                    size = (float(rng.uniform(8, 25)), float(rng.uniform(8, 16)), float(rng.uniform(4, 16)))
                    setback = max(setback, 6.0)
                    d = edge + side * (setback + size[1] / 2)
                    colour = (1.0, 1.0, 1.0)
                else:
                    size = (1.0, 1.0, float(rng.uniform(4, 9)))
                    d = edge + side * setback
                    colour = tuple(float(v) for v in np.array([0.24, 0.42, 0.16]) * rng.uniform(0.75, 1.25))
                if any(abs(s - ss) < 4.0 for ss in sign_s) and setback < 6:
                    continue
                _, _, h = road.pose(s)
                xy = road.point(s, d)
                out.append(Clutter(kind, np.r_[xy, size[2] / 2], size, float(h), colour))  # type: ignore[arg-type]
        if spec.red_objects:
            for _ in range(rng.poisson(1.0 * road.length_m / 100.0)):
                s = float(rng.uniform(0, road.length_m))
                size = (float(rng.uniform(0.6, 2.5)), float(rng.uniform(0.6, 1.5)), float(rng.uniform(0.6, 1.8)))
                d = edge + side * float(rng.uniform(1.5, 8.0))
                _, _, h = road.pose(s)
                colour = tuple(float(v) for v in np.array([0.72, 0.1, 0.1]) * rng.uniform(0.8, 1.1))
                out.append(Clutter("box", np.r_[road.point(s, d), size[2] / 2], size,
                                   float(h) + float(rng.uniform(-0.5, 0.5)), colour))  # type: ignore[arg-type]
    return out


def vehicle_colour(rng: np.random.Generator, red_allowed: bool = True) -> tuple[float, float, float]:
    palette = [(0.85, 0.85, 0.85), (0.1, 0.1, 0.12), (0.45, 0.47, 0.5), (0.15, 0.22, 0.45), (0.6, 0.6, 0.62),
               (0.25, 0.35, 0.25), (0.85, 0.75, 0.55)]
    if red_allowed:
        palette.append((0.65, 0.08, 0.08))
    return palette[int(rng.integers(len(palette)))]


def build_layout(scenario: Scenario, sun_azimuth_deg: float, sun_elevation_deg: float) -> Layout:
    """Place the road, signs, vehicles, clutter and patch slots of ``scenario`` (seeded by ``scenario.seed``)."""
    rng = np.random.default_rng(scenario.seed)
    road = Road(scenario.road)
    signs = [place_sign(road, s) for s in scenario.signs]
    by_id = {s.spec.id: s for s in signs}
    vehicles = [
        place_vehicle(road, v, colour=v.colour or vehicle_colour(rng, scenario.distractors.red_objects))
        for v in scenario.vehicles
    ]
    clutter = _clutter(road, scenario, rng, [s.s_m for s in scenario.signs])
    slots = {p.name: place_slot(road, p, by_id, scenario.ego_lane) for p in scenario.patch_slots}
    return Layout(road, signs, vehicles, clutter, slots, scenario.road.stop_line_s_m,
                  sun_direction(sun_azimuth_deg, sun_elevation_deg))
