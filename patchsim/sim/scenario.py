"""Scenario specification: the data a scenario YAML file holds.

A scenario sets the road, the signs and other objects, the lighting, the camera, the ego
vehicle and its start, the patch slots, the duration, and ranges for randomization. All
lengths are metres, angles degrees (in files) and times seconds.

Lateral positions are measured from the road's reference line (the middle of the carriageway),
positive to the left of the driving direction. Lanes are numbered from the left, starting at 0.

>>> from patchsim.sim.scenario import load_scenario
>>> sc = load_scenario("scenarios/stop_sign_approach.yaml")  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import dataclasses
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from patchsim.config import FieldError, _build, _Ctx, from_dict, param, read_yaml
from patchsim.errors import ConfigError

SignKind = Literal["stop_sign", "speed_limit", "yield"]
SIGN_KINDS: tuple[str, ...] = ("stop_sign", "speed_limit", "yield")

#: Face size (width_m, height_m) of each sign kind, US MUTCD conventional-road sizes.
SIGN_FACE_SIZE_M: dict[str, tuple[float, float]] = {
    "stop_sign": (0.75, 0.75),  # R1-1, 30 in octagon
    "speed_limit": (0.60, 0.75),  # R2-1, 24 x 30 in
    "yield": (0.90, 0.78),  # R1-2, 36 in equilateral triangle (height = side * sqrt(3)/2)
}


@dataclass
class SegmentSpec:
    """One piece of road centre line: a straight or a circular arc."""

    kind: Literal["straight", "arc"] = param("straight", help="straight or arc")
    length_m: float = param(100.0, unit="m", range=(1.0, 5000.0), help="length along the centre line")
    radius_m: float | None = param(None, unit="m", range=(10.0, 1e5), help="arc radius (arcs only)")
    turn: Literal["left", "right"] = param("left", help="arc direction (arcs only)")

    def __post_init__(self) -> None:
        if self.kind == "arc" and self.radius_m is None:
            raise FieldError("radius_m", "an arc needs radius_m")


@dataclass
class RoadSpec:
    segments: list[SegmentSpec] = param(default_factory=lambda: [SegmentSpec()], help="centre-line pieces, in order")
    lanes: int = param(2, range=(1, 6), help="number of lanes, all in the driving direction")
    lane_width_m: float = param(3.5, unit="m", range=(2.5, 5.0), help="lane width")
    shoulder_m: float = param(1.0, unit="m", range=(0.0, 5.0), help="paved shoulder outside each edge line")
    lane_line: Literal["dashed", "solid", "none"] = param("dashed", help="marking between lanes")
    edge_lines: bool = param(True, help="solid white edge lines")
    marking_width_m: float = param(0.15, unit="m", range=(0.05, 0.4), help="width of lane markings")
    dash_length_m: float = param(3.0, unit="m", range=(0.5, 10.0), help="dash length")
    dash_gap_m: float = param(9.0, unit="m", range=(0.5, 20.0), help="gap between dashes")
    stop_line_s_m: float | None = param(None, unit="m", range=(0.0, None), help="stop line position along the road")
    stop_line_width_m: float = param(0.45, unit="m", range=(0.2, 0.8), help="stop line depth along the road")
    asphalt_tone: float = param(0.32, range=(0.05, 0.9), help="mean asphalt brightness")
    asphalt_wear: float = param(0.5, range=(0.0, 1.0), help="strength of asphalt texture noise")
    ground: Literal["grass", "dirt", "concrete"] = param("grass", help="ground beside the road")

    @property
    def width_m(self) -> float:
        """Carriageway width between the edge lines."""
        return self.lanes * self.lane_width_m

    def lane_centre_m(self, lane: int) -> float:
        """Lateral offset of a lane's centre from the reference line (+ left)."""
        return (self.lanes / 2 - lane - 0.5) * self.lane_width_m


@dataclass
class SignSpec:
    id: str = param(help="name used by patch slots and results")
    kind: SignKind = param("stop_sign", help="stop_sign, speed_limit or yield")
    s_m: float = param(60.0, unit="m", range=(0.0, None), help="position along the road")
    side: Literal["right", "left"] = param("right", help="road side")
    offset_m: float = param(3.0, unit="m", range=(0.3, 15.0), help="from the road edge to the sign centre")
    height_m: float = param(2.1, unit="m", range=(0.5, 6.0), help="ground to the bottom of the face")
    yaw_deg: float = param(0.0, unit="deg", range=(-75.0, 75.0), help="turn of the face away from facing traffic")
    speed_limit_mph: int = param(35, range=(5, 85), help="number on a speed limit sign")
    scale: float = param(1.0, range=(0.5, 2.0), help="face size relative to the standard size")

    @property
    def face_size_m(self) -> tuple[float, float]:
        w, h = SIGN_FACE_SIZE_M[self.kind]
        return (w * self.scale, h * self.scale)


@dataclass
class VehicleSpec:
    id: str = param(help="name used in results")
    kind: Literal["car", "van", "truck"] = param("car", help="body shape")
    s_m: float = param(30.0, unit="m", range=(0.0, None), help="position along the road")
    lateral_m: float = param(-5.0, unit="m", range=(-30.0, 30.0), help="from the reference line (+ left)")
    yaw_deg: float = param(0.0, unit="deg", range=(-180.0, 180.0), help="relative to the road direction")
    speed_mps: float = param(0.0, unit="m/s", range=(0.0, 40.0), help="along the road, keeping its lateral offset")
    colour: tuple[float, float, float] | None = param(None, range=(0.0, 1.0), help="body RGB in [0,1]; random if unset")


@dataclass
class DistractorSpec:
    """Procedural roadside clutter, placed by the scenario seed."""

    buildings_per_100m: float = param(2.0, range=(0.0, 20.0), help="buildings per 100 m of road, each side")
    trees_per_100m: float = param(4.0, range=(0.0, 40.0), help="trees per 100 m of road, each side")
    setback_m: tuple[float, float] = param((8.0, 30.0), unit="m", range=(2.0, 200.0), help="distance from road edge")
    red_objects: bool = param(True, help="include red boxes and red vehicles as hard negatives for detectors")


@dataclass
class LightingSpec:
    preset: Literal["noon", "morning", "evening", "overcast", "dusk"] = param("noon", help="time of day")
    sun_azimuth_deg: float | None = param(None, unit="deg", range=(-360.0, 360.0), help="compass bearing of the sun")
    sun_elevation_deg: float | None = param(None, unit="deg", range=(2.0, 90.0), help="sun height above horizon")
    sun_intensity: float | None = param(None, range=(0.0, 2.0), help="directional light strength")
    ambient: float | None = param(None, range=(0.0, 1.5), help="ambient light strength")
    fog_visibility_m: float | None = param(None, unit="m", range=(10.0, 10000.0), help="meteorological visibility")
    shadows: bool = param(True, help="planar cast shadows on the ground")
    exposure: float = param(1.0, range=(0.3, 3.0), help="camera exposure gain")


@dataclass
class CameraSpec:
    width_px: int = param(640, range=(64, 4096), help="image width")
    height_px: int = param(384, range=(64, 4096), help="image height")
    hfov_deg: float = param(50.0, unit="deg", range=(10.0, 140.0), help="horizontal field of view")
    height_m: float = param(1.4, unit="m", range=(0.3, 5.0), help="mount height above ground")
    pitch_deg: float = param(-2.0, unit="deg", range=(-45.0, 30.0), help="pitch, negative looks down")
    forward_m: float = param(1.8, unit="m", range=(-2.0, 6.0), help="mount position ahead of the rear axle")
    lateral_m: float = param(0.0, unit="m", range=(-2.0, 2.0), help="mount offset to the left")
    yaw_deg: float = param(0.0, unit="deg", range=(-30.0, 30.0), help="mount yaw, positive to the left")
    noise_std: float = param(0.0, range=(0.0, 0.2), help="Gaussian sensor noise, in [0,1] units")


@dataclass
class EgoSpec:
    start_s_m: float = param(0.0, unit="m", range=(0.0, None), help="rear axle position along the road at start")
    lane: int | None = param(None, range=(0, 5), help="lane index from the left; default the rightmost")
    lateral_offset_m: float = param(0.0, unit="m", range=(-3.0, 3.0), help="start offset from the lane centre")
    heading_offset_deg: float = param(0.0, unit="deg", range=(-45.0, 45.0), help="start heading relative to road")
    speed_mps: float = param(10.0, unit="m/s", range=(0.0, 50.0), help="start speed")
    wheelbase_m: float = param(2.7, unit="m", range=(1.5, 6.0), help="bicycle model wheelbase")
    max_steer_deg: float = param(35.0, unit="deg", range=(5.0, 60.0), help="front wheel angle at steer = 1")
    max_accel_mps2: float = param(3.0, unit="m/s^2", range=(0.5, 10.0), help="acceleration at throttle = 1")
    max_brake_mps2: float = param(8.0, unit="m/s^2", range=(1.0, 12.0), help="deceleration at brake = 1")


@dataclass
class DriverSpec:
    """The ground-truth expert that drives when no victim model is in control."""

    target_speed_mps: float = param(10.0, unit="m/s", range=(0.0, 40.0), help="cruise speed")
    stop_at_stop_line: bool = param(True, help="brake to stop at the stop line when a stop sign governs it")
    lookahead_m: float = param(8.0, unit="m", range=(2.0, 40.0), help="pure-pursuit look-ahead distance")


@dataclass
class PatchSlotSpec:
    name: str = param(help="slot name used by set_patch")
    kind: Literal["sign_face", "road"] = param("sign_face", help="a sign face, or a region of road surface")
    sign: str | None = param(None, help="sign id (sign_face slots)")
    s_m: float | None = param(None, unit="m", range=(0.0, None), help="start of the region along the road (road)")
    lane: int | None = param(None, range=(0, 5), help="lane of the region; default the ego lane (road)")
    lateral_m: float = param(0.0, unit="m", range=(-10.0, 10.0), help="region centre offset from lane centre (road)")
    width_m: float = param(3.5, unit="m", range=(0.1, 20.0), help="region width across the road (road)")
    length_m: float = param(3.6, unit="m", range=(0.1, 50.0), help="region length along the road (road)")

    def __post_init__(self) -> None:
        if self.kind == "sign_face" and not self.sign:
            raise FieldError("sign", "a sign_face slot needs the id of its sign")
        if self.kind == "road" and self.s_m is None:
            raise FieldError("s_m", "a road slot needs s_m")


@dataclass
class Scenario:
    name: str = param("scenario", help="scenario name")
    description: str = param("", help="one line for reports")
    seed: int = param(0, range=(0, 2**31 - 1), help="seed for randomization and clutter")
    dt_s: float = param(0.05, unit="s", range=(0.005, 0.1), help="fixed simulation time step")
    duration_s: float = param(10.0, unit="s", range=(0.05, 3600.0), help="episode length")
    road: RoadSpec = param(default_factory=RoadSpec)
    signs: list[SignSpec] = param(default_factory=list)
    vehicles: list[VehicleSpec] = param(default_factory=list)
    distractors: DistractorSpec = param(default_factory=DistractorSpec)
    lighting: LightingSpec = param(default_factory=LightingSpec)
    camera: CameraSpec = param(default_factory=CameraSpec)
    ego: EgoSpec = param(default_factory=EgoSpec)
    driver: DriverSpec = param(default_factory=DriverSpec)
    patch_slots: list[PatchSlotSpec] = param(default_factory=list)
    randomize: dict[str, list[Any]] = param(
        default_factory=dict,
        help="dotted key -> [low, high] (uniform) or a list of choices, applied per seed at reset",
    )

    def __post_init__(self) -> None:
        ids = [s.id for s in self.signs]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise FieldError("signs", f"duplicate sign id {sorted(dup)[0]!r}")
        names = [p.name for p in self.patch_slots]
        dupn = {n for n in names if names.count(n) > 1}
        if dupn:
            raise FieldError("patch_slots", f"duplicate patch slot {sorted(dupn)[0]!r}")
        for i, slot in enumerate(self.patch_slots):
            if slot.kind == "sign_face" and slot.sign not in ids:
                raise FieldError(f"patch_slots.{i}.sign", f"slot {slot.name!r} names sign {slot.sign!r}, which is not in signs ({', '.join(ids) or 'none'})")
        if self.ego.lane is not None and self.ego.lane >= self.road.lanes:
            raise FieldError("ego.lane", f"ego.lane {self.ego.lane} does not exist on a {self.road.lanes}-lane road")

    @property
    def ego_lane(self) -> int:
        return self.road.lanes - 1 if self.ego.lane is None else self.ego.lane

    @property
    def num_steps(self) -> int:
        return max(1, int(round(self.duration_s / self.dt_s)))

    def sign(self, sign_id: str) -> SignSpec:
        for s in self.signs:
            if s.id == sign_id:
                return s
        raise KeyError(f"no sign {sign_id!r} in scenario {self.name!r}")


# --------------------------------------------------------------------------- loading, randomizing


def load_scenario(path: str | Path) -> Scenario:
    """Load and check a scenario YAML file, including its randomization keys.

    Raises:
        ConfigError: naming the file, key and line of the first problem.
    """
    located = read_yaml(path)
    ctx = _Ctx(str(path), located.lines)
    scenario = _build(Scenario, located.data, (), ctx)
    for key, spec in scenario.randomize.items():
        try:
            _check_randomize_entry(scenario, key, spec)
        except ValueError as exc:
            raise ctx.error(str(exc), ("randomize", key)) from exc
    return scenario


def scenario_from_dict(data: dict[str, Any], source: str = "<dict>") -> Scenario:
    scenario = from_dict(Scenario, data, source)
    for key, spec in scenario.randomize.items():
        try:
            _check_randomize_entry(scenario, key, spec)
        except ValueError as exc:
            raise ConfigError(str(exc), source, f"randomize.{key}") from exc
    return scenario


def _resolve(obj: Any, dotted: str) -> tuple[Any, str | int, dataclasses.Field | None]:
    """Walk ``dotted`` down ``obj``; return (parent, last part, dataclass field or None)."""
    parts = dotted.split(".")
    cur = obj
    for part in parts[:-1]:
        cur = _child(cur, part, dotted)
    last = parts[-1]
    if isinstance(cur, list):
        return cur, _index(cur, last, dotted), None
    if not dataclasses.is_dataclass(cur):
        raise ValueError(f"{dotted!r} does not name a setting")
    fields = {f.name: f for f in dataclasses.fields(cur)}
    if last not in fields:
        raise ValueError(f"{dotted!r}: {type(cur).__name__} has no key {last!r}")
    return cur, last, fields[last]


def _index(seq: list, part: str, dotted: str) -> int:
    if not part.isdigit() or int(part) >= len(seq):
        raise ValueError(f"{dotted!r}: {part!r} is not an index of a list of {len(seq)}")
    return int(part)


def _child(cur: Any, part: str, dotted: str) -> Any:
    if isinstance(cur, list):
        return cur[_index(cur, part, dotted)]
    if dataclasses.is_dataclass(cur) and hasattr(cur, part) and part in {f.name for f in dataclasses.fields(cur)}:
        return getattr(cur, part)
    raise ValueError(f"{dotted!r}: no key {part!r} in {type(cur).__name__}")


def _check_randomize_entry(scenario: Scenario, key: str, spec: list[Any]) -> None:
    parent, last, fld = _resolve(scenario, key)
    if not isinstance(spec, list) or len(spec) == 0:
        raise ValueError("expected [low, high] or a list of choices")
    current = parent[last] if isinstance(parent, list) else getattr(parent, last)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in spec)
    if numeric and len(spec) == 2 and isinstance(current, (int, float, type(None))) and not isinstance(current, bool):
        lo, hi = spec
        if lo > hi:
            raise ValueError(f"low {lo} is above high {hi}")
        if fld is not None and fld.metadata.get("range"):
            rlo, rhi = fld.metadata["range"]
            if (rlo is not None and lo < rlo) or (rhi is not None and hi > rhi):
                raise ValueError(f"[{lo}, {hi}] leaves the allowed range [{rlo}, {rhi}]")
    # choices: each must be a valid value for the key; checked by building a copy with it
    else:
        for choice in spec:
            trial = copy.deepcopy(scenario)
            _assign(trial, key, choice)
            from_dict(Scenario, _plain(trial))


def _assign(obj: Any, dotted: str, value: Any) -> None:
    parent, last, _ = _resolve(obj, dotted)
    if isinstance(parent, list):
        parent[last] = value
    else:
        setattr(parent, last, value)


def _plain(sc: Scenario) -> dict[str, Any]:
    from patchsim.config import to_dict

    data = to_dict(sc)
    data["randomize"] = {}
    return data


def draw_value(scenario: Scenario, key: str, spec: list[Any], rng: random.Random) -> Any:
    """One draw of a randomization entry: ``[low, high]`` of numbers uniformly (a whole number for
    an int key), any other list as a set of choices."""
    parent, last, fld = _resolve(scenario, key)
    current = parent[last] if isinstance(parent, list) else getattr(parent, last)
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in spec)
    if numeric and len(spec) == 2 and not isinstance(current, bool):
        lo, hi = spec
        is_int = isinstance(current, int) or (fld is not None and "int" in str(fld.type) and "float" not in str(fld.type))
        return rng.randint(int(lo), int(hi)) if is_int else rng.uniform(float(lo), float(hi))
    return spec[rng.randrange(len(spec))]


def randomized(scenario: Scenario, seed: int) -> Scenario:
    """A copy of ``scenario`` with every ``randomize`` entry drawn from ``seed`` (:func:`draw_value`).

    The same seed always gives the same scenario.
    """
    rng = random.Random(seed)
    out = copy.deepcopy(scenario)
    for key in sorted(out.randomize):
        _assign(out, key, draw_value(out, key, out.randomize[key], rng))
    out.seed = seed
    return out


def with_overrides(scenario: Scenario, overrides: dict[str, Any], source: str = "<overrides>") -> Scenario:
    """A copy of ``scenario`` with dotted keys set (``{"lighting.preset": "dusk", "signs.0.offset_m": 4.5}``).

    Each value is checked like a value in a scenario file (type, range, cross-field rules); an
    overridden key is dropped from ``randomize``, so the override holds for every seed.

    Raises:
        ConfigError: naming ``source`` and the key.
    """
    out = copy.deepcopy(scenario)
    for key, value in overrides.items():
        try:
            _assign(out, key, value)
        except ValueError as exc:
            raise ConfigError(str(exc), source, key) from exc
        out.randomize.pop(key, None)
    randomize = out.randomize
    try:
        checked = from_dict(Scenario, _plain(out), source)
    except ConfigError as exc:
        raise ConfigError(exc.message, source, exc.key or ", ".join(overrides)) from exc
    checked.randomize = randomize
    return checked
