"""Build the Panda3D scene graph of a layout: ground, road, markings, signs, vehicles, clutter,
planar shadows, lights and sky, plus the label ids the label render paints them with.

Ground-level layers (ground, road, markings, road patches, shadows) lie in one plane; they are
drawn first, in a fixed order, without depth writes, so there is no z-fighting at any distance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np
from panda3d.core import (
    AmbientLight,
    BitMask32,
    ColorAttrib,
    DirectionalLight,
    NodePath,
    Point3,
    RenderState,
    TransparencyAttrib,
)

from patchsim.sim import meshes, textures
from patchsim.sim.layout import Clutter, Layout, VehiclePlacement
from patchsim.sim.lighting import ResolvedLighting
from patchsim.sim.meshes import box, box_corners, ground_strip, make_texture, merge, mesh_node, polygon
from patchsim.sim.scenario import Scenario

LABEL_MASK = BitMask32.bit(1)  # camera mask of the label render
COLOUR_MASK = BitMask32.bit(0)  # camera mask of the colour render
FACE_TEXTURE_PX = 256
ROAD_SLOT_TEXTURE_PX = 256
MARKING_RGB = (0.88, 0.88, 0.85)
SIGN_SKYLIGHT = 0.3  # extra ambient light on sign faces, see _Builder.signs

# ground-layer draw order inside the "background" bin
_ORDER = {"sky": 0, "ground": 1, "road": 2, "marking": 3, "slot": 4, "shadow": 5}


def label_colour(label_id: int) -> tuple[float, float, float, float]:
    """Flat colour of a label id: 5 bits per channel, centred in each bucket of 8 levels."""
    r, g, b = (label_id >> 10) & 31, (label_id >> 5) & 31, label_id & 31
    return ((r * 8 + 4) / 255.0, (g * 8 + 4) / 255.0, (b * 8 + 4) / 255.0, 1.0)


def decode_labels(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 label render -> (H, W) int32 ids (robust to +-3 levels of rounding)."""
    k = rgb.astype(np.int32) // 8  # bucket k holds levels 8k .. 8k+7, rendered at 8k+4
    return (k[..., 0] << 10) | (k[..., 1] << 5) | k[..., 2]


@dataclass
class LabelRegistry:
    """Label ids of the label render. Fixed: 0 sky, 1 ground, 2 road, 3 lane marking, 4 stop line."""

    names: dict[int, str] = field(default_factory=lambda: {0: "sky", 1: "ground", 2: "road", 3: "marking",
                                                           4: "stop_line"})
    ref_points: dict[int, np.ndarray] = field(default_factory=dict)  # for non-ground ids: a point for depth
    ground_ids: set[int] = field(default_factory=lambda: {1, 2, 3, 4})

    @property
    def ids(self) -> dict[str, int]:
        return {n: i for i, n in self.names.items()}

    def add(self, name: str, ref_point: np.ndarray | None = None, on_ground: bool = False) -> int:
        new_id = max(self.names) + 1 if max(self.names) >= 15 else 16
        self.names[new_id] = name
        if on_ground:
            self.ground_ids.add(new_id)
        elif ref_point is not None:
            self.ref_points[new_id] = np.asarray(ref_point, float)
        return new_id


@dataclass
class Scene:
    root: NodePath
    labels: LabelRegistry
    face_textures: dict[str, object]  # sign id -> Texture
    face_base_images: dict[str, np.ndarray]  # sign id -> RGBA uint8 original face
    slot_nodes: dict[str, NodePath]  # road slot name -> decal node
    slot_textures: dict[str, object]
    vehicle_nodes: dict[str, NodePath]
    sky_node: NodePath


class _Builder:
    def __init__(self, layout: Layout, scenario: Scenario, light: ResolvedLighting, label_cam_node):
        self.layout = layout
        self.scenario = scenario
        self.light = light
        self.label_cam = label_cam_node
        self.root = NodePath("world")
        self.labels = LabelRegistry()
        self.rng = np.random.default_rng(scenario.seed + 7919)
        for lid in list(self.labels.names):
            self._register_state(lid)

    # -- labels
    def _register_state(self, label_id: int) -> None:
        state = RenderState.make(ColorAttrib.make_flat(label_colour(label_id)), 1001)
        self.label_cam.set_tag_state(str(label_id), state)

    def tag(self, node: NodePath, label_id: int) -> None:
        node.set_tag("label", str(label_id))

    def new_label(self, name: str, ref_point=None, on_ground=False) -> int:
        lid = self.labels.add(name, ref_point, on_ground)
        self._register_state(lid)
        return lid

    def attach(self, name: str, arrays, parent: NodePath | None = None) -> NodePath:
        return (parent or self.root).attach_new_node(mesh_node(name, *arrays))

    def ground_layer(self, node: NodePath, layer: str) -> None:
        node.set_bin("background", _ORDER[layer])
        node.set_depth_write(False)
        node.set_depth_test(False)

    # -- pieces
    def ground_and_road(self) -> None:
        road = self.layout.road
        spec = self.scenario.road
        cx, cy = road.x.mean(), road.y.mean()
        half = 2000.0
        corners = np.array([[cx - half, cy - half, 0], [cx + half, cy - half, 0], [cx + half, cy + half, 0],
                            [cx - half, cy + half, 0]])
        ground = self.attach("ground", polygon(corners, np.array([0, 0, 1.0]), corners[:, :2] / 3.0))
        ground.set_texture(make_texture("ground", textures.ground(self.rng, spec.ground)))
        self.ground_layer(ground, "ground")
        self.tag(ground, 1)

        left, right = road.edges_m()
        pave = spec.shoulder_m
        strip = road.strip_polygon(0.0, road.length_m, (left + right) / 2, spec.width_m + 2 * pave, step_m=1.0)
        n = len(strip) // 2
        s_along = np.linspace(0.0, road.length_m, n)
        node = self.attach("road", ground_strip(strip[:n], strip[n:], 0.0, 4.0, s_along, spec.width_m + 2 * pave))
        node.set_texture(make_texture("asphalt", textures.asphalt(self.rng, spec.asphalt_tone, spec.asphalt_wear)))
        self.ground_layer(node, "road")
        self.tag(node, 2)

        stop = None
        if self.layout.stop_line_s_m is not None:
            stop = (self.layout.stop_line_s_m, left, right)
        lane_parts, stop_parts = [], []
        for m in road.markings(stop):
            poly = road.strip_polygon(m.s_start_m, m.s_end_m, m.d_m, m.width_m, step_m=2.0 if m.kind != "stop" else 0.5)
            k = len(poly) // 2
            part = ground_strip(poly[:k], poly[k:], 0.0, None)
            (stop_parts if m.kind == "stop" else lane_parts).append(part)
        paint = make_texture("paint", (np.clip(np.array(MARKING_RGB) * (1 + 0.04 * self.rng.standard_normal((32, 32, 1))),
                                               0, 1) * 255).astype(np.uint8))
        for parts, lid, name in ((lane_parts, 3, "markings"), (stop_parts, 4, "stop_line")):
            if parts:
                node = self.attach(name, merge(parts))
                node.set_texture(paint)
                self.ground_layer(node, "marking")
                self.tag(node, lid)

    def signs(self) -> tuple[dict, dict]:
        face_tex, face_img = {}, {}
        back_rgb = textures.flat(textures.SIGN_BACK)
        # Sign sheeting is retroreflective and faces the open road: it catches skylight that the
        # flat ambient term underestimates, so faces get extra ambient light (dimmer at dusk).
        boost = AmbientLight("sign-skylight")
        level = SIGN_SKYLIGHT * min(1.0, float(self.light.sun_rgb.mean() + self.light.ambient_rgb.mean()) / 1.2)
        boost.set_color((level, level, level, 1.0))
        boost_np = self.root.attach_new_node(boost)
        for sign in self.layout.signs:
            sid = sign.spec.id
            img = textures.sign_face(sign.spec.kind, FACE_TEXTURE_PX, sign.spec.speed_limit_mph)
            tex = make_texture(f"face:{sid}", img, clamp=True)
            uv = np.c_[sign.outline_uv[:, 0], 1.0 - sign.outline_uv[:, 1]]
            face = self.attach(f"face:{sid}", polygon(sign.outline_m + sign.normal * 0.005, sign.normal, uv))
            face.set_texture(tex)
            face.set_light(boost_np)
            self.tag(face, self.new_label(f"sign:{sid}", sign.centre_m))
            back = self.attach(f"back:{sid}", polygon(sign.outline_m - sign.normal * 0.005, -sign.normal, uv))
            height = float(sign.pole_top_m[2])
            centre = sign.pole_base_m + np.array([0, 0, height / 2])
            yaw = math.atan2(sign.normal[1], sign.normal[0])
            pole = self.attach(f"pole:{sid}", box(centre, (0.06, 0.06, height), yaw))
            pole_id = self.new_label(f"pole:{sid}", centre)
            for node in (back, pole):
                node.set_texture(make_texture("metal", back_rgb, mipmap=False))
                self.tag(node, pole_id)
            face_tex[sid] = tex
            face_img[sid] = img
        return face_tex, face_img

    def vehicle(self, v: VehiclePlacement) -> NodePath:
        """A vehicle in its own local frame (x forward, y left, z up, origin at the ground centre)."""
        l, w, h = v.size_m
        node = self.root.attach_new_node(f"vehicle:{v.spec.id}")
        body_h = h * (0.55 if v.spec.kind == "car" else 0.75)
        cabin_len = l * (0.5 if v.spec.kind == "car" else 0.22)
        body = self.attach("body", box(np.array([0, 0, 0.3 + (body_h - 0.3) / 2]), (l, w, body_h - 0.3), 0.0), node)
        body.set_color(*v.colour, 1.0)
        cab_x = -0.05 * l if v.spec.kind == "car" else l / 2 - cabin_len / 2
        cab_top = h if v.spec.kind == "car" else h * 0.95
        cabin = self.attach("cabin", box(np.array([cab_x, 0, (body_h + cab_top) / 2]), (cabin_len, w * 0.9,
                                         cab_top - body_h), 0.0), node)
        cabin.set_color(0.12, 0.14, 0.17, 1.0)
        if v.spec.kind != "car":  # cargo box behind the cab
            cargo_len = l - cabin_len - 0.2
            cargo = self.attach("cargo", box(np.array([-l / 2 + cargo_len / 2, 0, (0.3 + h) / 2]),
                                             (cargo_len, w, h - 0.3), 0.0), node)
            cargo.set_color(*(np.array(v.colour) * 0.9 + 0.1), 1.0)
        wheels = []
        for fx in (l * 0.33, -l * 0.33):
            for sy in (w / 2 - 0.15, -w / 2 + 0.15):
                wheels.append(box(np.array([fx, sy, 0.33]), (0.66, 0.25, 0.66), 0.0))
        wh = self.attach("wheels", merge(wheels), node)
        wh.set_color(0.05, 0.05, 0.05, 1.0)
        for part in node.get_children():
            part.set_texture_off(1)
        self.tag(node, self.new_label(f"vehicle:{v.spec.id}", v.centre_m))
        if v.spec.speed_mps > 0:  # a moving vehicle carries its shadow along
            c, s = math.cos(v.yaw_rad), math.sin(v.yaw_rad)

            def to_local(xy: np.ndarray) -> np.ndarray:
                rel = xy - v.centre_m[:2]
                return np.stack([rel[:, 0] * c + rel[:, 1] * s, -rel[:, 0] * s + rel[:, 1] * c], 1)

            self.shadow_node("shadow", [box_corners(v.centre_m, v.size_m, v.yaw_rad)], node, to_local)
        self.place_vehicle(node, v)
        return node

    @staticmethod
    def place_vehicle(node: NodePath, v: VehiclePlacement) -> None:
        node.set_pos(float(v.centre_m[0]), float(v.centre_m[1]), 0.0)
        node.set_h(math.degrees(v.yaw_rad))

    def clutter(self, items: list[Clutter]) -> None:
        buildings, trees, boxes = [], [], []
        for c in items:
            {"building": buildings, "tree": trees}.get(c.kind, boxes).append(c)
        for i, b in enumerate(buildings):
            node = self.attach(f"building{i}", box(b.centre_m, b.size_m, b.yaw_rad, uv_m=4.0))
            node.set_texture(make_texture(f"facade{i}", textures.facade(self.rng)))
            self.tag(node, self.new_label(f"building:{i}", b.centre_m))
        for i, c in enumerate(trees):
            tree = self.root.attach_new_node(f"tree{i}")
            trunk_h = c.size_m[2] * 0.4
            crown_w = c.size_m[2] * 0.45
            trunk = self.attach("trunk", box(np.r_[c.centre_m[:2], trunk_h / 2], (0.3, 0.3, trunk_h), c.yaw_rad), tree)
            trunk.set_color(0.3, 0.2, 0.12, 1.0)
            crown = self.attach("crown", box(np.r_[c.centre_m[:2], trunk_h + (c.size_m[2] - trunk_h) / 2],
                                             (crown_w, crown_w, c.size_m[2] - trunk_h), c.yaw_rad + 0.6, bottom=True),
                                tree)
            crown.set_color(*c.colour, 1.0)
            tree.set_texture_off(1)
            self.tag(tree, self.new_label(f"tree:{i}", c.centre_m))
        for i, c in enumerate(boxes):
            node = self.attach(f"box{i}", box(c.centre_m, c.size_m, c.yaw_rad))
            node.set_color(*c.colour, 1.0)
            node.set_texture_off(1)
            self.tag(node, self.new_label(f"box:{i}", c.centre_m))

    def road_slots(self) -> tuple[dict, dict]:
        nodes, texs = {}, {}
        for name, slot in self.layout.slots.items():
            if slot.spec.kind != "road":
                continue
            uv = np.array([[0, 1.0], [1, 1], [1, 0], [0, 0]])
            node = self.attach(f"slot:{name}", polygon(slot.corners_m, np.array([0, 0, 1.0]), uv))
            tex = make_texture(f"slot:{name}", np.zeros((ROAD_SLOT_TEXTURE_PX, ROAD_SLOT_TEXTURE_PX, 4), np.uint8),
                               clamp=True)
            node.set_texture(tex)
            node.set_transparency(TransparencyAttrib.M_alpha)
            self.ground_layer(node, "slot")
            self.tag(node, self.new_label(f"slot:{name}", None, on_ground=True))
            node.hide()
            nodes[name], texs[name] = node, tex
        return nodes, texs

    def shadows(self) -> None:
        """Static cast shadows; a moving vehicle carries its own (see :meth:`vehicle`)."""
        casters: list[np.ndarray] = []
        for sign in self.layout.signs:
            casters.append(np.concatenate([sign.outline_m, [sign.pole_base_m, sign.pole_top_m]]))
        for v in self.layout.vehicles:
            if v.spec.speed_mps == 0:
                casters.append(box_corners(v.centre_m, v.size_m, v.yaw_rad))
        for c in self.layout.clutter:
            casters.append(box_corners(c.centre_m, c.size_m, c.yaw_rad))
        self.shadow_node("shadows", casters, self.root)

    def shadow_node(self, name: str, casters: list[np.ndarray], parent: NodePath,
                    to_local=None) -> NodePath | None:
        """Dark translucent ground polygons where ``casters`` (each (N, 3) world points) block the sun."""
        alpha = self.light.shadow_alpha
        sun = self.layout.sun_direction
        if alpha <= 0 or sun[2] <= 0.02:
            return None
        parts = []
        for pts in casters:
            ground = pts[:, :2] - (pts[:, 2:3] / sun[2]) * sun[None, :2]
            if to_local is not None:
                ground = to_local(ground)
            hull = cv2.convexHull(ground.astype(np.float32)).reshape(-1, 2).astype(float)
            if len(hull) >= 3:
                parts.append(polygon(np.c_[hull, np.zeros(len(hull))], np.array([0, 0, 1.0]), np.zeros((len(hull), 2))))
        if not parts:
            return None
        node = self.attach(name, merge(parts), parent)
        node.set_color(0, 0, 0, alpha)
        node.set_texture_off(1)
        node.set_light_off(1)
        node.set_transparency(TransparencyAttrib.M_alpha)
        self.ground_layer(node, "shadow")
        node.hide(LABEL_MASK)
        return node

    def lights(self) -> None:
        sun = self.layout.sun_direction
        dl = DirectionalLight("sun")
        dl.set_color((*self.light.sun_rgb, 1.0))
        dnp = self.root.attach_new_node(dl)
        dnp.look_at(Point3(*(-sun)))
        self.root.set_light(dnp)
        al = AmbientLight("ambient")
        al.set_color((*self.light.ambient_rgb, 1.0))
        self.root.set_light(self.root.attach_new_node(al))

    def sky(self) -> NodePath:
        img = textures.sky(self.rng, self.light.sky_horizon_rgb, self.light.sky_zenith_rgb, self.light.cloudiness)
        # a card 1500 m away spanning -10..60 deg elevation and +-90 deg azimuth; it follows the camera's yaw
        dist = 1500.0
        half_w = dist * math.tan(math.radians(60))
        z0, z1 = dist * math.tan(math.radians(-10)), dist * math.tan(math.radians(45))
        corners = np.array([[dist, half_w, z0], [dist, -half_w, z0], [dist, -half_w, z1], [dist, half_w, z1]])
        uv = np.array([[0, 0], [1, 0], [1, 1], [0, 1.0]])
        node = self.attach("sky", polygon(corners, np.array([-1.0, 0, 0]), uv))
        node.set_texture(make_texture("sky", cv2.resize(img, (256, 128)), clamp=True))
        node.set_light_off(1)
        self.ground_layer(node, "sky")
        node.hide(LABEL_MASK)
        return node


def build_scene(layout: Layout, scenario: Scenario, light: ResolvedLighting, label_cam_node) -> Scene:
    """Build every node of the scene under a new root."""
    b = _Builder(layout, scenario, light, label_cam_node)
    b.ground_and_road()
    face_tex, face_img = b.signs()
    vehicle_nodes = {v.spec.id: b.vehicle(v) for v in layout.vehicles}
    b.clutter(layout.clutter)
    slot_nodes, slot_texs = b.road_slots()
    b.shadows()
    b.lights()
    sky = b.sky()
    return Scene(b.root, b.labels, face_tex, face_img, slot_nodes, slot_texs, vehicle_nodes, sky)


place_vehicle_node = _Builder.place_vehicle
update_texture = meshes.update_texture
