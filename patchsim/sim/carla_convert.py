"""Conversions between CARLA's frame and types and patchsim's, as plain functions.

Frames:
    CARLA (Unreal Engine) is left-handed: x forward, y right, z up, metres; rotations in
    degrees, yaw clockwise seen from above, pitch positive nose up, roll positive right side
    down (intrinsic yaw, then pitch, then roll).
    patchsim is right-handed: x east, y north, z up, metres; yaw counter-clockwise seen from
    above, pitch positive looking up, radians (see :mod:`patchsim.sim.camera`).

The two are mirror images through the x-z plane::

    (x, y, z)_patchsim = (x, -y, z - z_ref)_carla
    yaw_patchsim = -radians(yaw_carla), pitch_patchsim = radians(pitch_carla),
    roll_patchsim = radians(roll_carla)

``z_ref`` is the CARLA height of the road at the ego's start, so that patchsim's ground plane
``z = 0`` lies on the road there. The functions take the ``carla`` module (or a test double of
it) as ``cm`` wherever they must build a CARLA object; everything else is numpy.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Sequence

import cv2
import numpy as np

from patchsim.errors import PatchsimError, ShapeError
from patchsim.sim.base import Control
from patchsim.sim.camera import rotation_world_from_camera
from patchsim.sim.lighting import resolve_lighting
from patchsim.sim.road import SAMPLE_M, Road
from patchsim.sim.scenario import CameraSpec, LightingSpec, RoadSpec

# --------------------------------------------------------------------------- angles and positions


def wrap_deg(angle_deg: float) -> float:
    """Angle in degrees wrapped to (-180, 180]."""
    a = (float(angle_deg) + 180.0) % 360.0 - 180.0
    return 180.0 if a == -180.0 else a


def yaw_to_patchsim(yaw_deg: float) -> float:
    """CARLA yaw (degrees, clockwise from +x) -> patchsim yaw (radians, counter-clockwise)."""
    return -math.radians(yaw_deg)


def yaw_to_carla(yaw_rad: float) -> float:
    """patchsim yaw (radians, counter-clockwise) -> CARLA yaw (degrees, clockwise), in (-180, 180]."""
    return wrap_deg(-math.degrees(yaw_rad))


def carla_to_xyz(x: float, y: float, z: float, z_ref: float = 0.0) -> np.ndarray:
    """A CARLA point (metres) -> patchsim point (3,) in metres."""
    return np.array([float(x), -float(y), float(z) - z_ref])


def xyz_to_carla(point: Sequence[float], z_ref: float = 0.0) -> tuple[float, float, float]:
    """A patchsim point (3,) or (2,) (then z = 0) -> CARLA (x, y, z) in metres."""
    p = np.asarray(point, dtype=float)
    z = float(p[2]) if p.shape[0] > 2 else 0.0
    return float(p[0]), -float(p[1]), z + z_ref


def location_to_xyz(location: Any, z_ref: float = 0.0) -> np.ndarray:
    """``carla.Location`` -> patchsim point (3,)."""
    return carla_to_xyz(location.x, location.y, location.z, z_ref)


def xyz_to_location(cm: Any, point: Sequence[float], z_ref: float = 0.0) -> Any:
    """patchsim point -> ``carla.Location``."""
    x, y, z = xyz_to_carla(point, z_ref)
    return cm.Location(x=x, y=y, z=z)


def vector_to_xyz(vector: Any) -> np.ndarray:
    """A CARLA direction or velocity (``carla.Vector3D``) -> patchsim vector (3,); no height offset."""
    return np.array([float(vector.x), -float(vector.y), float(vector.z)])


def rotation_to_patchsim(rotation: Any) -> tuple[float, float, float]:
    """``carla.Rotation`` (degrees) -> patchsim (yaw, pitch, roll) in radians."""
    return yaw_to_patchsim(rotation.yaw), math.radians(rotation.pitch), math.radians(rotation.roll)


def rotation_from_patchsim(cm: Any, yaw_rad: float, pitch_rad: float = 0.0, roll_rad: float = 0.0) -> Any:
    """patchsim (yaw, pitch, roll) in radians -> ``carla.Rotation`` in degrees."""
    return cm.Rotation(pitch=math.degrees(pitch_rad), yaw=yaw_to_carla(yaw_rad), roll=math.degrees(roll_rad))


def transform_from_pose(cm: Any, point: Sequence[float], yaw_rad: float, pitch_rad: float = 0.0,
                        roll_rad: float = 0.0, z_ref: float = 0.0) -> Any:
    """patchsim position and orientation -> ``carla.Transform``."""
    return cm.Transform(xyz_to_location(cm, point, z_ref), rotation_from_patchsim(cm, yaw_rad, pitch_rad, roll_rad))


def transform_to_pose(transform: Any, z_ref: float = 0.0) -> tuple[np.ndarray, float, float, float]:
    """``carla.Transform`` -> (position (3,), yaw, pitch, roll) in patchsim's frame, radians."""
    yaw, pitch, roll = rotation_to_patchsim(transform.rotation)
    return location_to_xyz(transform.location, z_ref), yaw, pitch, roll


def carla_axes(pitch_deg: float, yaw_deg: float, roll_deg: float) -> tuple[np.ndarray, ...]:
    """Unreal's rotator as (forward, right, up) unit vectors (3,) each, in CARLA coordinates."""
    sp, cp = math.sin(math.radians(pitch_deg)), math.cos(math.radians(pitch_deg))
    sy, cy = math.sin(math.radians(yaw_deg)), math.cos(math.radians(yaw_deg))
    sr, cr = math.sin(math.radians(roll_deg)), math.cos(math.radians(roll_deg))
    forward = np.array([cp * cy, cp * sy, sp])
    right = np.array([sr * sp * cy - cr * sy, sr * sp * sy + cr * cy, -sr * cp])
    up = np.array([-(cr * sp * cy + sr * sy), cy * sr - cr * sp * sy, cr * cp])
    return forward, right, up


def camera_rotation(rotation: Any) -> np.ndarray:
    """World-from-camera rotation (3, 3) in patchsim's frame for a CARLA camera's ``carla.Rotation``.

    Columns are the camera's right, down and forward axes, as :class:`patchsim.sim.camera.CameraModel`
    expects. A CARLA camera looks along its actor's +x with +y to the right of the image.
    """
    yaw, pitch, roll = rotation_to_patchsim(rotation)
    return rotation_world_from_camera(yaw, pitch, roll)


# --------------------------------------------------------------------------- control and images


def steer_to_carla(steer: float) -> float:
    """patchsim steer (+1 = full left) -> CARLA steer (+1 = full right)."""
    return -float(steer)


def control_to_carla(cm: Any, control: Control) -> Any:
    """patchsim :class:`Control` (clipped to its ranges) -> ``carla.VehicleControl``."""
    c = control.clipped()
    return cm.VehicleControl(throttle=c.throttle, steer=steer_to_carla(c.steer), brake=c.brake)


def bgra_to_rgb(raw: bytes | bytearray | memoryview | np.ndarray, width_px: int, height_px: int) -> np.ndarray:
    """A CARLA camera buffer (``carla.Image.raw_data``: BGRA, row 0 at the top) -> (H, W, 3) uint8 RGB."""
    buf = np.frombuffer(raw, dtype=np.uint8) if not isinstance(raw, np.ndarray) else raw.reshape(-1)
    if buf.size != width_px * height_px * 4:
        raise ShapeError(f"camera buffer of {buf.size} bytes does not hold a {width_px}x{height_px} BGRA image")
    return np.ascontiguousarray(buf.reshape(height_px, width_px, 4)[:, :, 2::-1])


# --------------------------------------------------------------------------- weather

#: The fields of ``carla.WeatherParameters`` in CARLA 0.9.16, in the order of its constructor.
WEATHER_FIELDS: tuple[str, ...] = (
    "cloudiness", "precipitation", "precipitation_deposits", "wind_intensity", "sun_azimuth_angle",
    "sun_altitude_angle", "fog_density", "fog_distance", "fog_falloff", "wetness", "scattering_intensity",
    "mie_scattering_scale", "rayleigh_scattering_scale", "dust_storm",
)
#: The CARLA weather preset each patchsim lighting preset starts from.
CARLA_WEATHER_PRESET: dict[str, str] = {
    "noon": "ClearNoon",
    "morning": "ClearSunset",
    "evening": "ClearSunset",
    "overcast": "CloudyNoon",
    "dusk": "ClearSunset",
}
_CLEAR_NOON = {
    "cloudiness": 5.0, "precipitation": 0.0, "precipitation_deposits": 0.0, "wind_intensity": 10.0,
    "sun_azimuth_angle": -1.0, "sun_altitude_angle": 45.0, "fog_density": 2.0, "fog_distance": 0.75,
    "fog_falloff": 0.1, "wetness": 0.0, "scattering_intensity": 1.0, "mie_scattering_scale": 0.03,
    "rayleigh_scattering_scale": 0.0331, "dust_storm": 0.0,
}
#: The values of those presets in carla 0.9.16 (the tests compare them with the installed package), so
#: that a dry run can show them without the ``carla`` package. At run time the presets are read from
#: the client package itself.
CARLA_PRESET_VALUES: dict[str, dict[str, float]] = {
    "ClearNoon": _CLEAR_NOON,
    "CloudyNoon": {**_CLEAR_NOON, "cloudiness": 60.0, "fog_density": 3.0},
    "ClearSunset": {**_CLEAR_NOON, "sun_altitude_angle": 15.0},
}
#: fog_density = FOG_DENSITY_VISIBILITY_M / visibility, clipped to [0, 100] (a heuristic, see docs/carla.md).
FOG_DENSITY_VISIBILITY_M = 3000.0


def compass_to_carla_azimuth(bearing_deg: float) -> float:
    """Sun compass bearing (0 = patchsim +y north, 90 = +x east) -> CARLA ``sun_azimuth_angle`` in [0, 360).

    Assumes CARLA measures the azimuth like its yaw (from +x, clockwise seen from above); the
    mirror between the frames then gives ``bearing - 90``.
    """
    return (float(bearing_deg) - 90.0) % 360.0


def fog_density_for_visibility(visibility_m: float | None) -> float:
    """CARLA ``fog_density`` (percent) for a meteorological visibility in metres; 0 without fog."""
    if visibility_m is None:
        return 0.0
    return float(np.clip(FOG_DENSITY_VISIBILITY_M / max(float(visibility_m), 1e-6), 0.0, 100.0))


def weather_preset(spec: LightingSpec) -> str:
    """Name of the ``carla.WeatherParameters`` preset a lighting spec starts from, e.g. ``"ClearNoon"``."""
    return CARLA_WEATHER_PRESET[spec.preset]


def weather_adjustments(spec: LightingSpec) -> dict[str, float]:
    """The ``carla.WeatherParameters`` fields patchsim sets on top of the preset.

    * ``sun_azimuth_angle``, ``sun_altitude_angle`` (degrees): the sun of the embedded simulator
      for this spec (:func:`patchsim.sim.lighting.resolve_lighting`: the scenario's
      ``sun_azimuth_deg`` / ``sun_elevation_deg``, else its preset's), so that ``morning`` and
      ``evening`` differ although both start from ``ClearSunset``.
    * ``fog_density`` (percent) and ``fog_distance`` (metres, 0: from the camera on), only when
      the scenario sets ``fog_visibility_m``; otherwise the preset's light haze stays.
    """
    sun = resolve_lighting(spec)
    out = {"sun_azimuth_angle": compass_to_carla_azimuth(sun.sun_azimuth_deg),
           "sun_altitude_angle": float(sun.sun_elevation_deg)}
    if spec.fog_visibility_m is not None:
        out["fog_density"] = fog_density_for_visibility(spec.fog_visibility_m)
        out["fog_distance"] = 0.0
    return out


def weather_values(spec: LightingSpec) -> dict[str, float]:
    """Every ``carla.WeatherParameters`` field (:data:`WEATHER_FIELDS`) for a lighting spec, without ``carla``:
    the preset's values (:data:`CARLA_PRESET_VALUES`) with :func:`weather_adjustments` applied."""
    values = dict(CARLA_PRESET_VALUES[weather_preset(spec)])
    values.update(weather_adjustments(spec))
    return values


def weather_for_lighting(cm: Any, spec: LightingSpec) -> Any:
    """A new ``carla.WeatherParameters``: the client package's preset for ``spec``, adjusted.

    The preset is copied, never changed: ``carla.WeatherParameters.ClearNoon`` and its kind are
    shared instances in the client package.
    """
    preset = getattr(cm.WeatherParameters, weather_preset(spec))
    values = {name: float(getattr(preset, name)) for name in WEATHER_FIELDS}
    values.update(weather_adjustments(spec))
    return cm.WeatherParameters(**values)


# --------------------------------------------------------------------------- camera


def exposure_compensation_ev(exposure: float) -> float:
    """patchsim exposure gain -> CARLA camera ``exposure_compensation`` in EV stops (log2 of the gain)."""
    return math.log2(max(float(exposure), 1e-6))


def camera_attributes(camera: CameraSpec, lighting: LightingSpec) -> dict[str, str]:
    """``sensor.camera.rgb`` blueprint attributes for a scenario's camera, as strings.

    Size and horizontal field of view; exposure fixed (``exposure_mode = "manual"``, so no eye
    adaptation from frame to frame, with ``exposure_compensation`` = log2 of the scenario's
    ``exposure``); no motion blur (scenarios have no motion blur setting).
    """
    return {
        "image_size_x": str(int(camera.width_px)),
        "image_size_y": str(int(camera.height_px)),
        "fov": f"{camera.hfov_deg:g}",
        "exposure_mode": "manual",
        "exposure_compensation": f"{exposure_compensation_ev(lighting.exposure):.4f}",
        "motion_blur_intensity": "0.0",
    }


def camera_mount(camera: CameraSpec, rear_axle_offset_m: float) -> tuple[tuple[float, float, float],
                                                                         tuple[float, float, float]]:
    """The camera's transform relative to the ego actor, in CARLA's frame.

    Returns ((x, y, z) in metres, (pitch, yaw, roll) in degrees).

    ``rear_axle_offset_m`` is the distance from the actor's origin back to the rear axle, where
    the scenario measures ``forward_m`` from.
    """
    location = (float(camera.forward_m - rear_axle_offset_m), 0.0 - float(camera.lateral_m), float(camera.height_m))
    return location, (float(camera.pitch_deg), 0.0 - float(camera.yaw_deg), 0.0)


# --------------------------------------------------------------------------- textures


def canvas_shape(canvas_size_m: tuple[float, float], canvas_px: int) -> tuple[int, int]:
    """(height_px, width_px) of a texture for a face of (width, height) metres; the longer side gets ``canvas_px``."""
    w, h = canvas_size_m
    if w >= h:
        return max(2, int(round(canvas_px * h / w))), int(canvas_px)
    return int(canvas_px), max(2, int(round(canvas_px * w / h)))


def compose_canvas(content: np.ndarray, content_size_m: tuple[float, float], canvas_size_m: tuple[float, float],
                   canvas_px: int, fill_rgb: tuple[float, float, float]) -> np.ndarray:
    """Lay an image on a textured face larger than it, centred, over a plain fill.

    Args:
        content: (H, W, 4) float RGBA in [0, 1]; its alpha blends it over the fill.
        content_size_m: (width, height) the content covers on the face.
        canvas_size_m: (width, height) of the whole face; at least ``content_size_m``.
        canvas_px: pixels along the longer side of the face.
        fill_rgb: colour in [0, 1] around and under the content.

    Returns:
        (Hc, Wc, 4) uint8 RGBA, alpha 255, row 0 at the top of the face.
    """
    cw, ch = canvas_size_m
    w, h = content_size_m
    if w > cw * 1.0001 or h > ch * 1.0001:
        raise PatchsimError(f"a {w:.3f} x {h:.3f} m image does not fit on a {cw:.3f} x {ch:.3f} m face")
    hc, wc = canvas_shape(canvas_size_m, canvas_px)
    out = np.empty((hc, wc, 3), np.float32)
    out[:] = np.asarray(fill_rgb, np.float32)
    x0 = int(round((cw - w) / 2 / cw * wc))
    y0 = int(round((ch - h) / 2 / ch * hc))
    x1 = max(x0 + 1, int(round((cw + w) / 2 / cw * wc)))
    y1 = max(y0 + 1, int(round((ch + h) / 2 / ch * hc)))
    src = np.asarray(content, np.float32)
    if src.shape[:2] != (y1 - y0, x1 - x0):
        src = cv2.resize(src, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    a = src[..., 3:4]
    out[y0:y1, x0:x1] = out[y0:y1, x0:x1] * (1 - a) + src[..., :3] * a
    rgb = (np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8)
    return np.dstack([rgb, np.full((hc, wc), 255, np.uint8)])


def orient_texture(image: np.ndarray, transpose: bool = False, flip_u: bool = False, flip_v: bool = True) -> np.ndarray:
    """Re-index an image (row 0 at the top) so that ``out[y, x]`` is texel (x, y) of a ``carla.TextureColor``.

    CARLA's own texture example writes image row ``r`` to texel row ``height - 1 - r``, hence
    ``flip_v=True`` by default. ``transpose`` swaps the axes first (for meshes whose U runs up
    the face), ``flip_u`` mirrors left-right. Which combination a given mesh needs is a property
    of its UV layout; see docs/carla.md for the check.
    """
    out = np.asarray(image)
    if transpose:
        out = out.transpose(1, 0, *range(2, out.ndim))
    if flip_u:
        out = out[:, ::-1]
    if flip_v:
        out = out[::-1]
    return np.ascontiguousarray(out)


def texture_from_image(cm: Any, rgba: np.ndarray, transpose: bool = False, flip_u: bool = False,
                       flip_v: bool = True) -> Any:
    """(H, W, 4) or (H, W, 3) uint8 image, row 0 at the top -> ``carla.TextureColor`` (see :func:`orient_texture`)."""
    img = np.asarray(rgba)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ShapeError(f"texture image must be (H, W, 3|4) uint8, got {img.shape} {img.dtype}")
    if img.shape[2] == 3:
        img = np.dstack([img, np.full(img.shape[:2], 255, np.uint8)])
    tex_img = orient_texture(img, transpose, flip_u, flip_v)
    th, tw = tex_img.shape[:2]
    texture = cm.TextureColor(tw, th)
    color = cm.Color
    rows = tex_img.tolist()
    for y in range(th):
        row = rows[y]
        for x in range(tw):
            r, g, b, a = row[x]
            texture.set(x, y, color(r, g, b, a))
    return texture


def contrast_texture(image: np.ndarray, size_px: int = 4) -> np.ndarray:
    """A plain (size_px, size_px, 4) uint8 RGBA image far from ``image``'s mean colour, for a texture check.

    Each channel is 255 where ``image``'s (H, W, 3|4) mean is below 128, else 0.
    """
    mean = np.asarray(image, np.float32)[..., :3].reshape(-1, 3).mean(0)
    out = np.zeros((size_px, size_px, 4), np.uint8)
    out[..., :3] = np.where(mean < 128, 255, 0).astype(np.uint8)
    out[..., 3] = 255
    return out


def quad_mask(corners_px: np.ndarray, width_px: int, height_px: int, shrink: float = 1.0) -> np.ndarray:
    """(H, W) bool: the pixels whose centres lie inside a convex image quad.

    Args:
        corners_px: (4, 2) image corners (x, y) in order around the quad, either direction.
        shrink: scale of the quad about its centroid before the test (0.6 keeps clear of its
            edges, where a small misplacement would mix in the background).

    Returns all False when a corner is not finite.
    """
    mask = np.zeros((height_px, width_px), bool)
    quad = np.asarray(corners_px, float)
    if not np.isfinite(quad).all():
        return mask
    centre = quad.mean(0)
    quad = centre + shrink * (quad - centre)
    x0, y0 = np.maximum(np.floor(quad.min(0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(quad.max(0)).astype(int) + 1, [width_px, height_px])
    if x0 >= x1 or y0 >= y1:
        return mask
    px, py = np.meshgrid(np.arange(x0, x1) + 0.5, np.arange(y0, y1) + 0.5)
    sides = []
    for a, b in zip(quad, np.roll(quad, -1, axis=0)):
        sides.append((b[0] - a[0]) * (py - a[1]) - (b[1] - a[1]) * (px - a[0]))
    sides = np.stack(sides)
    mask[y0:y1, x0:x1] = (sides >= 0).all(0) | (sides <= 0).all(0)
    return mask


def mean_change(before: np.ndarray, after: np.ndarray, mask: np.ndarray) -> float:
    """Mean absolute difference of two (H, W, 3) uint8 images over the pixels in ``mask`` and channels, 0-255 levels."""
    if not mask.any():
        return 0.0
    diff = np.abs(before[mask].astype(np.int16) - after[mask].astype(np.int16))
    return float(diff.mean())


# --------------------------------------------------------------------------- road


class CarlaRoad(Road):
    """A patchsim :class:`Road` whose centre line comes from CARLA waypoints, in patchsim's frame.

    It has every method patchsim's layout, ground truth and expert driver use (``pose``,
    ``point``, ``project``, ``lane_centre_m``, ``edges_m``, ``curvature_at``, ``length_m``),
    plus ``z_at`` for the road height, which CARLA maps have and patchsim's flat roads do not.

    The reference line is placed so that ``lane_centre_m(ego_lane)`` runs along the centre of
    the CARLA lane the ego starts in; the other lanes of ``spec`` are assumed parallel to it at
    ``spec.lane_width_m``, whatever the CARLA map has there.
    """

    def __init__(self, spec: RoadSpec, x: np.ndarray, y: np.ndarray, z: np.ndarray, heading: np.ndarray):
        """Build from a reference line sampled every ``SAMPLE_M`` metres: (N,) arrays, N >= 2."""
        if len(x) < 2:
            raise PatchsimError("a road needs at least two centre-line samples")
        self.spec = spec
        self.x = np.asarray(x, dtype=float)
        self.y = np.asarray(y, dtype=float)
        self.z = np.asarray(z, dtype=float)
        self.heading = np.unwrap(np.asarray(heading, dtype=float))
        seg = np.hypot(np.diff(self.x), np.diff(self.y))
        self.s = np.concatenate([[0.0], np.cumsum(seg)])
        self.curvature = np.gradient(self.heading, self.s) if len(self.s) > 2 else np.zeros(len(self.s))

    def z_at(self, s_m: np.ndarray | float) -> np.ndarray:
        """Road height in patchsim's frame (metres above the start) at ``s_m`` (clamped to the road)."""
        return np.interp(np.clip(np.asarray(s_m, dtype=float), 0.0, self.length_m), self.s, self.z)


@dataclass
class LanePolyline:
    """Centre of one CARLA lane in patchsim's frame: (N,) arrays, every ``step_m`` metres.

    ``start_index`` is the sample at the waypoint the road was built around (the ego's start).
    """

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    heading: np.ndarray
    lane_width_m: float
    start_index: int


def _pick_branch(candidates: list[Any], yaw_deg: float) -> Any | None:
    """The waypoint among ``candidates`` whose yaw is closest to ``yaw_deg`` (the straightest branch)."""
    if not candidates:
        return None
    return min(candidates, key=lambda w: abs(wrap_deg(w.transform.rotation.yaw - yaw_deg)))


def lane_polyline(start_waypoint: Any, behind_m: float, ahead_m: float, step_m: float = 1.0,
                  z_ref: float = 0.0) -> LanePolyline:
    """Sample a CARLA lane's centre from ``behind_m`` behind ``start_waypoint`` to ``ahead_m`` ahead.

    Follows ``Waypoint.previous``/``next``; at a fork it takes the branch closest to straight on;
    where the lane ends it continues in a straight line along the last heading.
    """

    def walk(step: float, count: int, forward: bool) -> list[tuple[float, float, float, float]]:
        pts: list[tuple[float, float, float, float]] = []
        wp = start_waypoint
        tf = wp.transform
        last = (tf.location.x, tf.location.y, tf.location.z, tf.rotation.yaw)
        for _ in range(count):
            nxt = None
            if wp is not None:
                nxt = _pick_branch(list(wp.next(step) if forward else wp.previous(step)), last[3])
            if nxt is None:
                wp = None
                sign = 1.0 if forward else -1.0
                yaw = math.radians(last[3])
                last = (last[0] + sign * step * math.cos(yaw), last[1] + sign * step * math.sin(yaw), last[2], last[3])
            else:
                wp = nxt
                t = wp.transform
                last = (t.location.x, t.location.y, t.location.z, t.rotation.yaw)
            pts.append(last)
        return pts

    n_back = int(math.ceil(max(behind_m, 0.0) / step_m))
    n_ahead = int(math.ceil(max(ahead_m, 0.0) / step_m))
    tf = start_waypoint.transform
    here = (tf.location.x, tf.location.y, tf.location.z, tf.rotation.yaw)
    pts = walk(step_m, n_back, False)[::-1] + [here] + walk(step_m, n_ahead, True)
    arr = np.array(pts, dtype=float)
    yaw = np.unwrap(np.array([yaw_to_patchsim(v) for v in arr[:, 3]]))
    return LanePolyline(arr[:, 0], -arr[:, 1], arr[:, 2] - z_ref, yaw, float(start_waypoint.lane_width), n_back)


def road_from_lane(lane: LanePolyline, spec: RoadSpec, ego_lane: int, start_s_m: float) -> CarlaRoad:
    """A :class:`CarlaRoad` whose lane ``ego_lane`` follows ``lane``, with ``s = start_s_m`` at its start sample.

    The lane width is CARLA's at the start; the number of lanes is the scenario's.
    """
    spec = dataclasses.replace(spec, lane_width_m=lane.lane_width_m)
    d_c = spec.lane_centre_m(ego_lane)
    # the reference line lies d_c to the right of the lane centre when d_c > 0 (d is positive left)
    rx = lane.x + d_c * np.sin(lane.heading)
    ry = lane.y - d_c * np.cos(lane.heading)
    seg = np.hypot(np.diff(rx), np.diff(ry))
    s = np.concatenate([[0.0], np.cumsum(seg)])
    s = s - s[lane.start_index] + start_s_m
    keep = s >= -1e-9
    if keep.sum() < 2:
        raise PatchsimError("the CARLA road is too short behind the ego start")
    s, rx, ry, rz, rh = s[keep], rx[keep], ry[keep], lane.z[keep], lane.heading[keep]
    # resample from s = 0 every SAMPLE_M metres (extrapolating straight back when s[0] > 0)
    grid = np.arange(0.0, s[-1] + 1e-9, SAMPLE_M)
    if len(grid) < 2:
        grid = np.array([0.0, s[-1]])
    back = np.minimum(grid - s[0], 0.0)
    x = np.interp(grid, s, rx) + back * math.cos(rh[0])
    y = np.interp(grid, s, ry) + back * math.sin(rh[0])
    return CarlaRoad(spec, x, y, np.interp(grid, s, rz), np.interp(grid, s, rh))
