"""TEST DOUBLE of the ``carla`` 0.9.16 Python client API. Not CARLA, and not a simulator.

It implements only the part of the client API that :mod:`patchsim.sim.carla_backend` uses, with
the same names and call signatures, so the backend can be tested on a machine without a CARLA
server. It records what the backend asks for (settings, spawns, textures, destroys) so tests can
assert on it. ``tests/sim/test_carla_backend.py`` checks that every name the backend uses exists
in the real ``carla`` package too, so this double cannot drift from the real API unnoticed.

What it simulates, trivially:

* one straight road (``FakeRoad``): ``lanes`` driving lanes of ``lane_width_m`` starting at
  ``origin``, heading ``heading_deg`` (CARLA yaw), lane 0 on the left, over ``t`` in
  [``start_m``, ``end_m``] along the road; waypoints and spawn points on it;
* vehicles with physics move forward by speed x dt per tick, with a bicycle-like yaw rate from
  the steer (CARLA convention: steer +1 turns right, i.e. yaw grows);
* a camera sensor with ``listen`` gets a BGRA ``Image`` on every tick whose pixel (x, y) is
  B = x % 256, G = y % 256, R = frame % 256, A = 255, carrying the sensor's world transform, with
  every ``static.prop.mesh`` in front of it drawn over that as a flat quad (its 1 m face times
  its ``scale``): in the mean colour of its last diffuse texture when its material takes runtime
  textures (``FakeServer.props_accept_textures``), else in a fixed material grey.

Where it differs from the real client it is at least as strict: textures applied to an unknown
object name raise ``RuntimeError`` (the server answers "unable to find Actor to apply the
texture"), while a texture applied to an object whose material has no texture parameters changes
nothing and reports nothing, as on a server; ``Sensor.is_listening`` is a method, as in 0.9.16;
``ActorBlueprint.set_attribute`` refuses unknown attributes and non-numbers for numeric ones;
``load_world`` refuses unknown maps; ``WeatherParameters`` presets are shared instances, as in the
real package, so a backend that changed one would be seen.

Usage::

    carla = fake_carla.module()          # a fresh server with a running world
    sim = CarlaSimulator(client_module=carla)
    carla.server.world.applied_settings  # what the backend did
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np

# --------------------------------------------------------------------------- value types


class Vector3D:
    def __init__(self, x: float = 0.0, y: float = 0.0, z: float = 0.0):
        self.x, self.y, self.z = float(x), float(y), float(z)

    def length(self) -> float:
        return math.sqrt(self.x * self.x + self.y * self.y + self.z * self.z)

    def _arr(self) -> np.ndarray:
        return np.array([self.x, self.y, self.z])

    def __repr__(self) -> str:
        return f"{type(self).__name__}(x={self.x:.3f}, y={self.y:.3f}, z={self.z:.3f})"


class Location(Vector3D):
    def distance(self, other: "Location") -> float:
        return float(np.linalg.norm(self._arr() - other._arr()))


class Rotation:
    def __init__(self, pitch: float = 0.0, yaw: float = 0.0, roll: float = 0.0):
        self.pitch, self.yaw, self.roll = float(pitch), float(yaw), float(roll)

    def _matrix(self) -> np.ndarray:
        """Columns forward, right, up (Unreal's rotator), in CARLA coordinates."""
        p, y, r = (math.radians(v) for v in (self.pitch, self.yaw, self.roll))
        sp, cp, sy, cy, sr, cr = math.sin(p), math.cos(p), math.sin(y), math.cos(y), math.sin(r), math.cos(r)
        fwd = [cp * cy, cp * sy, sp]
        right = [sr * sp * cy - cr * sy, sr * sp * sy + cr * cy, -sr * cp]
        up = [-(cr * sp * cy + sr * sy), cy * sr - cr * sp * sy, cr * cp]
        return np.array([fwd, right, up]).T

    @staticmethod
    def _from_matrix(m: np.ndarray) -> "Rotation":
        fwd, right, up = m[:, 0], m[:, 1], m[:, 2]
        pitch = math.degrees(math.asin(max(-1.0, min(1.0, fwd[2]))))
        yaw = math.degrees(math.atan2(fwd[1], fwd[0]))
        roll = math.degrees(math.atan2(-right[2], up[2]))
        return Rotation(pitch, yaw, roll)

    def get_forward_vector(self) -> Vector3D:
        return Vector3D(*self._matrix()[:, 0])

    def __repr__(self) -> str:
        return f"Rotation(pitch={self.pitch:.2f}, yaw={self.yaw:.2f}, roll={self.roll:.2f})"


class Transform:
    def __init__(self, location: Location | None = None, rotation: Rotation | None = None):
        self.location = location if location is not None else Location()
        self.rotation = rotation if rotation is not None else Rotation()

    def get_forward_vector(self) -> Vector3D:
        return Vector3D(*self.rotation._matrix()[:, 0])

    def get_right_vector(self) -> Vector3D:
        return Vector3D(*self.rotation._matrix()[:, 1])

    def get_up_vector(self) -> Vector3D:
        return Vector3D(*self.rotation._matrix()[:, 2])

    def transform(self, point: Location) -> Location:
        """A point in this transform's local frame -> world."""
        return Location(*(self.rotation._matrix() @ point._arr() + self.location._arr()))

    def _compose(self, local: "Transform") -> "Transform":
        """World transform of ``local`` given relative to this one."""
        m = self.rotation._matrix() @ local.rotation._matrix()
        return Transform(self.transform(local.location), Rotation._from_matrix(m))

    def __repr__(self) -> str:
        return f"Transform({self.location}, {self.rotation})"


class BoundingBox:
    location: Location | None = None  # class-level declarations let API-name checks see instance fields
    extent: Vector3D | None = None

    def __init__(self, location: Location, extent: Vector3D):
        self.location, self.extent = location, extent


class Color:
    def __init__(self, r: int = 0, g: int = 0, b: int = 0, a: int = 255):
        self.r, self.g, self.b, self.a = int(r), int(g), int(b), int(a)


class TextureColor:
    """RGBA8 texture; ``pixels[y, x]`` is texel (x, y)."""

    def __init__(self, width: int, height: int):
        self.width, self.height = int(width), int(height)
        self.pixels = np.zeros((self.height, self.width, 4), np.uint8)

    def set(self, x: int, y: int, value: Color) -> None:
        self.pixels[y, x] = (value.r, value.g, value.b, value.a)

    def get(self, x: int, y: int) -> Color:
        return Color(*(int(v) for v in self.pixels[y, x]))


class FloatColor:
    def __init__(self, r: float = 0.0, g: float = 0.0, b: float = 0.0, a: float = 1.0):
        self.r, self.g, self.b, self.a = float(r), float(g), float(b), float(a)


class TextureFloatColor:
    """Float RGBA texture; ``pixels[y, x]`` is texel (x, y)."""

    def __init__(self, width: int, height: int):
        self.width, self.height = int(width), int(height)
        self.pixels = np.zeros((self.height, self.width, 4), np.float32)

    def set(self, x: int, y: int, value: FloatColor) -> None:
        self.pixels[y, x] = (value.r, value.g, value.b, value.a)


class MaterialParameter:
    Normal = "Normal"
    AO_Roughness_Metallic_Emissive = "AO_Roughness_Metallic_Emissive"
    Diffuse = "Diffuse"
    Emissive = "Emissive"


class LaneType:
    Driving = "Driving"
    Any = "Any"


class CityObjectLabel:
    Any = "Any"
    TrafficSigns = "TrafficSigns"


class WorldSettings:
    synchronous_mode: bool = False
    fixed_delta_seconds: float | None = None

    def __init__(self, synchronous_mode: bool = False, no_rendering_mode: bool = False,
                 fixed_delta_seconds: float | None = None, substepping: bool = True,
                 max_substep_delta_time: float = 0.01, max_substeps: int = 10, max_culling_distance: float = 0.0,
                 deterministic_ragdolls: bool = False):
        self.synchronous_mode = synchronous_mode
        self.no_rendering_mode = no_rendering_mode
        self.fixed_delta_seconds = fixed_delta_seconds
        self.substepping = substepping
        self.max_substep_delta_time = max_substep_delta_time
        self.max_substeps = max_substeps
        self.max_culling_distance = max_culling_distance
        self.deterministic_ragdolls = deterministic_ragdolls

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WorldSettings) and vars(self) == vars(other)

    def __repr__(self) -> str:
        return f"WorldSettings({vars(self)})"


#: The constructor's keyword arguments and defaults in carla 0.9.16 (every one 0 but Rayleigh scattering).
_WEATHER_DEFAULTS: dict[str, float] = {
    "cloudiness": 0.0, "precipitation": 0.0, "precipitation_deposits": 0.0, "wind_intensity": 0.0,
    "sun_azimuth_angle": 0.0, "sun_altitude_angle": 0.0, "fog_density": 0.0, "fog_distance": 0.0,
    "fog_falloff": 0.0, "wetness": 0.0, "scattering_intensity": 0.0, "mie_scattering_scale": 0.0,
    "rayleigh_scattering_scale": 0.0331, "dust_storm": 0.0,
}


class WeatherParameters:
    """Keyword construction like the real class (unknown keywords raise TypeError). The presets
    (``ClearNoon``, ...) are class attributes holding one shared instance each, as in carla 0.9.16."""

    def __init__(self, **values: float):
        unknown = sorted(set(values) - set(_WEATHER_DEFAULTS))
        if unknown:
            raise TypeError(f"WeatherParameters has no parameter {unknown[0]!r}")
        for k, v in {**_WEATHER_DEFAULTS, **values}.items():
            setattr(self, k, float(v))

    def values(self) -> dict[str, float]:
        return {k: getattr(self, k) for k in _WEATHER_DEFAULTS}


_CLEAR_NOON = {**_WEATHER_DEFAULTS, "cloudiness": 5.0, "wind_intensity": 10.0, "sun_azimuth_angle": -1.0,
               "sun_altitude_angle": 45.0, "fog_density": 2.0, "fog_distance": 0.75, "fog_falloff": 0.1,
               "scattering_intensity": 1.0, "mie_scattering_scale": 0.03}
WeatherParameters.ClearNoon = WeatherParameters(**_CLEAR_NOON)
WeatherParameters.CloudyNoon = WeatherParameters(**{**_CLEAR_NOON, "cloudiness": 60.0, "fog_density": 3.0})
WeatherParameters.ClearSunset = WeatherParameters(**{**_CLEAR_NOON, "sun_altitude_angle": 15.0})
WeatherParameters.CloudySunset = WeatherParameters(**{**_CLEAR_NOON, "cloudiness": 60.0, "fog_density": 3.0,
                                                      "sun_altitude_angle": 15.0})


class VehicleControl:
    def __init__(self, throttle: float = 0.0, steer: float = 0.0, brake: float = 0.0, hand_brake: bool = False,
                 reverse: bool = False):
        self.throttle, self.steer, self.brake = float(throttle), float(steer), float(brake)
        self.hand_brake, self.reverse = hand_brake, reverse


class _DestroyActor:
    def __init__(self, actor_id: int):
        self.actor_id = int(actor_id)


class _Response:
    def __init__(self, actor_id: int, error: str = ""):
        self.actor_id, self.error = actor_id, error

    def has_error(self) -> bool:
        return bool(self.error)


command = SimpleNamespace(DestroyActor=_DestroyActor)

# --------------------------------------------------------------------------- blueprints

_BLUEPRINTS: dict[str, dict[str, str]] = {
    "vehicle.tesla.model3": {"role_name": "", "color": "0,0,0"},
    "vehicle.mercedes.sprinter": {"role_name": "", "color": "0,0,0"},
    "vehicle.carlamotors.carlacola": {"role_name": ""},
    "sensor.camera.rgb": {"image_size_x": "800", "image_size_y": "600", "fov": "90", "sensor_tick": "0.0",
                          "exposure_mode": "histogram", "exposure_compensation": "0.0", "exposure_min_bright": "10.0",
                          "exposure_max_bright": "12.0", "shutter_speed": "200.0", "iso": "100.0", "fstop": "1.4",
                          "motion_blur_intensity": "0.45", "motion_blur_max_distortion": "0.35",
                          "enable_postprocess_effects": "True", "role_name": "front"},
    "static.prop.mesh": {"mesh_path": "", "mass": "0", "scale": "1", "role_name": ""},
    "static.prop.ironplank": {"role_name": ""},
}
#: (half length, half width, half height) of each vehicle's bounding box
_EXTENTS = {"vehicle.tesla.model3": (2.4, 1.05, 0.75), "vehicle.mercedes.sprinter": (2.95, 1.0, 1.25),
            "vehicle.carlamotors.carlacola": (2.6, 1.3, 1.6)}


#: attributes that take one of a few words
_CHOICES = {"exposure_mode": ("manual", "histogram")}


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class ActorBlueprint:
    def __init__(self, bp_id: str, attributes: dict[str, str]):
        self.id = bp_id
        self.attributes = dict(attributes)

    def has_attribute(self, name: str) -> bool:
        return name in self.attributes

    def set_attribute(self, name: str, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"set_attribute({name!r}, ...) takes a str, got {type(value).__name__}")
        if name not in self.attributes:
            raise IndexError(f"blueprint {self.id!r} has no attribute {name!r}")
        if _is_number(self.attributes[name]) and "," not in self.attributes[name] and not _is_number(value):
            raise ValueError(f"attribute {name!r} of {self.id!r} takes a number, got {value!r}")
        if name in _CHOICES and value not in _CHOICES[name]:
            raise ValueError(f"attribute {name!r} takes one of {_CHOICES[name]}, got {value!r}")
        self.attributes[name] = value


class BlueprintLibrary:
    def find(self, bp_id: str) -> ActorBlueprint:
        if bp_id not in _BLUEPRINTS:
            raise IndexError(f"blueprint {bp_id!r} not found")
        return ActorBlueprint(bp_id, _BLUEPRINTS[bp_id])


# --------------------------------------------------------------------------- map


@dataclass
class FakeRoad:
    """A straight multi-lane road in CARLA coordinates (see the module docstring)."""

    origin: tuple[float, float, float] = (10.0, -20.0, 2.0)
    heading_deg: float = 30.0
    lanes: int = 2
    lane_width_m: float = 3.5
    start_m: float = -100.0
    end_m: float = 500.0

    @property
    def forward(self) -> np.ndarray:
        h = math.radians(self.heading_deg)
        return np.array([math.cos(h), math.sin(h), 0.0])

    @property
    def right(self) -> np.ndarray:
        h = math.radians(self.heading_deg)
        return np.array([-math.sin(h), math.cos(h), 0.0])

    def lane_point(self, t: float, lane: int) -> np.ndarray:
        return np.array(self.origin) + t * self.forward + (lane + 0.5) * self.lane_width_m * self.right


class Waypoint:
    transform: Transform | None = None
    lane_width: float = 0.0

    def __init__(self, road: FakeRoad, t: float, lane: int):
        self._road, self._t, self._lane = road, float(t), int(lane)
        self.lane_width = road.lane_width_m
        self.lane_id = -(lane + 1)
        self.transform = Transform(Location(*road.lane_point(self._t, self._lane)), Rotation(yaw=road.heading_deg))

    def next(self, distance: float) -> list["Waypoint"]:
        t = self._t + distance
        return [Waypoint(self._road, t, self._lane)] if t <= self._road.end_m else []

    def previous(self, distance: float) -> list["Waypoint"]:
        t = self._t - distance
        return [Waypoint(self._road, t, self._lane)] if t >= self._road.start_m else []


class Map:
    name: str = ""

    def __init__(self, name: str, road: FakeRoad):
        self.name = name
        self.road = road

    def get_spawn_points(self) -> list[Transform]:
        r = self.road
        out = []
        for t in (20.0, 120.0):
            p = r.lane_point(t, r.lanes - 1)
            out.append(Transform(Location(p[0], p[1], p[2] + 0.5), Rotation(yaw=r.heading_deg)))
        return out

    def get_waypoint(self, location: Location, project_to_road: bool = True, lane_type: Any = LaneType.Driving):
        r = self.road
        rel = location._arr() - np.array(r.origin)
        t = float(np.clip(rel @ r.forward, r.start_m, r.end_m))
        lane = int(np.clip(math.floor(float(rel @ r.right) / r.lane_width_m), 0, r.lanes - 1))
        return Waypoint(r, t, lane)


# --------------------------------------------------------------------------- actors


class Actor:
    id: int = 0
    bounding_box: BoundingBox | None = None

    def __init__(self, world: "World", actor_id: int, bp: ActorBlueprint, transform: Transform,
                 parent: "Actor | None" = None):
        self.world = world
        self.id = actor_id
        self.type_id = bp.id
        self.attributes = dict(bp.attributes)
        self.parent = parent
        self._transform = copy.deepcopy(transform)  # relative to the parent when attached
        self._velocity = Vector3D()
        self.physics = True
        self.is_alive = True
        self.diffuse: np.ndarray | None = None  # (H, W, 4) uint8 last diffuse texture its material took
        ext = _EXTENTS.get(bp.id, (0.5, 0.5, 0.01))
        self.bounding_box = BoundingBox(Location(0.0, 0.0, ext[2]), Vector3D(*ext))

    def get_transform(self) -> Transform:
        if self.parent is not None:
            return self.parent.get_transform()._compose(self._transform)
        return copy.deepcopy(self._transform)

    def set_transform(self, transform: Transform) -> None:
        self.world.calls.append(("set_transform", self.id))
        self._transform = copy.deepcopy(transform)

    def get_velocity(self) -> Vector3D:
        return copy.deepcopy(self._velocity)

    def set_target_velocity(self, velocity: Vector3D) -> None:
        self._velocity = copy.deepcopy(velocity)

    def set_simulate_physics(self, enabled: bool = True) -> None:
        self.physics = bool(enabled)

    def destroy(self) -> bool:
        was = self.is_alive
        self.is_alive = False
        self.world.calls.append(("destroy", self.id))
        return was


class Vehicle(Actor):
    MAX_STEER_RAD = math.radians(35.0)
    WHEELBASE_M = 2.8

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.control = VehicleControl()
        self.controls: list[VehicleControl] = []

    def apply_control(self, control: VehicleControl) -> None:
        self.control = control
        self.controls.append(control)

    def _advance(self, dt: float) -> None:
        if not self.physics:
            return
        c = self.control
        tf = self._transform
        fwd = tf.get_forward_vector()._arr()
        speed = max(0.0, float(self._velocity._arr() @ fwd) + (4.0 * c.throttle - 8.0 * c.brake) * dt)
        yaw_rate = speed * math.tan(c.steer * self.MAX_STEER_RAD) / self.WHEELBASE_M  # steer > 0: clockwise
        rear = tf.location._arr() - fwd * self.WHEELBASE_M / 2  # the bicycle turns about the rear axle
        tf.rotation.yaw += math.degrees(yaw_rate * dt)
        fwd = tf.get_forward_vector()._arr()
        rear = rear + fwd * speed * dt
        tf.location = Location(*(rear + fwd * self.WHEELBASE_M / 2))
        self._velocity = Vector3D(*(fwd * speed))


class Image:
    frame: int = 0
    width: int = 0
    height: int = 0
    raw_data: bytearray | None = None
    transform: Transform | None = None

    def __init__(self, frame: int, width: int, height: int, transform: Transform, bgra: np.ndarray):
        self.frame, self.width, self.height, self.transform = frame, width, height, transform
        self.raw_data = bytearray(np.ascontiguousarray(bgra, np.uint8).tobytes())


def background_bgra(frame: int, width: int, height: int) -> np.ndarray:
    """(H, W, 4) uint8 BGRA: B = x % 256, G = y % 256, R = frame % 256, A = 255."""
    bgra = np.empty((height, width, 4), np.uint8)
    bgra[..., 0] = (np.arange(width) % 256)[None, :]
    bgra[..., 1] = (np.arange(height) % 256)[:, None]
    bgra[..., 2] = frame % 256
    bgra[..., 3] = 255
    return bgra


class Sensor(Actor):
    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._callback: Callable[[Image], Any] | None = None
        self.stop_calls = 0

    def is_listening(self) -> bool:
        return self._callback is not None

    def listen(self, callback: Callable[[Image], Any]) -> None:
        self._callback = callback

    def stop(self) -> None:
        self.stop_calls += 1
        self._callback = None

    def _capture(self, frame: int) -> None:
        if self._callback is not None and self.world.server.deliver_images:
            w, h = int(self.attributes["image_size_x"]), int(self.attributes["image_size_y"])
            tf = self.get_transform()
            self._callback(Image(frame, w, h, tf, self.world.render(tf, w, h, float(self.attributes["fov"]))))


@dataclass
class EnvironmentObject:
    name: str = ""
    transform: Transform | None = None
    type: str = CityObjectLabel.TrafficSigns


# --------------------------------------------------------------------------- world, client, server

#: (width along local +y, height along local +x) in metres of each prop mesh's face at scale 1
_PROP_FACES_M = {"static.prop.mesh": (1.0, 1.0)}
#: the colour a prop shows while its material has no texture of ours
PROP_MATERIAL_RGB = (180, 180, 180)


def _prop_face_corners(actor: Actor) -> np.ndarray | None:
    """(4, 3) world corners of a prop's face (centred on its origin, normal local +z), or None for other actors."""
    if actor.type_id not in _PROP_FACES_M:
        return None
    scale = float(actor.attributes.get("scale", "1"))
    w, h = (v * scale for v in _PROP_FACES_M[actor.type_id])
    tf = actor.get_transform()
    local = [(h / 2, -w / 2), (h / 2, w / 2), (-h / 2, w / 2), (-h / 2, -w / 2)]
    return np.array([tf.transform(Location(x, y, 0.0))._arr() for x, y in local])



class TrafficManager:
    def __init__(self, port: int):
        self.port = port
        self.synchronous = False
        self.seed: int | None = None
        self.calls: list[tuple[str, Any]] = []

    def set_synchronous_mode(self, mode_switch: bool = True) -> None:
        self.synchronous = bool(mode_switch)
        self.calls.append(("set_synchronous_mode", bool(mode_switch)))

    def set_random_device_seed(self, value: int) -> None:
        self.seed = int(value)
        self.calls.append(("set_random_device_seed", int(value)))


class World:
    """Records: ``applied_settings`` (every apply_settings), ``weathers``, ``textures`` (name,
    parameter, TextureColor), ``spawned`` (every actor ever spawned), ``calls`` (a log)."""

    STATIC_NAMES = ("Road_Road_1", "SM_Building_2", "SM_StopSign_3")

    def __init__(self, server: "FakeServer", map_name: str):
        self.server = server
        self.map = Map(map_name, server.road)
        self.settings = WorldSettings()
        self.frame = 100
        self.applied_settings: list[WorldSettings] = []
        self.weathers: list[WeatherParameters] = []
        self.textures: list[tuple[str, Any, TextureColor]] = []
        self.spawned: list[Actor] = []
        self.calls: list[tuple[str, Any]] = []
        self._next_id = 1

    # settings and time
    def get_settings(self) -> WorldSettings:
        return copy.deepcopy(self.settings)

    def apply_settings(self, settings: WorldSettings) -> int:
        self.server.maybe_fail("apply_settings")
        self.settings = copy.deepcopy(settings)
        self.applied_settings.append(copy.deepcopy(settings))
        self.calls.append(("apply_settings", copy.deepcopy(settings)))
        return self.frame

    def tick(self, seconds: float = 10.0) -> int:
        if self.server.fail_tick:
            raise RuntimeError(f"time-out of {int(seconds * 1000)}ms while waiting for the simulator")
        if not self.settings.synchronous_mode:
            raise RuntimeError("tick() called in asynchronous mode")
        self.frame += 1
        self.calls.append(("tick", self.frame))
        dt = self.settings.fixed_delta_seconds or 0.05
        for a in self.alive():
            if isinstance(a, Vehicle):
                a._advance(dt)
        for a in self.alive():
            if isinstance(a, Sensor):
                a._capture(self.frame)
        return self.frame

    # content
    def get_map(self) -> Map:
        return self.map

    def get_blueprint_library(self) -> BlueprintLibrary:
        return BlueprintLibrary()

    def spawn_actor(self, blueprint: ActorBlueprint, transform: Transform, attach_to: Actor | None = None) -> Actor:
        if self.server.fail_spawn_of == blueprint.id:
            raise RuntimeError("Spawn failed because of collision at spawn position")
        kind = blueprint.id.split(".")[0]
        cls = Vehicle if kind == "vehicle" else Sensor if kind == "sensor" else Actor
        actor = cls(self, self._next_id, blueprint, transform, attach_to)
        actor.spawn_frame = self.frame
        self._next_id += 1
        self.spawned.append(actor)
        self.calls.append(("spawn_actor", blueprint.id))
        return actor

    def alive(self) -> list[Actor]:
        return [a for a in self.spawned if a.is_alive]

    def set_weather(self, weather: WeatherParameters) -> None:
        self.server.maybe_fail("set_weather")
        self.weathers.append(weather)

    def get_names_of_all_objects(self) -> list[str]:
        names = list(self.STATIC_NAMES)
        for a in self.alive():
            if self.server.names_lag_one_tick and a.spawn_frame == self.frame:
                continue
            name = self._unreal_name(a)
            if name is not None:
                names.append(name)
        return names

    @staticmethod
    def _unreal_name(actor: Actor) -> str | None:
        if actor.type_id.startswith("static.prop."):
            return f"StaticMeshActor_{actor.id}"
        if actor.type_id.startswith("vehicle."):
            return f"BP_Vehicle_C_{actor.id}"
        return None

    def _object_named(self, object_name: str) -> Actor | None:
        """The actor behind an Unreal name (None for the map's own objects); RuntimeError for an unknown name."""
        for a in self.alive():
            if self._unreal_name(a) == object_name:
                return a
        if object_name in self.STATIC_NAMES:
            return None
        raise RuntimeError("unable to find Actor to apply the texture")

    def _take_texture(self, object_name: str, material_parameter: Any, texture: Any) -> None:
        actor = self._object_named(object_name)
        self.textures.append((object_name, material_parameter, copy.deepcopy(texture)))
        takes = actor is not None and actor.type_id.startswith("static.prop.") and self.server.props_accept_textures
        if takes and material_parameter == MaterialParameter.Diffuse:
            actor.diffuse = texture.pixels.copy()

    def apply_color_texture_to_object(self, object_name: str, material_parameter: Any, texture: TextureColor) -> None:
        self._take_texture(object_name, material_parameter, texture)

    def apply_textures_to_object(self, object_name: str, diffuse_texture: TextureColor,
                                 emissive_texture: TextureFloatColor, normal_texture: TextureFloatColor,
                                 ao_roughness_metallic_emissive_texture: TextureFloatColor) -> None:
        """Like the real client: each texture of non-zero size is applied to its material parameter."""
        self._object_named(object_name)
        for parameter, texture in ((MaterialParameter.Diffuse, diffuse_texture),
                                   (MaterialParameter.Emissive, emissive_texture),
                                   (MaterialParameter.Normal, normal_texture),
                                   (MaterialParameter.AO_Roughness_Metallic_Emissive,
                                    ao_roughness_metallic_emissive_texture)):
            if texture.width and texture.height:
                self._take_texture(object_name, parameter, texture)

    def render(self, camera: Transform, width: int, height: int, fov_deg: float) -> np.ndarray:
        """(H, W, 4) uint8 BGRA image seen from ``camera``: the background with the props drawn far to near."""
        import cv2

        bgra = background_bgra(self.frame, width, height)
        focal = width / (2.0 * math.tan(math.radians(fov_deg) / 2.0))
        axes = camera.rotation._matrix()  # columns forward, right, up
        origin = camera.location._arr()
        quads = []
        for a in self.alive():
            corners = _prop_face_corners(a)
            if corners is None:
                continue
            rel = (corners - origin) @ axes
            if (rel[:, 0] < 0.1).any():
                continue
            uv = np.stack([width / 2 + focal * rel[:, 1] / rel[:, 0], height / 2 - focal * rel[:, 2] / rel[:, 0]], 1)
            quads.append((float(rel[:, 0].mean()), uv, self._prop_rgb(a)))
        for _, uv, rgb in sorted(quads, key=lambda q: -q[0]):
            pts = np.round((uv - 0.5) * 256).astype(np.int32)  # pixel centres at integer coordinates, 8 bit fraction
            cv2.fillConvexPoly(bgra, pts, (int(rgb[2]), int(rgb[1]), int(rgb[0]), 255), lineType=cv2.LINE_8, shift=8)
        return bgra

    def _prop_rgb(self, actor: Actor) -> tuple[int, int, int]:
        if actor.diffuse is None:
            return PROP_MATERIAL_RGB
        return tuple(int(round(v)) for v in actor.diffuse[..., :3].reshape(-1, 3).mean(0))

    def get_environment_objects(self, object_type: Any = CityObjectLabel.Any) -> list[EnvironmentObject]:
        p = self.server.road.lane_point(60.0, self.server.road.lanes) + self.server.road.right * 2.0
        sign = EnvironmentObject("SM_StopSign_3", Transform(Location(p[0], p[1], p[2] + 2.0)))
        return [sign] if object_type in (CityObjectLabel.Any, CityObjectLabel.TrafficSigns) else []

    def prop_name(self, actor: Actor) -> str:
        """The Unreal name this double gives a spawned prop."""
        return f"StaticMeshActor_{actor.id}"


@dataclass
class FakeServer:
    """The state behind every Client of one test. Flags inject failures."""

    running: bool = True
    fail_tick: bool = False
    deliver_images: bool = True
    fail_spawn_of: str | None = None
    names_lag_one_tick: bool = False  # a new prop's name shows up only after the next tick
    props_accept_textures: bool = True  # False: the prop mesh's material has no runtime texture parameters
    initial_settings: WorldSettings = field(default_factory=WorldSettings)  # the world's settings at start
    tm_synchronous: bool = False  # a Traffic Manager's mode when first asked for
    available_maps: tuple[str, ...] = ("Town01", "Town02", "Town03", "Town04", "Town05", "Town10HD_Opt")
    load_calls: list[tuple[str, float, bool]] = field(default_factory=list)  # (map, client timeout, reset_settings)
    fail_calls: tuple[str, ...] = ()  # World methods that raise RuntimeError: "apply_settings", "set_weather"
    road: FakeRoad = field(default_factory=FakeRoad)
    map_name: str = "Carla/Maps/Town10HD_Opt"
    world: World = field(init=False)
    traffic_managers: dict[int, TrafficManager] = field(default_factory=dict)
    batches: list[list[Any]] = field(default_factory=list)
    clients: list["Client"] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.world = World(self, self.map_name)
        self.world.settings = copy.deepcopy(self.initial_settings)

    def maybe_fail(self, call: str) -> None:
        if call in self.fail_calls:
            raise RuntimeError(f"the server refused {call}")


class Client:
    def __init__(self, server: FakeServer, host: str = "localhost", port: int = 2000, worker_threads: int = 0):
        self.server, self.host, self.port = server, host, port
        self.timeout = 5.0
        server.clients.append(self)

    def set_timeout(self, seconds: float) -> None:
        self.timeout = float(seconds)

    def _check(self) -> None:
        if not self.server.running:
            raise RuntimeError(f"time-out of {int(self.timeout * 1000)}ms while waiting for the simulator, make sure "
                               f"the simulator is ready and connected to {self.host}:{self.port}")

    def get_world(self) -> World:
        self._check()
        return self.server.world

    def load_world(self, map_name: str, reset_settings: bool = True, map_layers: Any = None) -> World:
        """A new world of ``map_name`` with default settings, or the old world's with ``reset_settings=False``."""
        self._check()
        self.server.load_calls.append((map_name, self.timeout, reset_settings))
        if map_name not in self.server.available_maps:
            raise RuntimeError(f"Map '{map_name}' not found")
        old = self.server.world
        self.server.world = World(self.server, f"Carla/Maps/{map_name}")
        if not reset_settings:
            self.server.world.settings = copy.deepcopy(old.settings)
        return self.server.world

    def get_trafficmanager(self, client_connection: int = 8000) -> TrafficManager:
        self._check()
        if client_connection not in self.server.traffic_managers:
            tm = TrafficManager(client_connection)
            tm.synchronous = self.server.tm_synchronous
            self.server.traffic_managers[client_connection] = tm
        return self.server.traffic_managers[client_connection]

    def apply_batch_sync(self, commands: list[Any], do_tick: bool = False) -> list[_Response]:
        self._check()
        self.server.batches.append(list(commands))
        by_id = {a.id: a for a in self.server.world.spawned}
        out = []
        for cmd in commands:
            actor = by_id.get(cmd.actor_id)
            if actor is None or not actor.is_alive:
                out.append(_Response(cmd.actor_id, f"actor {cmd.actor_id} not found"))
            else:
                actor.destroy()
                out.append(_Response(cmd.actor_id))
        return out


class FakeCarla:
    """Stands in for the ``carla`` module: the value types, plus ``Client`` bound to one :class:`FakeServer`."""

    Vector3D = Vector3D
    Location = Location
    Rotation = Rotation
    Transform = Transform
    BoundingBox = BoundingBox
    Color = Color
    TextureColor = TextureColor
    FloatColor = FloatColor
    TextureFloatColor = TextureFloatColor
    MaterialParameter = MaterialParameter
    LaneType = LaneType
    CityObjectLabel = CityObjectLabel
    WorldSettings = WorldSettings
    WeatherParameters = WeatherParameters
    VehicleControl = VehicleControl
    command = command
    World = World
    Map = Map
    Waypoint = Waypoint
    Actor = Actor
    Vehicle = Vehicle
    Sensor = Sensor
    Image = Image
    EnvironmentObject = EnvironmentObject
    ActorBlueprint = ActorBlueprint
    BlueprintLibrary = BlueprintLibrary
    TrafficManager = TrafficManager

    def __init__(self, server: FakeServer):
        self.server = server

    def Client(self, host: str = "localhost", port: int = 2000, worker_threads: int = 0) -> Client:  # noqa: N802
        return Client(self.server, host, port, worker_threads)


def module(**server_options: Any) -> FakeCarla:
    """A fresh stand-in ``carla`` module with its own :class:`FakeServer` (options: its fields)."""
    return FakeCarla(FakeServer(**server_options))
