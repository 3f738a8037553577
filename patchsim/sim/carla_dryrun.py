"""What a scenario becomes in CARLA, worked out without a server or the ``carla`` package.

:func:`describe_in_carla` gives the settings, weather, blueprints, camera attributes and props
that :class:`~patchsim.sim.carla_backend.CarlaSimulator` would ask a server for, and what of
the scenario it would not use, as a JSON-ready dict; :func:`format_dry_run` prints it for a
person. Both use the same functions as the backend, so they cannot drift from it. Positions on
the map are not known without the server (the road is the map's lane at the spawn point): the
dry run gives them along the road, as the scenario does.

>>> from patchsim.sim.scenario import load_scenario
>>> print(format_dry_run(describe_in_carla(load_scenario("scenarios/stop_sign_approach.yaml"))))  # doctest: +SKIP
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from patchsim.sim.carla_backend import (
    BOARD_FILL_RGB,
    CAMERA_BLUEPRINT,
    EGO_ROLE_NAME,
    POSE_LIFT_M,
    ROAD_FILL_RGB,
    SPAWN_LIFT_M,
    VEHICLE_BLUEPRINTS,
    PropSpec,
    prop_attributes,
    prop_canvas,
    traffic_colours,
)
from patchsim.sim.carla_convert import (
    FOG_DENSITY_VISIBILITY_M,
    camera_attributes,
    camera_mount,
    weather_adjustments,
    weather_preset,
    weather_values,
)
from patchsim.sim.scenario import Scenario

DEFAULT_EGO_BLUEPRINT = "vehicle.tesla.model3"


def describe_in_carla(scenario: Scenario, spawn_index: int = 0, town: str | None = None) -> dict[str, Any]:
    """The scenario in CARLA terms, as the backend's defaults would set it up; JSON-ready (str, numbers, lists, dicts).

    Args:
        scenario: as loaded; ``randomize`` entries are listed, not drawn (a seed draws them at reset).
        spawn_index: the map spawn point the ego starts at (``CarlaSimulator(spawn_index=...)``).
        town: the map to load, or None to keep the server's.

    Returns:
        A dict with the keys ``scenario``, ``server``, ``weather``, ``camera``, ``ego``, ``traffic``,
        ``props``, ``road`` and ``not_used``. Units are in the key names (``_m``, ``_deg``, ``_s``,
        ``_mps``); CARLA's own fields keep CARLA's names and units (degrees, metres, percent).
    """
    sc = scenario
    rear_offset_m = sc.ego.wheelbase_m / 2
    return {
        "scenario": {"name": sc.name, "seed": sc.seed, "dt_s": sc.dt_s, "duration_s": sc.duration_s,
                     "steps": sc.num_steps, "randomized_at_reset": sorted(sc.randomize)},
        "server": _server(sc, spawn_index, town),
        "weather": _weather(sc),
        "camera": _camera(sc, rear_offset_m),
        "ego": _ego(sc, rear_offset_m),
        "traffic": _traffic(sc),
        "props": _props(sc, PropSpec()),
        "road": _road(sc, spawn_index),
        "not_used": _not_used(sc),
    }


def _server(sc: Scenario, spawn_index: int, town: str | None) -> dict[str, Any]:
    return {
        "town": town if town is not None else "(the server's current map)",
        "spawn_index": int(spawn_index),
        "world_settings": {"synchronous_mode": True, "fixed_delta_seconds": float(sc.dt_s)},
        "traffic_manager": {"synchronous_mode": True, "random_device_seed": int(sc.seed)},
        "restored_on_close": "the world settings found at connection; the Traffic Manager's mode set to match them",
    }


def _weather(sc: Scenario) -> dict[str, Any]:
    spec = sc.lighting
    return {
        "lighting_preset": spec.preset,
        "carla_preset": weather_preset(spec),
        "adjusted": weather_adjustments(spec),
        "parameters": weather_values(spec),
    }


def _camera(sc: Scenario, rear_offset_m: float) -> dict[str, Any]:
    (x, y, z), (pitch, yaw, roll) = camera_mount(sc.camera, rear_offset_m)
    return {
        "blueprint": CAMERA_BLUEPRINT,
        "attributes": camera_attributes(sc.camera, sc.lighting),
        "attached_to": "ego",
        "relative_location_m": {"x": x, "y": y, "z": z},
        "relative_rotation_deg": {"pitch": pitch, "yaw": yaw, "roll": roll},
        "noise_std": sc.camera.noise_std,
    }


def _ego(sc: Scenario, rear_offset_m: float) -> dict[str, Any]:
    e = sc.ego
    return {
        "blueprint": DEFAULT_EGO_BLUEPRINT,
        "role_name": EGO_ROLE_NAME,
        "lane": sc.ego_lane,
        "start_s_m": e.start_s_m,
        "lateral_offset_m": e.lateral_offset_m,
        "heading_offset_deg": e.heading_offset_deg,
        "speed_mps": e.speed_mps,
        "rear_axle_offset_m": rear_offset_m,
        "spawn_lift_m": SPAWN_LIFT_M,
        "physics": "CARLA's (steer, throttle and brake act on the CARLA vehicle)",
    }


def _traffic(sc: Scenario) -> list[dict[str, Any]]:
    colours = traffic_colours(sc, np.random.default_rng(sc.seed + 1))
    out = []
    for spec, colour in zip(sc.vehicles, colours):
        out.append({
            "id": spec.id,
            "kind": spec.kind,
            "blueprint": VEHICLE_BLUEPRINTS[spec.kind],
            "role_name": f"patchsim_{spec.id}",
            "color": ",".join(str(int(round(v * 255))) for v in colour),
            "color_source": "scenario" if spec.colour else f"drawn from seed {sc.seed + 1}",
            "s_m": spec.s_m,
            "lateral_m": spec.lateral_m,
            "yaw_deg": spec.yaw_deg,
            "speed_mps": spec.speed_mps,
            "physics": "off; moved along the road each step",
        })
    return out


def _props(sc: Scenario, prop: PropSpec) -> list[dict[str, Any]]:
    """The textured props in spawn order: a board for each sign no slot covers, then one per slot."""
    covered = {p.sign for p in sc.patch_slots if p.kind == "sign_face"}
    out = []
    for sign in sc.signs:
        if sign.id not in covered:
            out.append(_prop(prop, len(out) + 1, f"sign {sign.id!r}", sign.face_size_m, BOARD_FILL_RGB,
                             f"standing at the sign, facing the traffic ({sign.side} side, s_m {sign.s_m:g})",
                             f"the {sign.kind} face"))
    for slot in sc.patch_slots:
        if slot.kind == "sign_face":
            face = sc.sign(slot.sign).face_size_m
            out.append(_prop(prop, len(out) + 1, f"slot {slot.name!r}", face, BOARD_FILL_RGB,
                             f"standing {prop.gap_m:g} m in front of sign {slot.sign!r}",
                             "the clean face, with the patch laid over it"))
        else:
            out.append(_prop(prop, len(out) + 1, f"slot {slot.name!r}", (slot.width_m, slot.length_m),
                             ROAD_FILL_RGB, f"lying {prop.road_lift_m:g} m above the road from s_m {slot.s_m:g}",
                             "plain road grey, or the patch"))
    return out


def _prop(prop: PropSpec, number: int, shows: str, size_m: tuple[float, float], fill_rgb: tuple[float, ...],
          placement: str, content: str) -> dict[str, Any]:
    label = f"prop {number} ({shows})"
    scale, canvas = prop_canvas(prop, size_m, label)
    return {
        "name": label,
        "blueprint": prop.blueprint,
        "attributes": prop_attributes(prop, scale),
        "content_size_m": [float(size_m[0]), float(size_m[1])],
        "face_size_m": [float(canvas[0]), float(canvas[1])],
        "fill_rgb": [float(v) for v in fill_rgb],
        "placement": placement,
        "shows": content,
        "texture_check": "at reset, when in view" if shows.startswith("slot") else "none",
    }


def _road(sc: Scenario, spawn_index: int) -> dict[str, Any]:
    length = sum(seg.length_m for seg in sc.road.segments)
    return {
        "source": f"the map's driving lane nearest to spawn point {spawn_index}, sampled every 1 m",
        "behind_start_m": sc.ego.start_s_m + 1.0,
        "ahead_of_start_m": length - sc.ego.start_s_m + 1.0,
        "lanes": sc.road.lanes,
        "ego_lane": sc.ego_lane,
        "lane_width_m": "CARLA's lane width at the start",
        "stop_line_s_m": sc.road.stop_line_s_m,
        "pose_lift_m": POSE_LIFT_M,
    }


def _not_used(sc: Scenario) -> list[str]:
    """What of the scenario the CARLA backend leaves out or replaces, one line each."""
    segs = ", ".join(f"{s.kind} {s.length_m:g} m" for s in sc.road.segments)
    out = [
        f"road segments ({segs}): the road is CARLA's lane; only their total length is used",
        f"road lane_width_m {sc.road.lane_width_m:g}: CARLA's lane width is used",
        "road markings, asphalt and ground looks: the map's",
        "sign poles: signs are flat boards without poles",
        "distractors (buildings, trees, red objects): not spawned; the map has its own",
        "ego max_steer_deg, max_accel_mps2, max_brake_mps2: CARLA's vehicle physics applies",
    ]
    if sc.road.stop_line_s_m is not None:
        out.append("the stop line is not painted; stop_line_distance_m is measured to its place")
    light = sc.lighting
    ignored = [k for k in ("sun_intensity", "ambient") if getattr(light, k) is not None]
    out.append("lighting " + ", ".join(ignored + ["shadows"]) + ": no CARLA counterpart")
    if light.fog_visibility_m is not None:
        out.append(f"fog_visibility_m {light.fog_visibility_m:g}: mapped to fog_density = "
                   f"{FOG_DENSITY_VISIBILITY_M:g} / visibility (uncalibrated)")
    if sc.camera.noise_std > 0:
        out.append("camera noise_std: added to the image in numpy, not by CARLA")
    out.append("labels (the label render) and visible_fraction: none in CARLA")
    return out


def format_dry_run(d: dict[str, Any]) -> str:
    """A dry-run dict (from :func:`describe_in_carla`) as indented text, one setting a line."""
    lines: list[str] = [f"Scenario {d['scenario']['name']!r} in CARLA (dry run, no server)"]
    for key in ("scenario", "server", "weather", "camera", "ego", "road"):
        lines.append(f"{key}:")
        lines += _lines(d[key], 1)
    lines.append("traffic:")
    for v in d["traffic"]:
        lines.append(f"  {v['id']}: {v['blueprint']} at s_m {v['s_m']:g}, lateral_m {v['lateral_m']:g}, "
                     f"yaw_deg {v['yaw_deg']:g}, speed_mps {v['speed_mps']:g}, color {v['color']} "
                     f"({v['color_source']})")
    lines.append("props:")
    for p in d["props"]:
        lines.append(f"  {p['name']}: {p['blueprint']} {_inline(p['attributes'])}")
        lines.append(f"    face {p['face_size_m'][0]:.3f} x {p['face_size_m'][1]:.3f} m, content "
                     f"{p['content_size_m'][0]:.3f} x {p['content_size_m'][1]:.3f} m; {p['placement']}")
        lines.append(f"    shows {p['shows']}; texture check: {p['texture_check']}")
    lines.append("not used:")
    lines += [f"  - {line}" for line in d["not_used"]]
    return "\n".join(lines)


def _lines(value: Any, depth: int) -> list[str]:
    pad = "  " * depth
    out = []
    for k, v in value.items():
        if isinstance(v, dict):
            out.append(f"{pad}{k}:")
            out += _lines(v, depth + 1)
        else:
            out.append(f"{pad}{k}: {_scalar(v)}")
    return out


def _inline(values: dict[str, Any]) -> str:
    return "(" + ", ".join(f"{k}={_scalar(v)}" for k, v in values.items()) + ")"


def _scalar(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.6g}" if math.isfinite(v) else str(v)
    if isinstance(v, list):
        return "[" + ", ".join(_scalar(x) for x in v) + "]" if v else "none"
    return str(v)
