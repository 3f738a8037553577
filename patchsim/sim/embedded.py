"""The built-in simulator: Panda3D rendering offscreen in software on the CPU.

Two offscreen buffers share one scene: the colour render and, when needed, a label render
in which every object is painted with its label id (used for occlusion, segmentation labels
and the depth that post-processed fog needs).
"""

from __future__ import annotations

import math
import threading

import numpy as np

from patchsim.errors import PatchsimError
from patchsim.sim import postfx
from patchsim.sim.base import Control, EgoTruth, Frame, Simulator, check_patch_image, composite_over, slot_or_error
from patchsim.sim.camera import CameraModel
from patchsim.sim.expert import front_bumper_s
from patchsim.sim.layout import Layout, build_layout, place_vehicle
from patchsim.sim.lighting import ResolvedLighting, resolve_lighting
from patchsim.sim.scenario import Scenario, randomized
from patchsim.sim.truth import lane_truth, sign_truths, slot_truths, vehicle_truths
from patchsim.sim.vehicle import KinematicBicycle, VehicleState

_PRC = """
window-type offscreen
load-display p3tinydisplay
audio-library-name null
sync-video 0
notify-level error
notify-level-x11display fatal
notify-level-display fatal
textures-power-2 down
"""
_lock = threading.Lock()
_panda: dict = {}


def _engine_and_pipe():
    """The process-wide Panda3D graphics engine and the software offscreen pipe (created once)."""
    with _lock:
        if not _panda:
            from panda3d.core import GraphicsEngine, GraphicsPipeSelection, load_prc_file_data

            load_prc_file_data("patchsim", _PRC)
            sel = GraphicsPipeSelection.get_global_ptr()
            sel.load_aux_modules()
            pipe = None
            for i in range(sel.get_num_pipe_types()):
                if sel.get_pipe_type(i).name == "TinyOffscreenGraphicsPipe":
                    pipe = sel.make_pipe(sel.get_pipe_type(i))
            if pipe is None:
                raise PatchsimError("Panda3D's software offscreen renderer (p3tinydisplay) is not available")
            _panda["engine"] = GraphicsEngine.get_global_ptr()
            _panda["pipe"] = pipe
        return _panda["engine"], _panda["pipe"]


class _Buffers:
    """Colour and label offscreen buffers of one size, with their cameras under one rig."""

    def __init__(self, width: int, height: int):
        from panda3d.core import (
            Camera,
            ColorAttrib,
            FrameBufferProperties,
            GraphicsOutput,
            GraphicsPipe,
            LightAttrib,
            MatrixLens,
            NodePath,
            RenderState,
            Texture,
            TextureAttrib,
            WindowProperties,
        )

        from patchsim.sim.scene3d import COLOUR_MASK, LABEL_MASK

        self.engine, pipe = _engine_and_pipe()
        self.width, self.height = width, height
        self.rig = NodePath("camera-rig")
        self.outputs = []
        self.textures = []
        self.cams = []
        self.lens = MatrixLens()
        for name, clear in (("colour", (0.6, 0.7, 0.85, 1)), ("label", (0, 0, 0, 1))):
            fb = FrameBufferProperties()
            fb.set_rgb_color(True)
            fb.set_color_bits(24)
            fb.set_depth_bits(16)
            buf = self.engine.make_output(pipe, f"patchsim-{name}", -2, fb, WindowProperties.size(width, height),
                                          GraphicsPipe.BF_refuse_window, None, None)
            if buf is None:
                raise PatchsimError(f"could not open a {width}x{height} offscreen buffer")
            tex = Texture()
            buf.add_render_texture(tex, GraphicsOutput.RTM_copy_ram)
            cam = Camera(f"cam-{name}", self.lens)
            cam_np = self.rig.attach_new_node(cam)
            dr = buf.make_display_region()
            dr.set_camera(cam_np)
            buf.set_clear_color(clear)
            buf.set_clear_color_active(True)
            self.outputs.append(buf)
            self.textures.append(tex)
            self.cams.append(cam)
        self.cams[0].set_camera_mask(COLOUR_MASK)
        self.cams[1].set_camera_mask(LABEL_MASK)
        self.cams[1].set_initial_state(RenderState.make(
            ColorAttrib.make_flat((0, 0, 0, 1)), TextureAttrib.make_off(), LightAttrib.make_all_off(), 1000))
        self.cams[1].set_tag_state_key("label")

    @property
    def label_cam(self):
        return self.cams[1]

    def set_camera(self, cam: CameraModel) -> None:
        """Point both cameras like ``cam``: the lens reproduces its intrinsics exactly."""
        from panda3d.core import LMatrix4f

        w, h = cam.width_px, cam.height_px
        # Panda3D lens space: x right, y forward, z up; film coords in [-1, 1]
        near, far = 0.25, 3000.0
        sx, sy = 2 * cam.fx_px / w, 2 * cam.fy_px / h
        ox, oy = 1 - 2 * cam.cx_px / w, 2 * cam.cy_px / h - 1
        a = (far + near) / (far - near)
        b = -2 * far * near / (far - near)
        # row-vector convention: [x y z 1] * M; clip = (sx x - ox y, sy z - oy y, a y + b, y)
        m = LMatrix4f(sx, 0, 0, 0,
                      -ox, -oy, a, 1,
                      0, sy, 0, 0,
                      0, 0, b, 0)
        self.lens.set_user_mat(m)
        r = cam.rotation  # columns: right, down, forward (world)
        right, down, fwd = r[:, 0], r[:, 1], r[:, 2]
        up = -down
        mat = LMatrix4f(right[0], right[1], right[2], 0,
                        fwd[0], fwd[1], fwd[2], 0,
                        up[0], up[1], up[2], 0,
                        cam.position_m[0], cam.position_m[1], cam.position_m[2], 1)
        self.rig.set_mat(mat)

    def render(self, labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
        self.outputs[1].set_active(labels)
        self.engine.render_frame()
        out = []
        for tex, active in zip(self.textures, (True, labels)):
            if not active:
                out.append(None)
                continue
            data = tex.get_ram_image_as("RGB")
            out.append(np.frombuffer(data, np.uint8).reshape(self.height, self.width, 3)[::-1])
        return out[0], out[1]

    def close(self) -> None:
        for buf in self.outputs:
            self.engine.remove_window(buf)
        self.outputs = []


class EmbeddedSimulator(Simulator):
    """The default backend.

    Args:
        labels: "auto" makes the label render only when fog needs depth or a caller asks for it;
            True makes it for every frame (``Frame.labels``, sign and vehicle visibility); False never.

    Example:
        >>> from patchsim.sim.scenario import load_scenario
        >>> with EmbeddedSimulator() as sim:  # doctest: +SKIP
        ...     frame = sim.reset(load_scenario("scenarios/stop_sign_approach.yaml"))
        ...     frame.image.shape
        (384, 640, 3)
    """

    backend = "embedded"

    def __init__(self, labels: bool | str = "auto"):
        if labels not in (True, False, "auto"):
            raise ValueError("labels must be True, False or 'auto'")
        self.labels_mode = labels
        self._buffers: _Buffers | None = None
        self._scene = None
        self.scenario: Scenario | None = None
        self.layout: Layout | None = None
        self._closed = False

    # ------------------------------------------------------------------ protocol

    def reset(self, scenario: Scenario, seed: int | None = None) -> Frame:
        from patchsim.sim.scene3d import build_scene

        if self._closed:
            raise PatchsimError("simulator is closed")
        if seed is not None:
            scenario = randomized(scenario, seed)
        self.scenario = scenario
        self.light: ResolvedLighting = resolve_lighting(scenario.lighting)
        cam_spec = scenario.camera
        if self._buffers is None or (self._buffers.width, self._buffers.height) != (cam_spec.width_px, cam_spec.height_px):
            if self._buffers is not None:
                self._buffers.close()
            self._buffers = _Buffers(cam_spec.width_px, cam_spec.height_px)
        self._drop_scene()
        self.layout = build_layout(scenario, self.light.sun_azimuth_deg, self.light.sun_elevation_deg)
        self._scene = build_scene(self.layout, scenario, self.light, self._buffers.label_cam)
        self._buffers.rig.reparent_to(self._scene.root)
        self._camera0 = CameraModel.from_fov(cam_spec.width_px, cam_spec.height_px, cam_spec.hfov_deg)
        e = scenario.ego
        self.vehicle_model = KinematicBicycle(e.wheelbase_m, math.radians(e.max_steer_deg), e.max_accel_mps2,
                                              e.max_brake_mps2)
        self._rng = np.random.default_rng(scenario.seed + 1)
        self._step_index = 0
        self._time_s = 0.0
        self._vehicle_s = {v.spec.id: v.s_m for v in self.layout.vehicles}
        self._state = self._pose_state(e.start_s_m, e.lateral_offset_m, math.radians(e.heading_offset_deg), e.speed_mps)
        return self.observe()

    def step(self, control: Control) -> Frame:
        sc = self._require()
        self._state = self.vehicle_model.step(self._state, control, sc.dt_s)
        self._time_s += sc.dt_s
        self._step_index += 1
        self._move_traffic(sc.dt_s)
        return self.observe()

    def set_patch(self, slot: str, image: np.ndarray | None) -> None:
        import cv2

        from patchsim.sim.scene3d import ROAD_SLOT_TEXTURE_PX, update_texture

        self._require()
        placement = slot_or_error(self.layout.slots, slot, self.scenario.name)
        if placement.spec.kind == "sign_face":
            sid = placement.spec.sign
            base = self._scene.face_base_images[sid]
            if image is None:
                update_texture(self._scene.face_textures[sid], base)
                return
            out = composite_over(base.astype(np.float32) / 255.0, check_patch_image(slot, image, placement.size_m))
            update_texture(self._scene.face_textures[sid], (out * 255 + 0.5).astype(np.uint8))
        else:
            node = self._scene.slot_nodes[slot]
            if image is None:
                node.hide()
                return
            rgba = check_patch_image(slot, image, placement.size_m)
            tex = cv2.resize(rgba, (ROAD_SLOT_TEXTURE_PX, ROAD_SLOT_TEXTURE_PX), interpolation=cv2.INTER_AREA)
            update_texture(self._scene.slot_textures[slot], (tex * 255 + 0.5).astype(np.uint8))
            node.show()

    def set_ego_pose(self, s_m: float, lateral_offset_m: float = 0.0, heading_offset_rad: float = 0.0,
                     speed_mps: float | None = None) -> Frame:
        self._require()
        speed = self._state.speed_mps if speed_mps is None else speed_mps
        self._state = self._pose_state(s_m, lateral_offset_m, heading_offset_rad, speed)
        return self.observe()

    @property
    def road(self):
        self._require()
        return self.layout.road

    def label_id(self, name: str) -> int:
        self._require()
        ids = self._scene.labels.ids
        if name not in ids:
            raise PatchsimError(f"no object {name!r} in the label render of scenario {self.scenario.name!r}")
        return int(ids[name])

    def _drop_scene(self) -> None:
        """Remove the scene and free its textures on every graphics context now: the process-wide engine
        outlives this simulator, and a stale prepared texture could otherwise be drawn by a later one (a
        data set generated twice in one process once differed in a distant sign's pixels)."""
        if self._scene is not None:
            for tex in self._scene.root.find_all_textures():
                tex.release_all()
            self._scene.root.remove_node()
            self._scene = None

    def close(self) -> None:
        self._drop_scene()
        if self._buffers is not None:
            self._buffers.close()
            self._buffers = None
        self._closed = True

    # ------------------------------------------------------------------ observation

    def camera_model(self) -> CameraModel:
        """The camera at the ego's current pose."""
        sc = self._require()
        c = sc.camera
        st = self._state
        cy, sy = math.cos(st.yaw_rad), math.sin(st.yaw_rad)
        pos = np.array([st.x_m + c.forward_m * cy - c.lateral_m * sy, st.y_m + c.forward_m * sy + c.lateral_m * cy,
                        c.height_m])
        return self._camera0.posed(pos, st.yaw_rad + math.radians(c.yaw_deg), math.radians(c.pitch_deg))

    def observe(self, labels: bool | None = None) -> Frame:
        """Render the current state (no time passes). ``labels`` overrides the simulator's label mode."""
        sc = self._require()
        layout = self.layout
        cam = self.camera_model()
        want_labels = labels if labels is not None else (self.labels_mode is True)
        fog_on = self.light.fog_visibility_m is not None
        self._buffers.set_camera(cam)
        self._scene.sky_node.set_pos(float(cam.position_m[0]), float(cam.position_m[1]), float(cam.position_m[2]))
        self._scene.sky_node.set_h(math.degrees(self._state.yaw_rad))
        rgb, label_rgb = self._buffers.render(labels=want_labels or fog_on)
        label_map = None
        if label_rgb is not None:
            from patchsim.sim.scene3d import decode_labels

            label_map = decode_labels(label_rgb)
        depth = self._depth(label_map, cam) if fog_on else None
        image = postfx.finish(rgb, self.light.exposure, depth, self.light.fog_visibility_m, self.light.fog_rgb,
                              sc.camera.noise_std, self._rng)
        if image is rgb:
            image = rgb.copy()
        ids = self._scene.labels.ids
        keep = label_map if want_labels else None
        st = self._state
        s_ego, _ = layout.road.project(st.x_m, st.y_m)
        stop_gap = None
        if layout.stop_line_s_m is not None:
            near_edge = layout.stop_line_s_m - sc.road.stop_line_width_m
            stop_gap = near_edge - front_bumper_s(layout.road, st.x_m, st.y_m, st.yaw_rad, sc.ego.wheelbase_m)
        return Frame(
            index=self._step_index,
            time_s=self._time_s,
            image=image,
            camera=cam,
            ego=EgoTruth(st.x_m, st.y_m, st.yaw_rad, st.speed_mps, st.steer, s_ego),
            signs=sign_truths(layout, cam, keep, ids),
            slots=slot_truths(layout, cam),
            objects=vehicle_truths(layout.vehicles, cam, keep, ids),
            lane=lane_truth(layout.road, sc.ego_lane, st.x_m, st.y_m, st.yaw_rad, cam),
            stop_line_distance_m=stop_gap,
            labels=keep,
            label_names=dict(self._scene.labels.names) if keep is not None else {},
        )

    # ------------------------------------------------------------------ internals

    def _require(self) -> Scenario:
        if self._closed:
            raise PatchsimError("simulator is closed")
        if self.scenario is None:
            raise PatchsimError("call reset(scenario) first")
        return self.scenario

    def _pose_state(self, s_m: float, lateral_offset_m: float, heading_offset_rad: float, speed: float) -> VehicleState:
        road = self.layout.road
        d = road.lane_centre_m(self.scenario.ego_lane) + lateral_offset_m
        x, y = road.point(s_m, d)
        _, _, h = road.pose(s_m)
        return VehicleState(float(x), float(y), float(h) + heading_offset_rad, float(speed), 0.0)

    def _move_traffic(self, dt_s: float) -> None:
        from patchsim.sim.scene3d import place_vehicle_node

        for i, v in enumerate(self.layout.vehicles):
            if v.spec.speed_mps <= 0:
                continue
            s = min(self._vehicle_s[v.spec.id] + v.spec.speed_mps * dt_s, self.layout.road.length_m)
            self._vehicle_s[v.spec.id] = s
            moved = place_vehicle(self.layout.road, v.spec, s, v.colour)
            self.layout.vehicles[i] = moved
            place_vehicle_node(self._scene.vehicle_nodes[v.spec.id], moved)

    def _depth(self, label_map: np.ndarray, cam: CameraModel) -> np.ndarray:
        """Per-pixel distance for fog: the ground plane for ground-level ids, a reference point for objects."""
        reg = self._scene.labels
        depth = postfx.ground_depth_m(cam)
        lut = np.full(max(reg.names) + 1, np.nan)
        lut[0] = np.inf
        for lid, point in reg.ref_points.items():
            lut[lid] = float(np.linalg.norm(point - cam.position_m))
        for v in self.layout.vehicles:
            lid = reg.ids.get(f"vehicle:{v.spec.id}")
            if lid is not None:
                lut[lid] = float(np.linalg.norm(v.centre_m - cam.position_m))
        ids = np.clip(label_map, 0, len(lut) - 1)
        obj = lut[ids]
        return np.where(np.isnan(obj), depth, obj)
