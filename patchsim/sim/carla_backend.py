"""CARLA backend: the :class:`Simulator` protocol on a CARLA 0.9.16 server.

A server must be running (headless: ``./CarlaUE4.sh -RenderOffScreen``). The backend drives it
in synchronous mode with ``fixed_delta_seconds = scenario.dt_s`` and a seeded Traffic Manager,
and puts the world's original settings back on :meth:`CarlaSimulator.close` (also on errors).

What a scenario becomes in CARLA (details and limits in docs/carla.md; without a server,
:func:`patchsim.sim.carla_dryrun.describe_in_carla` lists it for one scenario):

* The road is CARLA's: the ego starts on the driving lane nearest to spawn point
  ``spawn_index`` of the map, and :class:`~patchsim.sim.carla_convert.CarlaRoad` follows that
  lane's waypoints. The scenario's road segments are not used; its lane count is.
* Signs are not spawnable in CARLA, and runtime textures do not reach CARLA's own signs. Each
  scenario sign is shown on a flat textured prop (a "board", see :class:`PropSpec`) at the
  scenario's place, and each ``sign_face`` patch slot is a second prop ``gap_m`` in front of the
  face, carrying the clean face with the patch laid over it. ``road`` slots are props lying on
  the road. Patches are applied with ``World.apply_color_texture_to_object``; at reset a test
  texture checks that each slot prop in view really shows runtime textures (``verify_textures``).
* Scenario vehicles are spawned with physics off and moved along the road kinematically, as in
  the embedded backend. The ego is a CARLA vehicle under CARLA's physics.
* Weather is a CARLA preset chosen by the lighting preset, with the scenario's sun and fog on
  top (:func:`~patchsim.sim.carla_convert.weather_for_lighting`); the camera has fixed exposure
  and no motion blur (:func:`~patchsim.sim.carla_convert.camera_attributes`).

All positions in :class:`Frame` are in patchsim's frame, the mirror image of CARLA's (see
:mod:`patchsim.sim.carla_convert`), shifted down by the road height at the ego's start.
"""

from __future__ import annotations

import logging
import math
import queue
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from patchsim.errors import PatchsimError
from patchsim.sim.base import (
    Control,
    EgoTruth,
    Frame,
    LaneTruth,
    Simulator,
    SlotTruth,
    check_patch_image,
    composite_over,
    slot_or_error,
)
from patchsim.sim.camera import CameraModel
from patchsim.sim.carla_convert import (
    CarlaRoad,
    bgra_to_rgb,
    camera_attributes,
    camera_mount,
    compose_canvas,
    contrast_texture,
    control_to_carla,
    lane_polyline,
    location_to_xyz,
    mean_change,
    quad_mask,
    road_from_lane,
    texture_from_image,
    transform_to_pose,
    vector_to_xyz,
    weather_for_lighting,
    weather_preset,
    xyz_to_location,
    yaw_to_carla,
    yaw_to_patchsim,
)
from patchsim.sim.expert import front_bumper_s
from patchsim.sim.layout import (
    Layout,
    SignPlacement,
    SlotPlacement,
    VehiclePlacement,
    place_sign,
    place_slot,
    place_vehicle,
    vehicle_colour,
)
from patchsim.sim.scenario import PatchSlotSpec, Scenario, VehicleSpec, randomized
from patchsim.sim.textures import sign_face
from patchsim.sim.truth import LANE_AHEAD_M, lane_truth, sign_truths, slot_truths, vehicle_truths

log = logging.getLogger(__name__)

#: Every name this backend reads from the ``carla`` module, dotted from the module. The tests
#: check each against the installed package and against the test double.
CARLA_API: tuple[str, ...] = (
    "Client", "Client.set_timeout", "Client.get_world", "Client.load_world", "Client.get_trafficmanager",
    "Client.apply_batch_sync",
    "World.get_settings", "World.apply_settings", "World.tick", "World.get_map", "World.get_blueprint_library",
    "World.spawn_actor", "World.set_weather", "World.apply_color_texture_to_object", "World.get_names_of_all_objects",
    "World.get_environment_objects", "EnvironmentObject.name", "EnvironmentObject.transform",
    "WorldSettings.synchronous_mode", "WorldSettings.fixed_delta_seconds",
    "TrafficManager.set_synchronous_mode", "TrafficManager.set_random_device_seed",
    "BlueprintLibrary.find", "ActorBlueprint.set_attribute", "ActorBlueprint.has_attribute",
    "Map.name", "Map.get_spawn_points", "Map.get_waypoint",
    "Waypoint.next", "Waypoint.previous", "Waypoint.transform", "Waypoint.lane_width",
    "Actor.id", "Actor.destroy", "Actor.get_transform", "Actor.set_transform", "Actor.get_velocity",
    "Actor.set_target_velocity", "Actor.set_simulate_physics", "Actor.bounding_box",
    "Vehicle.apply_control", "Sensor.listen", "Sensor.stop", "Sensor.is_listening",
    "Image.raw_data", "Image.frame", "Image.width", "Image.height", "Image.transform",
    "Transform", "Transform.transform", "Location", "Rotation", "Vector3D", "BoundingBox.location",
    "BoundingBox.extent", "VehicleControl", "WeatherParameters", "WeatherParameters.ClearNoon",
    "WeatherParameters.CloudyNoon", "WeatherParameters.ClearSunset", "TextureColor", "TextureColor.set", "Color",
    "MaterialParameter.Diffuse", "LaneType.Driving", "CityObjectLabel.TrafficSigns", "command.DestroyActor",
)

#: CARLA blueprint for each scenario vehicle kind.
VEHICLE_BLUEPRINTS: dict[str, str] = {
    "car": "vehicle.tesla.model3",
    "van": "vehicle.mercedes.sprinter",
    "truck": "vehicle.carlamotors.carlacola",
}
CAMERA_BLUEPRINT = "sensor.camera.rgb"
EGO_ROLE_NAME = "hero"
BOARD_FILL_RGB = (0.5, 0.5, 0.5)  # around the sign outline on a rectangular prop
ROAD_FILL_RGB = (0.32, 0.32, 0.32)  # a road slot with no patch
SPAWN_LIFT_M = 0.3  # vehicles are spawned this high above the road to clear the spawn collision check
POSE_LIFT_M = 0.05  # and teleported this high

#: The texture check at reset (``verify_textures``): a slot prop passes when the camera pixels
#: inside its projected quad, shrunk by TEXTURE_CHECK_SHRINK about its centre, change by at least
#: MIN_TEXTURE_CHANGE levels (0-255, mean over pixels and channels) between the image taken
#: TEXTURE_CHECK_TICKS ticks after spawning and the one taken TEXTURE_CHECK_TICKS ticks after a plain
#: test texture far from its colours was applied. A slot whose shrunk quad covers fewer than
#: TEXTURE_CHECK_MIN_PX pixels at reset (out of view, or too far) is not checked.
MIN_TEXTURE_CHANGE = 8.0
TEXTURE_CHECK_SHRINK = 0.6
TEXTURE_CHECK_MIN_PX = 4
TEXTURE_CHECK_TICKS = 2


@dataclass(frozen=True)
class PropSpec:
    """The flat mesh that shows a sign face or a patch.

    The backend assumes the mesh's textured face is a rectangle centred on the actor's origin,
    facing local +z, with the image's "up" along local +x and its "right" along local +y. It
    stands sign props upright (pitch 90) and lays road props flat (pitch 0) accordingly.

    Attributes:
        blueprint: a ``static.prop.*`` blueprint id.
        attributes: (name, value) blueprint attributes set before spawning.
        face_size_m: (width along local +y, height along local +x) of the face at scale 1, metres.
        scale_attribute: blueprint attribute taking a uniform scale, or None for a fixed-size
            prop (then the face must be at least as large as what it shows).
        texture_transpose, texture_flip_u, texture_flip_v: how image pixels map to the mesh's
            texels (:func:`patchsim.sim.carla_convert.orient_texture`); check once per mesh.
        gap_m: a sign_face slot's prop stands this far in front of the sign face.
        road_lift_m: a road slot's prop lies this far above the road surface.

    The default is Unreal's 1 m engine plane through CARLA's ``static.prop.mesh`` blueprint,
    scaled to the face. Whether a CARLA package ships that mesh, whether its material takes
    runtime textures (the reset check tells), and how its UVs run, has to be checked on the
    server (docs/carla.md); any other flat ``static.prop.*`` works with its own numbers here.
    """

    blueprint: str = "static.prop.mesh"
    attributes: tuple[tuple[str, str], ...] = (("mesh_path", "/Engine/BasicShapes/Plane.Plane"),)
    face_size_m: tuple[float, float] = (1.0, 1.0)
    scale_attribute: str | None = "scale"
    texture_transpose: bool = False
    texture_flip_u: bool = False
    texture_flip_v: bool = True
    gap_m: float = 0.02
    road_lift_m: float = 0.01


def prop_canvas(spec: PropSpec, content_size_m: tuple[float, float], what: str) -> tuple[float | None,
                                                                                         tuple[float, float]]:
    """(uniform scale or None, (width, height) of the textured face in metres) of a prop showing ``content_size_m``.

    A scalable prop is scaled so its face just covers the content; a fixed-size one keeps its face.

    Raises:
        PatchsimError: a fixed-size prop's face is smaller than the content (names ``what``).
    """
    fw, fh = spec.face_size_m
    w, h = content_size_m
    if spec.scale_attribute is not None:
        scale = max(w / fw, h / fh)
        return scale, (fw * scale, fh * scale)
    if w > fw * 1.0001 or h > fh * 1.0001:
        raise PatchsimError(f"the {what} needs a {w:.3f} x {h:.3f} m face but {spec.blueprint!r} has "
                            f"{fw:.3f} x {fh:.3f} m and no scale attribute")
    return None, (fw, fh)


def prop_attributes(spec: PropSpec, scale: float | None) -> dict[str, str]:
    """Blueprint attributes of a prop: ``spec.attributes`` and the scale, if it has a scale attribute."""
    out = dict(spec.attributes)
    if spec.scale_attribute is not None and scale is not None:
        out[spec.scale_attribute] = f"{scale:.5f}"
    return out


def traffic_colours(sc: Scenario, rng: np.random.Generator) -> list[tuple[float, float, float]]:
    """Body colour (RGB in [0, 1]) of each scenario vehicle: its own, else drawn from ``rng`` in order."""
    return [spec.colour or vehicle_colour(rng, sc.distractors.red_objects) for spec in sc.vehicles]


@contextmanager
def _step(what: str) -> Iterator[None]:
    """Turn a client error inside the block into a PatchsimError that says which step failed."""
    try:
        yield
    except PatchsimError:
        raise
    except Exception as exc:  # the client raises RuntimeError for server errors and time-outs
        raise PatchsimError(f"CARLA: {what} failed: {type(exc).__name__}: {exc}") from exc


@dataclass
class _Prop:
    """One spawned textured prop."""

    actor: Any
    name: str  # Unreal object name, for apply_color_texture_to_object
    label: str  # what it shows, for messages: "prop 2 (slot 'stop_face')"
    canvas_size_m: tuple[float, float]  # (width, height) of its textured face
    content_size_m: tuple[float, float]  # the centred part of it the content covers
    fill_rgb: tuple[float, float, float]
    base: np.ndarray | None = None  # (S, S, 4) float RGBA clean sign face under a sign_face patch
    last_texture: np.ndarray | None = None  # (Hc, Wc, 4) uint8 image last sent, row 0 at the top


@dataclass
class _Traffic:
    actor: Any
    spec: VehicleSpec
    s_m: float
    colour: tuple[float, float, float]


@dataclass
class _Episode:
    """Everything spawned for one reset, destroyed together."""

    actors: list[Any] = field(default_factory=list)  # spawn order; sensors are destroyed first
    sensors: list[Any] = field(default_factory=list)
    ego: Any = None
    camera: Any = None
    traffic: list[_Traffic] = field(default_factory=list)
    boards: dict[str, _Prop] = field(default_factory=dict)
    slots: dict[str, _Prop] = field(default_factory=dict)


def _import_carla() -> Any:
    try:
        import carla
    except ImportError as exc:
        raise PatchsimError("the CARLA client package is not installed (pip install carla==0.9.16)") from exc
    return carla


class CarlaSimulator(Simulator):
    """patchsim's simulator protocol on a running CARLA server.

    Args:
        host, port: the server's RPC address.
        timeout_s: network timeout for every call, also the wait for a tick and its camera image.
        town: a map name such as ``"Town03"``; loaded when the server has another one. None keeps it.
        tm_port: Traffic Manager port.
        client_module: the ``carla`` module or a stand-in with the same names (tests pass a test
            double); None imports ``carla``.
        load_timeout_s: the client timeout while ``town`` loads (loading takes far longer than
            other calls); ``timeout_s`` applies again afterwards.
        spawn_index: the ego starts on the driving lane nearest to ``map.get_spawn_points()[spawn_index]``.
            This is how a sweep or the command line chooses the start point on the map.
        ego_blueprint: the ego vehicle.
        prop: the mesh that carries sign faces and patches.
        sign_boards: show each scenario sign on a prop. Set False when the map has the sign
            already (a sign_face slot's prop is spawned either way).
        texture_px: texture size along the longer side of a prop's face.
        rear_axle_offset_m: distance from the ego actor's origin back to its rear axle, which is
            patchsim's ego reference point; None uses half the scenario's wheelbase.
        verify_textures: at each reset, show a test texture on every slot prop in view and raise
            PatchsimError if the camera does not see it (a mesh whose material has no runtime
            texture parameters). Slots out of view at reset are not checked. Costs up to four ticks
            (``2 * TEXTURE_CHECK_TICKS``) before the first frame; the ego is put back at its start.
        camera_attributes: ``sensor.camera.rgb`` attributes set after (and over) the scenario's
            (:func:`~patchsim.sim.carla_convert.camera_attributes`), e.g. ``shutter_speed``,
            ``iso`` or ``fstop`` for the manual exposure. Attributes the blueprint lacks are skipped.

    Raises:
        PatchsimError: when the package is missing, no server answers, or the town cannot be
            loaded; the message says which step failed.
    """

    backend = "carla"
    observes_without_time = False

    def __init__(self, host: str = "localhost", port: int = 2000, timeout_s: float = 10.0, town: str | None = None,
                 tm_port: int = 8000, client_module: Any = None, *, load_timeout_s: float = 120.0,
                 spawn_index: int = 0, ego_blueprint: str = "vehicle.tesla.model3", prop: PropSpec | None = None,
                 sign_boards: bool = True, texture_px: int = 256, rear_axle_offset_m: float | None = None,
                 verify_textures: bool = True, camera_attributes: Mapping[str, str] | None = None):
        self.cm = client_module if client_module is not None else _import_carla()
        self.host, self.port, self.timeout_s, self.tm_port = host, port, float(timeout_s), tm_port
        self.load_timeout_s = float(load_timeout_s)
        self.spawn_index = spawn_index
        self.ego_blueprint = ego_blueprint
        self.prop = prop or PropSpec()
        self.sign_boards = sign_boards
        self.texture_px = int(texture_px)
        self.rear_axle_offset_m = rear_axle_offset_m
        self.verify_textures = verify_textures
        self.extra_camera_attributes = dict(camera_attributes or {})
        self.scenario: Scenario | None = None
        self.layout: Layout | None = None
        self.camera_settings: dict[str, str] = {}  # the camera attributes the last reset set
        self.texture_checks: dict[str, str] = {}  # slot -> outcome of the last reset's texture check
        self._closed = False
        self._sync_applied = False
        self._tm = None
        self._episode = _Episode()
        self._images: queue.Queue = queue.Queue()
        self.client, world = self._connect(host, port)
        with _step(f"reading the world settings of {host}:{port}"):
            self._original_settings = world.get_settings()
        self.world = self._load_town(world, town)
        with _step("reading the map"):
            self.map = self.world.get_map()

    def _connect(self, host: str, port: int) -> tuple[Any, Any]:
        """The client and the server's world; a helpful error when no server answers."""
        try:
            client = self.cm.Client(host, port)
            client.set_timeout(self.timeout_s)
            world = client.get_world()
        except Exception as exc:  # the client reports a missing server as RuntimeError (time-out)
            raise PatchsimError(
                f"CARLA: connecting to {host}:{port} failed: no CARLA server answered within {self.timeout_s:g} s "
                f"({exc}). A CARLA 0.9.16 server must be running before patchsim connects, e.g. "
                f"`./CarlaUE4.sh -RenderOffScreen` (headless), listening on port {port}."
            ) from exc
        return client, world

    def _load_town(self, world: Any, town: str | None) -> Any:
        """``world``, or the world of ``town`` when the server has another map, loaded within ``load_timeout_s``.

        The world settings are kept across the load (``reset_settings=False``), so the ones read at
        connection are still the server's.
        """
        with _step("reading the server's map name"):
            current = world.get_map().name.split("/")[-1]
        if town is None or current == town:
            return world
        self.client.set_timeout(self.load_timeout_s)
        try:
            with _step(f"loading town {town!r} (the server had {current!r}; time-out {self.load_timeout_s:g} s)"):
                return self.client.load_world(town, reset_settings=False)
        finally:
            self.client.set_timeout(self.timeout_s)

    # ------------------------------------------------------------------ protocol

    def reset(self, scenario: Scenario, seed: int | None = None) -> Frame:
        self._require_open()
        if seed is not None:
            scenario = randomized(scenario, seed)
        self._release_episode(raise_errors=True)
        try:
            self.scenario = scenario
            self._apply_synchronous(scenario)
            with _step(f"setting the weather (preset {weather_preset(scenario.lighting)})"):
                self.world.set_weather(weather_for_lighting(self.cm, scenario.lighting))
            self._build_road(scenario)
            self._rng = np.random.default_rng(scenario.seed + 1)
            self._rear_offset = (scenario.ego.wheelbase_m / 2 if self.rear_axle_offset_m is None
                                 else self.rear_axle_offset_m)
            e = scenario.ego
            self._spawn_ego(scenario, e.start_s_m, e.lateral_offset_m, math.radians(e.heading_offset_deg), e.speed_mps)
            self._spawn_camera(scenario)
            self._spawn_traffic(scenario)
            self._spawn_props(scenario)
            self._step_index = 0
            self._time_s = 0.0
            self._steer = 0.0
            self.texture_checks = {}
            if self.verify_textures and self._episode.slots:
                self._check_slot_textures()
            # again: a velocity set before the actor's first tick may be dropped
            self._set_ego_speed(e.speed_mps, self._ego_spawn_tf)
            return self._tick_frame()
        except BaseException:
            self._release_episode(raise_errors=False)
            self._restore_settings(raise_errors=False)
            self.scenario = None
            raise

    def step(self, control: Control) -> Frame:
        sc = self._require()
        c = control.clipped()
        with _step("applying the ego's control"):
            self._episode.ego.apply_control(control_to_carla(self.cm, c))
        self._steer = c.steer
        self._move_traffic(sc.dt_s)
        self._step_index += 1
        self._time_s += sc.dt_s
        return self._tick_frame()

    def set_patch(self, slot: str, image: np.ndarray | None) -> None:
        self._require()
        placement = slot_or_error(self.layout.slots, slot, self.scenario.name)
        prop = self._episode.slots[slot]
        if image is None:
            content = prop.base if prop.base is not None else np.zeros((2, 2, 4), np.float32)
        else:
            rgba = check_patch_image(slot, image, placement.size_m)
            content = self._slot_content(prop, rgba)
        self._paint(prop, content)

    def set_ego_pose(self, s_m: float, lateral_offset_m: float = 0.0, heading_offset_rad: float = 0.0,
                     speed_mps: float | None = None) -> Frame:
        """Teleport the ego (rear axle at road position ``s_m``, offset from its lane centre) and tick once.

        CARLA renders only by advancing the world, so the returned frame is one ``dt_s`` later:
        the ego has moved on under physics by about ``speed * dt_s``.
        """
        self._require()
        ego = self._episode.ego
        if speed_mps is None:
            speed_mps = float(np.linalg.norm(vector_to_xyz(ego.get_velocity())))
        tf = self._ego_transform(s_m, lateral_offset_m, heading_offset_rad, POSE_LIFT_M)
        with _step("teleporting the ego"):
            ego.set_transform(tf)
        self._set_ego_speed(speed_mps, tf)
        return self._tick_frame()

    def observe(self, labels: bool | None = None) -> Frame:
        """Tick once and return that frame (CARLA cannot render without advancing one ``dt_s``).

        Args:
            labels: True raises PatchsimError, as CARLA has no label render here; False and
                None give a frame with ``labels = None``.
        """
        if labels:
            raise PatchsimError("the CARLA backend has no label render; this needs one (use --sim embedded)")
        self._require()
        return self._tick_frame()

    @property
    def road(self) -> CarlaRoad:
        self._require()
        return self._road

    def close(self) -> None:
        """Destroy every spawned actor and restore the world's settings and the Traffic Manager's mode."""
        self._shutdown(raise_errors=True)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        # never mask the exception that ended the with-block; cleanup problems are logged instead
        self._shutdown(raise_errors=exc_type is None)

    # ------------------------------------------------------------------ extra

    def map_traffic_signs(self, max_distance_m: float = 150.0) -> list[tuple[str, np.ndarray]]:
        """CARLA's own traffic sign meshes near the ego start: (Unreal name, position (3,) in patchsim's frame).

        For lining a scenario up with a sign of the map (then pass ``sign_boards=False``).
        """
        self._require()
        start = self._road.point(self.scenario.ego.start_s_m, 0.0)
        out = []
        with _step("listing the map's traffic signs"):
            objects = self.world.get_environment_objects(self.cm.CityObjectLabel.TrafficSigns)
        for obj in objects:
            p = location_to_xyz(obj.transform.location, self._z_ref)
            if np.linalg.norm(p[:2] - start) <= max_distance_m:
                out.append((obj.name, p))
        return out

    # ------------------------------------------------------------------ reset pieces

    def _apply_synchronous(self, sc: Scenario) -> None:
        with _step("reading the world settings"):
            settings = self.world.get_settings()
        settings.synchronous_mode = True
        settings.fixed_delta_seconds = float(sc.dt_s)
        self._sync_applied = True  # set first: a failing apply may still have switched the server
        with _step(f"applying synchronous settings (fixed_delta_seconds {sc.dt_s:g} s)"):
            self.world.apply_settings(settings)
        if self._tm is None:
            with _step(f"connecting to the Traffic Manager on port {self.tm_port}"):
                self._tm = self.client.get_trafficmanager(self.tm_port)
        with _step(f"switching the Traffic Manager to synchronous mode with seed {sc.seed}"):
            self._tm.set_synchronous_mode(True)
            self._tm.set_random_device_seed(int(sc.seed))

    def _build_road(self, sc: Scenario) -> None:
        with _step("reading the map's spawn points"):
            points = self.map.get_spawn_points()
        if not points:
            raise PatchsimError("the CARLA map has no spawn points")
        if not 0 <= self.spawn_index < len(points):
            raise PatchsimError(f"spawn_index {self.spawn_index} is not one of the map's {len(points)} spawn points")
        with _step(f"finding the driving lane at spawn point {self.spawn_index}"):
            start = self.map.get_waypoint(points[self.spawn_index].location, project_to_road=True,
                                          lane_type=self.cm.LaneType.Driving)
        if start is None:
            raise PatchsimError(f"no driving lane near spawn point {self.spawn_index}")
        self._z_ref = float(start.transform.location.z)
        length = sum(seg.length_m for seg in sc.road.segments)
        with _step(f"following the lane's waypoints from spawn point {self.spawn_index}"):
            lane = lane_polyline(start, behind_m=sc.ego.start_s_m + 1.0, ahead_m=length - sc.ego.start_s_m + 1.0,
                                 z_ref=self._z_ref)
        road = road_from_lane(lane, sc.road, sc.ego_lane, sc.ego.start_s_m)
        self._road = road
        signs = [self._lift_sign(place_sign(road, s)) for s in sc.signs]
        by_id = {s.spec.id: s for s in signs}
        slots = {p.name: self._place_slot(p, by_id, sc.ego_lane) for p in sc.patch_slots}
        self.layout = Layout(road, signs, [], [], slots, sc.road.stop_line_s_m)

    def _lift_sign(self, sign: SignPlacement) -> SignPlacement:
        dz = np.array([0.0, 0.0, float(self._road.z_at(sign.spec.s_m))])
        return SignPlacement(sign.spec, sign.face_corners_m + dz, sign.outline_m + dz, sign.outline_uv, sign.normal,
                             sign.pole_base_m + dz, sign.pole_top_m + dz)

    def _place_slot(self, spec: PatchSlotSpec, signs: dict[str, SignPlacement], ego_lane: int) -> SlotPlacement:
        slot = place_slot(self._road, spec, signs, ego_lane)
        if spec.kind == "sign_face":
            return SlotPlacement(spec, slot.corners_m + slot.normal * self.prop.gap_m, slot.size_m, slot.normal)
        s = np.array([self._road.project(float(c[0]), float(c[1]))[0] for c in slot.corners_m])
        corners = slot.corners_m.copy()
        corners[:, 2] = self._road.z_at(s) + self.prop.road_lift_m
        return SlotPlacement(spec, corners, slot.size_m, slot.normal)

    def _ego_transform(self, s_m: float, lateral_offset_m: float, heading_offset_rad: float, lift_m: float) -> Any:
        """CARLA transform of the ego actor: rear axle at (s, lane centre + offset), ``lift_m`` above the road."""
        road = self._road
        d = road.lane_centre_m(self.scenario.ego_lane) + lateral_offset_m
        x, y = road.point(s_m, d)
        _, _, h = road.pose(s_m)
        yaw = float(h) + heading_offset_rad
        f = np.array([math.cos(yaw), math.sin(yaw)])
        origin = np.array([x + self._rear_offset * f[0], y + self._rear_offset * f[1],
                           float(road.z_at(s_m)) + lift_m])
        return self.cm.Transform(xyz_to_location(self.cm, origin, self._z_ref),
                                 self.cm.Rotation(pitch=0.0, yaw=yaw_to_carla(yaw), roll=0.0))

    def _find_blueprint(self, blueprint_id: str) -> Any:
        with _step(f"finding blueprint {blueprint_id!r}"):  # IndexError in 0.9.16
            return self.world.get_blueprint_library().find(blueprint_id)

    def _set_attributes(self, bp: Any, attributes: Mapping[str, str], what: str) -> dict[str, str]:
        """Set those of ``attributes`` the blueprint has; returns them. The others are logged and skipped."""
        done = {}
        for key, value in attributes.items():
            if not bp.has_attribute(key):
                log.debug("blueprint of the %s has no attribute %r; not set", what, key)
                continue
            with _step(f"setting attribute {key}={value!r} of the {what}"):
                bp.set_attribute(key, str(value))
            done[key] = str(value)
        return done

    def _spawn(self, bp: Any, tf: Any, what: str, attach_to: Any = None) -> Any:
        with _step(f"spawning the {what} at {tf}"):  # RuntimeError, e.g. a collision at the spawn position
            actor = (self.world.spawn_actor(bp, tf) if attach_to is None
                     else self.world.spawn_actor(bp, tf, attach_to=attach_to))
        self._episode.actors.append(actor)
        return actor

    def _spawn_ego(self, sc: Scenario, s_m: float, lateral_m: float, heading_rad: float, speed_mps: float) -> None:
        bp = self._find_blueprint(self.ego_blueprint)
        self._set_attributes(bp, {"role_name": EGO_ROLE_NAME}, "ego")
        tf = self._ego_transform(s_m, lateral_m, heading_rad, SPAWN_LIFT_M)
        self._episode.ego = self._spawn(bp, tf, f"ego ({self.ego_blueprint})")
        self._ego_spawn_tf = tf
        self._set_ego_speed(speed_mps, tf)

    def _set_ego_speed(self, speed_mps: float, transform: Any) -> None:
        """Set the ego's velocity to ``speed_mps`` along the heading of ``transform`` (the pose just given to it;
        ``get_transform`` would still report the last tick's)."""
        yaw = math.radians(transform.rotation.yaw)
        with _step("setting the ego's velocity"):
            self._episode.ego.set_target_velocity(
                self.cm.Vector3D(x=math.cos(yaw) * speed_mps, y=math.sin(yaw) * speed_mps, z=0.0))

    def _spawn_camera(self, sc: Scenario) -> None:
        c = sc.camera
        bp = self._find_blueprint(CAMERA_BLUEPRINT)
        wanted = {**camera_attributes(c, sc.lighting), **self.extra_camera_attributes}
        self.camera_settings = self._set_attributes(bp, wanted, "camera")
        (x, y, z), (pitch, yaw, roll) = camera_mount(c, self._rear_offset)
        tf = self.cm.Transform(self.cm.Location(x=x, y=y, z=z), self.cm.Rotation(pitch=pitch, yaw=yaw, roll=roll))
        cam = self._spawn(bp, tf, "camera", attach_to=self._episode.ego)
        self._episode.camera = cam
        self._episode.sensors.append(cam)
        self._images = queue.Queue()
        with _step("starting the camera's listener"):
            cam.listen(self._images.put)
        self._camera0 = CameraModel.from_fov(c.width_px, c.height_px, c.hfov_deg)

    def _spawn_traffic(self, sc: Scenario) -> None:
        for spec, colour in zip(sc.vehicles, traffic_colours(sc, self._rng)):
            bp = self._find_blueprint(VEHICLE_BLUEPRINTS[spec.kind])
            self._set_attributes(bp, {"color": ",".join(str(int(round(v * 255))) for v in colour),
                                      "role_name": f"patchsim_{spec.id}"}, f"vehicle {spec.id!r}")
            tf = self._traffic_transform(spec, spec.s_m, SPAWN_LIFT_M)
            actor = self._spawn(bp, tf, f"vehicle {spec.id!r}")
            with _step(f"turning off the physics of vehicle {spec.id!r}"):
                actor.set_simulate_physics(False)
                actor.set_transform(self._traffic_transform(spec, spec.s_m, 0.0))
            self._episode.traffic.append(_Traffic(actor, spec, spec.s_m, colour))

    def _traffic_transform(self, spec: VehicleSpec, s_m: float, lift_m: float) -> Any:
        p = place_vehicle(self._road, spec, s_m)
        ground = np.array([p.centre_m[0], p.centre_m[1], float(self._road.z_at(s_m)) + lift_m])
        return self.cm.Transform(xyz_to_location(self.cm, ground, self._z_ref),
                                 self.cm.Rotation(pitch=0.0, yaw=yaw_to_carla(p.yaw_rad), roll=0.0))

    def _spawn_props(self, sc: Scenario) -> None:
        covered = {p.sign for p in sc.patch_slots if p.kind == "sign_face"}
        faces = {}
        for sign in self.layout.signs:
            spec = sign.spec
            face = sign_face(spec.kind, self.texture_px, spec.speed_limit_mph).astype(np.float32) / 255.0
            faces[spec.id] = face
            if self.sign_boards and spec.id not in covered:
                prop = self._spawn_prop(sign.centre_m, sign.normal, spec.face_size_m, BOARD_FILL_RGB,
                                        f"sign {spec.id!r}")
                self._episode.boards[spec.id] = prop
                self._paint(prop, face)
        for name, slot in self.layout.slots.items():
            if slot.spec.kind == "sign_face":
                prop = self._spawn_prop(slot.corners_m.mean(0), slot.normal, slot.size_m, BOARD_FILL_RGB,
                                        f"slot {name!r}")
                prop.base = faces[slot.spec.sign]
                self._episode.slots[name] = prop
                self._paint(prop, prop.base)
            else:
                prop = self._spawn_prop(slot.corners_m.mean(0), None, slot.size_m, ROAD_FILL_RGB, f"slot {name!r}")
                self._episode.slots[name] = prop
                self._paint(prop, np.zeros((2, 2, 4), np.float32))

    def _spawn_prop(self, centre_m: np.ndarray, normal: np.ndarray | None, content_size_m: tuple[float, float],
                    fill_rgb: tuple[float, float, float], shows: str) -> _Prop:
        """Spawn the prop mesh with its face centred on ``centre_m`` (patchsim), facing ``normal`` or up when None."""
        label = f"prop {len(self._episode.boards) + len(self._episode.slots) + 1} ({shows})"
        spec = self.prop
        scale, canvas = prop_canvas(spec, content_size_m, label)
        bp = self._find_blueprint(spec.blueprint)
        self._set_attributes(bp, prop_attributes(spec, scale), label)
        if normal is None:  # lying on the road: image up = road forward
            s, _ = self._road.project(float(centre_m[0]), float(centre_m[1]))
            yaw = float(self._road.pose(s)[2])
            rot = self.cm.Rotation(pitch=0.0, yaw=yaw_to_carla(yaw), roll=0.0)
        else:  # standing: local +z (face normal) along ``normal``, local +x up
            yaw = math.atan2(-float(normal[1]), -float(normal[0]))
            rot = self.cm.Rotation(pitch=90.0, yaw=yaw_to_carla(yaw), roll=0.0)
        tf = self.cm.Transform(xyz_to_location(self.cm, centre_m, self._z_ref), rot)
        with _step("listing the Unreal object names"):
            before = set(self.world.get_names_of_all_objects())
        actor = self._spawn(bp, tf, label)
        return _Prop(actor, self._new_object_name(before, label), label, canvas, tuple(content_size_m), fill_rgb)

    def _new_object_name(self, before: set[str], what: str) -> str:
        """The Unreal name of the object that appeared since ``before`` (ticking once if none has yet)."""
        for attempt in range(2):
            with _step(f"finding the Unreal name of the {what}"):
                new = sorted(set(self.world.get_names_of_all_objects()) - before)
            if len(new) > 1:
                meshes = [n for n in new if "StaticMeshActor" in n]
                if len(meshes) == 1:
                    return meshes[0]
                raise PatchsimError(f"cannot tell which new Unreal object is the {what}: {new[:6]}")
            if new:
                return new[0]
            if attempt == 0:
                self._tick()
        raise PatchsimError(f"the {what} did not appear in World.get_names_of_all_objects(), so it cannot be "
                            "textured; choose another PropSpec (docs/carla.md)")

    # ------------------------------------------------------------------ textures

    def _slot_content(self, prop: _Prop, rgba: np.ndarray) -> np.ndarray:
        """Float RGBA content of a slot showing patch ``rgba`` (float, from check_patch_image)."""
        return rgba if prop.base is None else composite_over(prop.base, rgba)

    def _paint(self, prop: _Prop, content: np.ndarray) -> None:
        """Send ``content`` (float RGBA, row 0 at the top) centred on the prop's face over its fill colour."""
        image = compose_canvas(content, prop.content_size_m, prop.canvas_size_m, self.texture_px, prop.fill_rgb)
        self._send_texture(prop, image)
        prop.last_texture = image

    def _send_texture(self, prop: _Prop, image: np.ndarray) -> None:
        """Apply a (H, W, 4) uint8 image (row 0 at the top) as the prop's diffuse texture."""
        spec = self.prop
        texture = texture_from_image(self.cm, image, spec.texture_transpose, spec.texture_flip_u, spec.texture_flip_v)
        with _step(f"applying a texture to the {prop.label} (Unreal object {prop.name!r})"):
            self.world.apply_color_texture_to_object(prop.name, self.cm.MaterialParameter.Diffuse, texture)

    def _check_slot_textures(self) -> None:
        """Check that each slot prop in view shows runtime textures; raise PatchsimError naming one that does not.

        The ego is frozen (physics off) so that only the texture changes between the two images:
        ``TEXTURE_CHECK_TICKS`` ticks for the image before, a plain test texture
        (:func:`contrast_texture`) on every slot prop in view, as many ticks for the image after,
        then the slot's texture back and the ego at its start pose (``POSE_LIFT_M`` above the
        road). A slot not in view at reset is not checked (a check later would take ticks out
        of the episode); ``texture_checks`` records each slot's outcome.
        """
        ego = self._episode.ego
        with _step("freezing the ego for the texture check"):
            ego.set_simulate_physics(False)
        for _ in range(TEXTURE_CHECK_TICKS):
            before, cam = self._tick_image()
        masks = self._check_masks(slot_truths(self.layout, cam), cam)
        for name in self._episode.slots:
            if name not in masks:
                log.debug("texture check of slot %r skipped: %s", name, self.texture_checks[name])
        if masks:
            for name in masks:
                prop = self._episode.slots[name]
                self._send_texture(prop, contrast_texture(prop.last_texture))
            for _ in range(TEXTURE_CHECK_TICKS):
                after, _ = self._tick_image()
            for name in masks:
                prop = self._episode.slots[name]
                self._send_texture(prop, prop.last_texture)
            self._judge_texture_check(before, after, masks)
        e = self.scenario.ego
        tf = self._ego_transform(e.start_s_m, e.lateral_offset_m, math.radians(e.heading_offset_deg), POSE_LIFT_M)
        with _step("putting the ego back at its start after the texture check"):
            ego.set_simulate_physics(True)
            ego.set_transform(tf)
        self._ego_spawn_tf = tf

    def _check_masks(self, truths: dict[str, SlotTruth], cam: CameraModel) -> dict[str, np.ndarray]:
        """Slot -> (H, W) bool pixels to compare, for the slots in view with enough pixels; records the others."""
        out = {}
        for name, truth in truths.items():
            mask = quad_mask(truth.corners_px, cam.width_px, cam.height_px, TEXTURE_CHECK_SHRINK)
            if not truth.in_view:
                self.texture_checks[name] = "not checked: out of view at reset"
            elif int(mask.sum()) < TEXTURE_CHECK_MIN_PX:
                self.texture_checks[name] = (f"not checked: {int(mask.sum())} px to compare at reset, fewer than "
                                             f"{TEXTURE_CHECK_MIN_PX}")
            else:
                out[name] = mask
        return out

    def _judge_texture_check(self, before: np.ndarray, after: np.ndarray, masks: dict[str, np.ndarray]) -> None:
        """Record each checked slot's pixel change; raise for the first slot whose prop did not change."""
        failed = []
        for name, mask in masks.items():
            change = mean_change(before, after, mask)
            self.texture_checks[name] = f"{'passed' if change >= MIN_TEXTURE_CHANGE else 'failed'}: mean change " \
                                        f"{change:.1f} levels over {int(mask.sum())} px"
            if change < MIN_TEXTURE_CHANGE:
                failed.append((name, change))
        if failed:
            name, change = failed[0]
            prop = self._episode.slots[name]
            raise PatchsimError(
                f"the {prop.label} (Unreal object {prop.name!r}) does not show runtime textures: a test texture "
                f"changed the camera pixels inside the slot by {change:.1f} levels on average, less than "
                f"{MIN_TEXTURE_CHANGE:g}. CARLA applies textures without an error even where the object's material "
                f"has no runtime texture parameters, which is the likely cause; use a PropSpec whose mesh material "
                f"takes runtime textures (docs/carla.md), or verify_textures=False to skip this check.")

    # ------------------------------------------------------------------ stepping and frames

    def _move_traffic(self, dt_s: float) -> None:
        for t in self._episode.traffic:
            if t.spec.speed_mps <= 0:
                continue
            t.s_m = min(t.s_m + t.spec.speed_mps * dt_s, self._road.length_m)
            with _step(f"moving vehicle {t.spec.id!r}"):
                t.actor.set_transform(self._traffic_transform(t.spec, t.s_m, 0.0))

    def _tick(self) -> int:
        """Advance the world one step; the new frame id."""
        with _step(f"ticking the world (time-out {self.timeout_s:g} s)"):
            return self.world.tick(self.timeout_s)

    def _tick_image(self) -> tuple[np.ndarray, CameraModel]:
        """Tick and return the camera's (H, W, 3) uint8 RGB image, without noise, and its posed camera model."""
        image = self._wait_image(self._tick())
        return bgra_to_rgb(image.raw_data, image.width, image.height), self._camera_of(image)

    def _tick_frame(self) -> Frame:
        return self._frame(self._wait_image(self._tick()))

    def _wait_image(self, frame_id: int) -> Any:
        deadline = time.monotonic() + self.timeout_s
        while True:
            left = deadline - time.monotonic()
            try:
                image = self._images.get(timeout=max(left, 0.0)) if left > 0 else self._images.get_nowait()
            except queue.Empty:
                raise PatchsimError(f"CARLA: waiting for a camera image failed: no camera image for frame "
                                    f"{frame_id} within {self.timeout_s:g} s") from None
            if image.frame == frame_id:
                return image

    def _camera_of(self, image: Any) -> CameraModel:
        """The camera model posed where ``image`` was taken, in patchsim's frame."""
        pos, yaw_c, pitch_c, roll_c = transform_to_pose(image.transform, self._z_ref)
        return self._camera0.posed(pos, yaw_c, pitch_c, roll_c)

    def _frame(self, image: Any) -> Frame:
        sc = self.scenario
        rgb = bgra_to_rgb(image.raw_data, image.width, image.height)
        if sc.camera.noise_std > 0:
            noisy = rgb.astype(np.float32) + self._rng.normal(0.0, sc.camera.noise_std * 255.0, rgb.shape)
            rgb = np.clip(noisy + 0.5, 0, 255).astype(np.uint8)
        cam = self._camera_of(image)
        ego = self._episode.ego
        with _step("reading the ego's state"):
            ego_tf, ego_velocity = ego.get_transform(), ego.get_velocity()
        epos, eyaw, _, _ = transform_to_pose(ego_tf, self._z_ref)
        x = float(epos[0] - self._rear_offset * math.cos(eyaw))
        y = float(epos[1] - self._rear_offset * math.sin(eyaw))
        speed = float(np.linalg.norm(vector_to_xyz(ego_velocity)))
        road = self._road
        s_ego, _ = road.project(x, y)
        stop_gap = None
        if self.layout.stop_line_s_m is not None:
            near_edge = self.layout.stop_line_s_m - sc.road.stop_line_width_m
            stop_gap = near_edge - front_bumper_s(road, x, y, eyaw, sc.ego.wheelbase_m)
        return Frame(
            index=self._step_index,
            time_s=self._time_s,
            image=rgb,
            camera=cam,
            ego=EgoTruth(x, y, eyaw, speed, self._steer, s_ego),
            signs=sign_truths(self.layout, cam),
            slots=slot_truths(self.layout, cam),
            objects=vehicle_truths([self._traffic_placement(t) for t in self._episode.traffic], cam),
            lane=self._lane_truth(x, y, eyaw, cam),
            stop_line_distance_m=stop_gap,
        )

    def _traffic_placement(self, t: _Traffic) -> VehiclePlacement:
        """A traffic vehicle's box as CARLA has it (actor transform and bounding box), in patchsim's frame."""
        with _step(f"reading vehicle {t.spec.id!r}"):
            tf = t.actor.get_transform()
            bb = t.actor.bounding_box
        centre = location_to_xyz(tf.transform(bb.location), self._z_ref)
        size = (2 * float(bb.extent.x), 2 * float(bb.extent.y), 2 * float(bb.extent.z))
        return VehiclePlacement(t.spec, t.s_m, centre, yaw_to_patchsim(tf.rotation.yaw), size, t.colour)

    def _lane_truth(self, x: float, y: float, yaw: float, cam: CameraModel) -> LaneTruth:
        """:func:`lane_truth` with the image polylines lifted onto CARLA's road height."""
        road = self._road
        lane = lane_truth(road, self.scenario.ego_lane, x, y, yaw, cam)
        s_ego, _ = road.project(x, y)
        ahead = s_ego + LANE_AHEAD_M
        z = road.z_at(ahead)
        d_c = road.lane_centre_m(self.scenario.ego_lane)
        w = lane.width_m
        for attr, d in (("centre_px", d_c), ("left_px", d_c + w / 2), ("right_px", d_c - w / 2)):
            uv, _ = cam.project(np.c_[road.point(ahead, d), z])
            setattr(lane, attr, uv)
        return lane

    # ------------------------------------------------------------------ cleanup

    def _require_open(self) -> None:
        if self._closed:
            raise PatchsimError("simulator is closed")

    def _require(self) -> Scenario:
        self._require_open()
        if self.scenario is None:
            raise PatchsimError("call reset(scenario) first")
        return self.scenario

    def _release_episode(self, raise_errors: bool) -> list[str]:
        """Stop the camera and destroy every actor of the current episode. Returns what failed."""
        ep, self._episode = self._episode, _Episode()
        errors: list[str] = []
        for sensor in ep.sensors:
            try:
                if sensor.is_listening():  # a method in carla 0.9.16
                    sensor.stop()
            except Exception as exc:
                errors.append(f"stopping sensor {getattr(sensor, 'id', '?')}: {exc}")
        sensors = {id(a) for a in ep.sensors}
        ordered = [a for a in ep.actors if id(a) in sensors] + [a for a in reversed(ep.actors) if id(a) not in sensors]
        if ordered:
            try:
                responses = self.client.apply_batch_sync([self.cm.command.DestroyActor(a.id) for a in ordered])
                errors += [f"destroying actor {a.id}: {r.error}" for a, r in zip(ordered, responses) if r.has_error()]
            except Exception as exc:
                errors.append(f"destroying actors in a batch: {exc}")
                for a in ordered:
                    try:
                        a.destroy()
                    except Exception as exc2:
                        errors.append(f"destroying actor {getattr(a, 'id', '?')}: {exc2}")
        if errors and raise_errors:
            raise PatchsimError("CARLA cleanup failed: " + "; ".join(errors))
        return errors

    def _restore_settings(self, raise_errors: bool) -> list[str]:
        """Put back the world settings found at connection, and the Traffic Manager's mode to match them.

        The client API cannot read the Traffic Manager's mode, so it is set to the original
        ``synchronous_mode`` of the world, the mode a Traffic Manager of that world must have.
        """
        errors: list[str] = []
        if self._sync_applied:
            try:
                self.world.apply_settings(self._original_settings)
                self._sync_applied = False
            except Exception as exc:
                errors.append(f"restoring the world settings: {exc}")
        if self._tm is not None:
            mode = bool(self._original_settings.synchronous_mode)
            try:
                self._tm.set_synchronous_mode(mode)
                self._tm = None
            except Exception as exc:
                errors.append(f"switching the Traffic Manager back to {'' if mode else 'a'}synchronous mode: {exc}")
        if errors and raise_errors:
            raise PatchsimError("CARLA cleanup failed: " + "; ".join(errors))
        return errors

    def _shutdown(self, raise_errors: bool) -> None:
        if self._closed:
            return
        self._closed = True
        errors: list[str] = []
        try:
            errors += self._release_episode(raise_errors=False)
        finally:
            errors += self._restore_settings(raise_errors=False)
        if errors:
            message = "CARLA cleanup failed: " + "; ".join(errors)
            if raise_errors:
                raise PatchsimError(message)
            log.warning(message)
