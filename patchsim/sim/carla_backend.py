"""CARLA backend: the :class:`Simulator` protocol on a CARLA 0.9.16 server.

A server must be running (headless: ``./CarlaUE4.sh -RenderOffScreen``). The backend drives it
in synchronous mode with ``fixed_delta_seconds = scenario.dt_s`` and a seeded Traffic Manager,
and puts the world's original settings back on :meth:`CarlaSimulator.close` (also on errors).

What a scenario becomes in CARLA (details and limits in docs/carla.md):

* The road is CARLA's: the ego starts on the driving lane nearest to spawn point
  ``spawn_index`` of the map, and :class:`~patchsim.sim.carla_convert.CarlaRoad` follows that
  lane's waypoints. The scenario's road segments are not used; its lane count is.
* Signs are not spawnable in CARLA, and runtime textures do not reach CARLA's own signs. Each
  scenario sign is shown on a flat textured prop (a "board", see :class:`PropSpec`) at the
  scenario's place, and each ``sign_face`` patch slot is a second prop ``gap_m`` in front of the
  face, carrying the clean face with the patch laid over it. ``road`` slots are props lying on
  the road. Patches are applied with ``World.apply_color_texture_to_object``.
* Scenario vehicles are spawned with physics off and moved along the road kinematically, as in
  the embedded backend. The ego is a CARLA vehicle under CARLA's physics.

All positions in :class:`Frame` are in patchsim's frame, the mirror image of CARLA's (see
:mod:`patchsim.sim.carla_convert`), shifted down by the road height at the ego's start.
"""

from __future__ import annotations

import logging
import math
import queue
import time
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
    check_patch_image,
    composite_over,
    slot_or_error,
)
from patchsim.sim.camera import CameraModel
from patchsim.sim.carla_convert import (
    CarlaRoad,
    bgra_to_rgb,
    compose_canvas,
    control_to_carla,
    exposure_compensation_ev,
    lane_polyline,
    location_to_xyz,
    road_from_lane,
    texture_from_image,
    transform_to_pose,
    vector_to_xyz,
    weather_for_lighting,
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
    "BoundingBox.extent", "VehicleControl", "WeatherParameters", "TextureColor", "TextureColor.set", "Color",
    "MaterialParameter.Diffuse", "LaneType.Driving", "CityObjectLabel.TrafficSigns", "command.DestroyActor",
)

#: CARLA blueprint for each scenario vehicle kind.
VEHICLE_BLUEPRINTS: dict[str, str] = {
    "car": "vehicle.tesla.model3",
    "van": "vehicle.mercedes.sprinter",
    "truck": "vehicle.carlamotors.carlacola",
}
BOARD_FILL_RGB = (0.5, 0.5, 0.5)  # around the sign outline on a rectangular prop
ROAD_FILL_RGB = (0.32, 0.32, 0.32)  # a road slot with no patch
SPAWN_LIFT_M = 0.3  # vehicles are spawned this high above the road to clear the spawn collision check
POSE_LIFT_M = 0.05  # and teleported this high


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
    scaled to the face. Whether a CARLA package ships that mesh, and how its UVs run, has to
    be checked on the server (docs/carla.md); any other flat ``static.prop.*`` works with its
    own numbers here.
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


@dataclass
class _Prop:
    """One spawned textured prop."""

    actor: Any
    name: str  # Unreal object name, for apply_color_texture_to_object
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
        spawn_index: the ego starts on the driving lane nearest to ``map.get_spawn_points()[spawn_index]``.
        ego_blueprint: the ego vehicle.
        prop: the mesh that carries sign faces and patches.
        sign_boards: show each scenario sign on a prop. Set False when the map has the sign
            already (a sign_face slot's prop is spawned either way).
        texture_px: texture size along the longer side of a prop's face.
        rear_axle_offset_m: distance from the ego actor's origin back to its rear axle, which is
            patchsim's ego reference point; None uses half the scenario's wheelbase.

    Raises:
        PatchsimError: when the package is missing or no server answers.
    """

    def __init__(self, host: str = "localhost", port: int = 2000, timeout_s: float = 10.0, town: str | None = None,
                 tm_port: int = 8000, client_module: Any = None, *, spawn_index: int = 0,
                 ego_blueprint: str = "vehicle.tesla.model3", prop: PropSpec | None = None, sign_boards: bool = True,
                 texture_px: int = 256, rear_axle_offset_m: float | None = None):
        self.cm = client_module if client_module is not None else _import_carla()
        self.host, self.port, self.timeout_s, self.tm_port = host, port, float(timeout_s), tm_port
        self.spawn_index = spawn_index
        self.ego_blueprint = ego_blueprint
        self.prop = prop or PropSpec()
        self.sign_boards = sign_boards
        self.texture_px = int(texture_px)
        self.rear_axle_offset_m = rear_axle_offset_m
        self.scenario: Scenario | None = None
        self.layout: Layout | None = None
        self._closed = False
        self._sync_applied = False
        self._tm = None
        self._episode = _Episode()
        self._images: queue.Queue = queue.Queue()
        try:
            self.client = self.cm.Client(host, port)
            self.client.set_timeout(self.timeout_s)
            world = self.client.get_world()
            if town is not None and world.get_map().name.split("/")[-1] != town:
                world = self.client.load_world(town)
            self._original_settings = world.get_settings()
            self.map = world.get_map()
        except Exception as exc:  # the client reports a missing server as RuntimeError (time-out)
            raise PatchsimError(
                f"no CARLA server answered at {host}:{port} within {timeout_s:g} s ({exc}). A CARLA 0.9.16 server "
                f"must be running before patchsim connects, e.g. `./CarlaUE4.sh -RenderOffScreen` (headless), "
                f"listening on port {port}."
            ) from exc
        self.world = world

    # ------------------------------------------------------------------ protocol

    def reset(self, scenario: Scenario, seed: int | None = None) -> Frame:
        self._require_open()
        if seed is not None:
            scenario = randomized(scenario, seed)
        self._release_episode(raise_errors=True)
        try:
            self.scenario = scenario
            self._apply_synchronous(scenario)
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
            # again: a velocity set before the actor's first tick may be dropped
            self._set_ego_speed(e.speed_mps, self._ego_spawn_tf)
            self._step_index = 0
            self._time_s = 0.0
            self._steer = 0.0
            return self.observe()
        except BaseException:
            self._release_episode(raise_errors=False)
            self._restore_settings(raise_errors=False)
            self.scenario = None
            raise

    def step(self, control: Control) -> Frame:
        sc = self._require()
        c = control.clipped()
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
        ego.set_transform(tf)
        self._set_ego_speed(speed_mps, tf)
        return self._tick_frame()

    def observe(self) -> Frame:
        """Tick once and return that frame (CARLA cannot render without advancing one ``dt_s``)."""
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
        for obj in self.world.get_environment_objects(self.cm.CityObjectLabel.TrafficSigns):
            p = location_to_xyz(obj.transform.location, self._z_ref)
            if np.linalg.norm(p[:2] - start) <= max_distance_m:
                out.append((obj.name, p))
        return out

    # ------------------------------------------------------------------ reset pieces

    def _apply_synchronous(self, sc: Scenario) -> None:
        settings = self.world.get_settings()
        settings.synchronous_mode = True
        settings.fixed_delta_seconds = float(sc.dt_s)
        self._sync_applied = True  # set first: a failing apply may still have switched the server
        self.world.apply_settings(settings)
        if self._tm is None:
            self._tm = self.client.get_trafficmanager(self.tm_port)
        self._tm.set_synchronous_mode(True)
        self._tm.set_random_device_seed(int(sc.seed))

    def _build_road(self, sc: Scenario) -> None:
        points = self.map.get_spawn_points()
        if not points:
            raise PatchsimError("the CARLA map has no spawn points")
        if not 0 <= self.spawn_index < len(points):
            raise PatchsimError(f"spawn_index {self.spawn_index} is not one of the map's {len(points)} spawn points")
        start = self.map.get_waypoint(points[self.spawn_index].location, project_to_road=True,
                                      lane_type=self.cm.LaneType.Driving)
        if start is None:
            raise PatchsimError(f"no driving lane near spawn point {self.spawn_index}")
        self._z_ref = float(start.transform.location.z)
        length = sum(seg.length_m for seg in sc.road.segments)
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
        try:
            return self.world.get_blueprint_library().find(blueprint_id)
        except Exception as exc:  # IndexError in 0.9.16
            raise PatchsimError(f"CARLA has no blueprint {blueprint_id!r} ({exc})") from exc

    def _spawn(self, bp: Any, tf: Any, what: str, attach_to: Any = None) -> Any:
        try:
            actor = (self.world.spawn_actor(bp, tf) if attach_to is None
                     else self.world.spawn_actor(bp, tf, attach_to=attach_to))
        except Exception as exc:  # RuntimeError, e.g. a collision at the spawn position
            raise PatchsimError(f"CARLA could not spawn the {what} at {tf} ({exc})") from exc
        self._episode.actors.append(actor)
        return actor

    def _spawn_ego(self, sc: Scenario, s_m: float, lateral_m: float, heading_rad: float, speed_mps: float) -> None:
        bp = self._find_blueprint(self.ego_blueprint)
        if bp.has_attribute("role_name"):
            bp.set_attribute("role_name", "hero")
        tf = self._ego_transform(s_m, lateral_m, heading_rad, SPAWN_LIFT_M)
        self._episode.ego = self._spawn(bp, tf, "ego vehicle")
        self._ego_spawn_tf = tf
        self._set_ego_speed(speed_mps, tf)

    def _set_ego_speed(self, speed_mps: float, transform: Any) -> None:
        """Set the ego's velocity to ``speed_mps`` along the heading of ``transform`` (the pose just given to it;
        ``get_transform`` would still report the last tick's)."""
        yaw = math.radians(transform.rotation.yaw)
        self._episode.ego.set_target_velocity(
            self.cm.Vector3D(x=math.cos(yaw) * speed_mps, y=math.sin(yaw) * speed_mps, z=0.0))

    def _spawn_camera(self, sc: Scenario) -> None:
        c = sc.camera
        bp = self._find_blueprint("sensor.camera.rgb")
        bp.set_attribute("image_size_x", str(c.width_px))
        bp.set_attribute("image_size_y", str(c.height_px))
        bp.set_attribute("fov", f"{c.hfov_deg:g}")
        if bp.has_attribute("exposure_compensation"):
            bp.set_attribute("exposure_compensation", f"{exposure_compensation_ev(sc.lighting.exposure):.4f}")
        tf = self.cm.Transform(self.cm.Location(x=c.forward_m - self._rear_offset, y=-c.lateral_m, z=c.height_m),
                               self.cm.Rotation(pitch=c.pitch_deg, yaw=-c.yaw_deg, roll=0.0))
        cam = self._spawn(bp, tf, "camera", attach_to=self._episode.ego)
        self._episode.camera = cam
        self._episode.sensors.append(cam)
        self._images = queue.Queue()
        cam.listen(self._images.put)
        self._camera0 = CameraModel.from_fov(c.width_px, c.height_px, c.hfov_deg)

    def _spawn_traffic(self, sc: Scenario) -> None:
        for spec in sc.vehicles:
            colour = spec.colour or vehicle_colour(self._rng, sc.distractors.red_objects)
            bp = self._find_blueprint(VEHICLE_BLUEPRINTS[spec.kind])
            if bp.has_attribute("color"):
                bp.set_attribute("color", ",".join(str(int(round(v * 255))) for v in colour))
            if bp.has_attribute("role_name"):
                bp.set_attribute("role_name", f"patchsim_{spec.id}")
            tf = self._traffic_transform(spec, spec.s_m, SPAWN_LIFT_M)
            actor = self._spawn(bp, tf, f"vehicle {spec.id!r}")
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
                                        f"board for sign {spec.id!r}")
                self._episode.boards[spec.id] = prop
                self._paint(prop, face)
        for name, slot in self.layout.slots.items():
            if slot.spec.kind == "sign_face":
                prop = self._spawn_prop(slot.corners_m.mean(0), slot.normal, slot.size_m, BOARD_FILL_RGB,
                                        f"prop of slot {name!r}")
                prop.base = faces[slot.spec.sign]
                self._episode.slots[name] = prop
                self._paint(prop, prop.base)
            else:
                prop = self._spawn_prop(slot.corners_m.mean(0), None, slot.size_m, ROAD_FILL_RGB,
                                        f"prop of slot {name!r}")
                self._episode.slots[name] = prop
                self._paint(prop, np.zeros((2, 2, 4), np.float32))

    def _spawn_prop(self, centre_m: np.ndarray, normal: np.ndarray | None, content_size_m: tuple[float, float],
                    fill_rgb: tuple[float, float, float], what: str) -> _Prop:
        """Spawn the prop mesh with its face centred on ``centre_m`` (patchsim), facing ``normal`` or up when None."""
        spec = self.prop
        bp = self._find_blueprint(spec.blueprint)
        for key, value in spec.attributes:
            bp.set_attribute(key, value)
        fw, fh = spec.face_size_m
        w, h = content_size_m
        if spec.scale_attribute is not None:
            scale = max(w / fw, h / fh)
            bp.set_attribute(spec.scale_attribute, f"{scale:.5f}")
            canvas = (fw * scale, fh * scale)
        else:
            canvas = (fw, fh)
            if w > fw * 1.0001 or h > fh * 1.0001:
                raise PatchsimError(f"the {what} needs a {w:.3f} x {h:.3f} m face but {spec.blueprint!r} has "
                                    f"{fw:.3f} x {fh:.3f} m and no scale attribute")
        if normal is None:  # lying on the road: image up = road forward
            s, _ = self._road.project(float(centre_m[0]), float(centre_m[1]))
            yaw = float(self._road.pose(s)[2])
            rot = self.cm.Rotation(pitch=0.0, yaw=yaw_to_carla(yaw), roll=0.0)
        else:  # standing: local +z (face normal) along ``normal``, local +x up
            yaw = math.atan2(-float(normal[1]), -float(normal[0]))
            rot = self.cm.Rotation(pitch=90.0, yaw=yaw_to_carla(yaw), roll=0.0)
        tf = self.cm.Transform(xyz_to_location(self.cm, centre_m, self._z_ref), rot)
        before = set(self.world.get_names_of_all_objects())
        actor = self._spawn(bp, tf, what)
        return _Prop(actor, self._new_object_name(before, what), canvas, (w, h), fill_rgb)

    def _new_object_name(self, before: set[str], what: str) -> str:
        """The Unreal name of the object that appeared since ``before`` (ticking once if none has yet)."""
        for attempt in range(2):
            new = sorted(set(self.world.get_names_of_all_objects()) - before)
            if len(new) > 1:
                meshes = [n for n in new if "StaticMeshActor" in n]
                if len(meshes) == 1:
                    return meshes[0]
                raise PatchsimError(f"cannot tell which new Unreal object is the {what}: {new[:6]}")
            if new:
                return new[0]
            if attempt == 0:
                self.world.tick(self.timeout_s)
        raise PatchsimError(f"the {what} did not appear in World.get_names_of_all_objects(), so it cannot be "
                            "textured; choose another PropSpec (docs/carla.md)")

    # ------------------------------------------------------------------ textures

    def _slot_content(self, prop: _Prop, rgba: np.ndarray) -> np.ndarray:
        """Float RGBA content of a slot showing patch ``rgba`` (float, from check_patch_image)."""
        return rgba if prop.base is None else composite_over(prop.base, rgba)

    def _paint(self, prop: _Prop, content: np.ndarray) -> None:
        """Send ``content`` (float RGBA, row 0 at the top) centred on the prop's face over its fill colour."""
        image = compose_canvas(content, prop.content_size_m, prop.canvas_size_m, self.texture_px, prop.fill_rgb)
        spec = self.prop
        texture = texture_from_image(self.cm, image, spec.texture_transpose, spec.texture_flip_u,
                                     spec.texture_flip_v)
        self.world.apply_color_texture_to_object(prop.name, self.cm.MaterialParameter.Diffuse, texture)
        prop.last_texture = image

    # ------------------------------------------------------------------ stepping and frames

    def _move_traffic(self, dt_s: float) -> None:
        for t in self._episode.traffic:
            if t.spec.speed_mps <= 0:
                continue
            t.s_m = min(t.s_m + t.spec.speed_mps * dt_s, self._road.length_m)
            t.actor.set_transform(self._traffic_transform(t.spec, t.s_m, 0.0))

    def _tick_frame(self) -> Frame:
        try:
            frame_id = self.world.tick(self.timeout_s)
        except Exception as exc:
            raise PatchsimError(
                f"the CARLA server did not complete a tick within {self.timeout_s:g} s ({exc})") from exc
        return self._frame(self._wait_image(frame_id))

    def _wait_image(self, frame_id: int) -> Any:
        deadline = time.monotonic() + self.timeout_s
        while True:
            left = deadline - time.monotonic()
            try:
                image = self._images.get(timeout=max(left, 0.0)) if left > 0 else self._images.get_nowait()
            except queue.Empty:
                raise PatchsimError(f"no camera image for frame {frame_id} within {self.timeout_s:g} s") from None
            if image.frame == frame_id:
                return image

    def _frame(self, image: Any) -> Frame:
        sc = self.scenario
        rgb = bgra_to_rgb(image.raw_data, image.width, image.height)
        if sc.camera.noise_std > 0:
            noisy = rgb.astype(np.float32) + self._rng.normal(0.0, sc.camera.noise_std * 255.0, rgb.shape)
            rgb = np.clip(noisy + 0.5, 0, 255).astype(np.uint8)
        pos, yaw_c, pitch_c, roll_c = transform_to_pose(image.transform, self._z_ref)
        cam = self._camera0.posed(pos, yaw_c, pitch_c, roll_c)
        ego = self._episode.ego
        epos, eyaw, _, _ = transform_to_pose(ego.get_transform(), self._z_ref)
        x = float(epos[0] - self._rear_offset * math.cos(eyaw))
        y = float(epos[1] - self._rear_offset * math.sin(eyaw))
        speed = float(np.linalg.norm(vector_to_xyz(ego.get_velocity())))
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
                if sensor.is_listening:
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
        """Put back the world settings found at connection and switch the Traffic Manager to asynchronous."""
        errors: list[str] = []
        if self._sync_applied:
            try:
                self.world.apply_settings(self._original_settings)
                self._sync_applied = False
            except Exception as exc:
                errors.append(f"restoring the world settings: {exc}")
        if self._tm is not None:
            try:
                self._tm.set_synchronous_mode(False)
                self._tm = None
            except Exception as exc:
                errors.append(f"switching the Traffic Manager back to asynchronous mode: {exc}")
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
