"""Random scene sampling for training data: roads, signs, vehicles, clutter, light, weather, camera.

Every draw comes from one ``numpy.random.Generator``, so a seed fixes the whole data set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from patchsim.config import param
from patchsim.sim.scenario import (
    CameraSpec,
    DistractorSpec,
    EgoSpec,
    LightingSpec,
    RoadSpec,
    Scenario,
    SegmentSpec,
    SignSpec,
    VehicleSpec,
)

SPEED_LIMITS_MPH = (15, 20, 25, 30, 35, 40, 45, 50, 55, 60, 65, 70, 75)
PRESETS = ("noon", "morning", "evening", "overcast", "dusk")


@dataclass
class SceneRanges:
    """Ranges the random scenes are drawn from (uniform unless noted)."""

    road_length_m: float = param(220.0, unit="m", range=(50.0, 2000.0), help="road length per scene")
    curve_probability: float = param(0.4, range=(0.0, 1.0), help="share of scenes with a curve")
    curve_radius_m: tuple[float, float] = param((120.0, 800.0), unit="m", range=(30.0, 1e5), help="arc radius")
    lanes: tuple[int, int] = param((1, 3), range=(1, 6), help="lane count")
    lane_width_m: tuple[float, float] = param((3.0, 3.8), unit="m", range=(2.5, 5.0), help="lane width")
    signs_per_scene: tuple[int, int] = param((1, 4), range=(0, 12), help="signs per scene")
    left_side_probability: float = param(0.2, range=(0.0, 1.0), help="share of signs on the left")
    sign_offset_m: tuple[float, float] = param((0.5, 6.0), unit="m", range=(0.3, 15.0), help="road edge to sign")
    sign_height_m: tuple[float, float] = param((1.5, 2.8), unit="m", range=(0.5, 6.0), help="to face bottom")
    sign_yaw_deg: tuple[float, float] = param((-35.0, 35.0), unit="deg", range=(-75.0, 75.0), help="face turn")
    sign_scale: tuple[float, float] = param((0.85, 1.2), range=(0.5, 2.0), help="face size factor")
    vehicles_per_scene: tuple[int, int] = param((0, 6), range=(0, 30), help="vehicles per scene")
    fog_probability: float = param(0.25, range=(0.0, 1.0), help="share of foggy scenes")
    fog_visibility_m: tuple[float, float] = param((80.0, 1000.0), unit="m", range=(10.0, 10000.0), help="visibility")
    exposure: tuple[float, float] = param((0.75, 1.3), range=(0.3, 3.0), help="camera exposure gain")
    camera_height_m: tuple[float, float] = param((1.2, 1.8), unit="m", range=(0.3, 5.0), help="camera height")
    camera_pitch_deg: tuple[float, float] = param((-5.0, 1.0), unit="deg", range=(-45.0, 30.0), help="pitch")
    hfov_deg: tuple[float, float] = param((45.0, 55.0), unit="deg", range=(10.0, 140.0), help="field of view")
    noise_std: tuple[float, float] = param((0.0, 0.02), range=(0.0, 0.2), help="sensor noise")


def _u(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(lo_hi[0], lo_hi[1]))


def random_road(rng: np.random.Generator, r: SceneRanges) -> RoadSpec:
    if rng.random() < r.curve_probability:
        straight = float(rng.uniform(10, r.road_length_m * 0.4))
        segments = [SegmentSpec("straight", straight),
                    SegmentSpec("arc", r.road_length_m - straight, _u(rng, r.curve_radius_m),
                                "left" if rng.random() < 0.5 else "right")]
    else:
        segments = [SegmentSpec("straight", r.road_length_m)]
    lanes = int(rng.integers(r.lanes[0], r.lanes[1] + 1))
    return RoadSpec(segments=segments, lanes=lanes, lane_width_m=_u(rng, r.lane_width_m),
                    lane_line=str(rng.choice(["dashed", "dashed", "solid", "none"])) if lanes > 1 else "none",
                    edge_lines=bool(rng.random() < 0.9), asphalt_tone=float(rng.uniform(0.22, 0.45)),
                    asphalt_wear=float(rng.uniform(0.2, 0.9)),
                    ground=str(rng.choice(["grass", "grass", "dirt", "concrete"])))


def random_lighting(rng: np.random.Generator, r: SceneRanges) -> LightingSpec:
    preset = str(rng.choice(PRESETS, p=[0.3, 0.2, 0.2, 0.2, 0.1]))
    fog = _u(rng, r.fog_visibility_m) if rng.random() < r.fog_probability else None
    return LightingSpec(preset=preset, sun_azimuth_deg=float(rng.uniform(0, 360)),
                        sun_elevation_deg=None if preset == "dusk" else float(rng.uniform(8, 75)),
                        fog_visibility_m=fog, exposure=_u(rng, r.exposure), shadows=bool(rng.random() < 0.85))


def random_camera(rng: np.random.Generator, r: SceneRanges, width_px: int, height_px: int) -> CameraSpec:
    return CameraSpec(width_px=width_px, height_px=height_px, hfov_deg=_u(rng, r.hfov_deg),
                      height_m=_u(rng, r.camera_height_m), pitch_deg=_u(rng, r.camera_pitch_deg),
                      noise_std=_u(rng, r.noise_std))


def random_detection_scene(rng: np.random.Generator, r: SceneRanges, width_px: int = 640, height_px: int = 384,
                           sign_kinds: tuple[str, ...] = ("stop_sign", "speed_limit", "yield")) -> Scenario:
    """A scene with several signs and vehicles for detector training."""
    road = random_road(rng, r)
    n_signs = int(rng.integers(r.signs_per_scene[0], r.signs_per_scene[1] + 1))
    slots = np.sort(rng.choice(np.arange(40.0, r.road_length_m - 10.0, 12.0), size=n_signs, replace=False))
    signs = []
    for i, s in enumerate(slots):
        kind = str(rng.choice(sign_kinds))
        signs.append(SignSpec(
            id=f"sign{i}", kind=kind, s_m=float(s + rng.uniform(-4, 4)),  # type: ignore[arg-type]
            side="left" if rng.random() < r.left_side_probability else "right",
            offset_m=_u(rng, r.sign_offset_m), height_m=_u(rng, r.sign_height_m), yaw_deg=_u(rng, r.sign_yaw_deg),
            speed_limit_mph=int(rng.choice(SPEED_LIMITS_MPH)), scale=_u(rng, r.sign_scale)))
    vehicles = []
    for i in range(int(rng.integers(r.vehicles_per_scene[0], r.vehicles_per_scene[1] + 1))):
        half = road.width_m / 2
        where = rng.random()
        if where < 0.5:  # in a lane
            lane = int(rng.integers(road.lanes))
            lateral = road.lane_centre_m(lane) + float(rng.uniform(-0.3, 0.3))
            yaw = float(rng.choice([0.0, 180.0])) + float(rng.uniform(-5, 5))
        else:  # parked beside the road
            side = 1 if rng.random() < 0.5 else -1
            lateral = side * (half + road.shoulder_m + float(rng.uniform(0.5, 4.0)))
            yaw = float(rng.uniform(-20, 20)) + float(rng.choice([0.0, 180.0]))
        vehicles.append(VehicleSpec(id=f"veh{i}", kind=str(rng.choice(["car", "car", "car", "van", "truck"])),
                                    s_m=float(rng.uniform(25, r.road_length_m - 5)), lateral_m=lateral, yaw_deg=yaw))
    return Scenario(
        name="random_detection", seed=int(rng.integers(0, 2**31 - 1)), road=road, signs=signs, vehicles=vehicles,
        distractors=DistractorSpec(buildings_per_100m=float(rng.uniform(0, 4)), trees_per_100m=float(rng.uniform(0, 10)),
                                   setback_m=(float(rng.uniform(3, 10)), float(rng.uniform(12, 40))), red_objects=True),
        lighting=random_lighting(rng, r), camera=random_camera(rng, r, width_px, height_px),
        ego=EgoSpec(start_s_m=0.0, lane=int(rng.integers(road.lanes))),
    )


def random_lane_scene(rng: np.random.Generator, r: SceneRanges, length_m: float = 260.0, width_px: int = 640,
                      height_px: int = 384, camera_jitter: bool = False) -> Scenario:
    """A scene for lane keeping: straights and curves, traffic beside the lane, varied light.

    The camera mount stays at the default unless ``camera_jitter``: a lane-keeper is trained for
    one car's camera, as a real one is.
    """
    rng_road = SceneRanges(**{**r.__dict__, "road_length_m": length_m})
    road = random_road(rng, rng_road)
    vehicles = []
    for i in range(int(rng.integers(0, 4))):
        side = 1 if rng.random() < 0.5 else -1
        lateral = side * (road.width_m / 2 + road.shoulder_m + float(rng.uniform(0.5, 3.0)))
        vehicles.append(VehicleSpec(id=f"veh{i}", kind="car", s_m=float(rng.uniform(20, length_m - 5)),
                                    lateral_m=lateral, yaw_deg=float(rng.choice([0.0, 180.0]))))
    camera = random_camera(rng, r, width_px, height_px) if camera_jitter else CameraSpec(width_px=width_px,
                                                                                           height_px=height_px)
    if not camera_jitter:
        camera.noise_std = _u(rng, r.noise_std)
    lighting = random_lighting(rng, r)
    return Scenario(
        name="random_lane", seed=int(rng.integers(0, 2**31 - 1)), road=road, vehicles=vehicles,
        distractors=DistractorSpec(buildings_per_100m=float(rng.uniform(0, 3)), trees_per_100m=float(rng.uniform(0, 8))),
        lighting=lighting, camera=camera, ego=EgoSpec(start_s_m=5.0, lane=int(rng.integers(road.lanes))),
    )
