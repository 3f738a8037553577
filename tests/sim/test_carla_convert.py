"""Conversions between CARLA's frame and types and patchsim's.

Where a CARLA type is needed the real ``carla`` package is used (its value types work without a
server), so the frame conventions are checked against CARLA's own maths, not against a copy.
"""

from __future__ import annotations

import math
import typing

import carla
import numpy as np
import pytest

from patchsim.errors import PatchsimError, ShapeError
from patchsim.sim import carla_convert as cc
from patchsim.sim.base import Control
from patchsim.sim.scenario import CameraSpec, LightingSpec, RoadSpec
from tests.fakes import fake_carla

MIRROR = np.diag([1.0, -1.0, 1.0])


def vec(v) -> np.ndarray:
    return np.array([v.x, v.y, v.z])


def random_rotations(n: int = 20):
    rng = np.random.default_rng(0)
    return [(float(p), float(y), float(r)) for p, y, r in
            zip(rng.uniform(-80, 80, n), rng.uniform(-180, 180, n), rng.uniform(-60, 60, n))]


# --------------------------------------------------------------------------- positions and angles


def test_points_round_trip_and_mirror_y():
    rng = np.random.default_rng(1)
    for p in rng.uniform(-500, 500, (20, 3)):
        c = cc.xyz_to_carla(p, z_ref=12.5)
        assert c == pytest.approx((p[0], -p[1], p[2] + 12.5))
        np.testing.assert_allclose(cc.carla_to_xyz(*c, z_ref=12.5), p, atol=1e-9)
        loc = cc.xyz_to_location(carla, p, z_ref=12.5)
        np.testing.assert_allclose(cc.location_to_xyz(loc, z_ref=12.5), p, atol=1e-3)  # carla stores float32


def test_yaw_conversion_directions_and_round_trip():
    # CARLA yaw 90 points along CARLA +y, which is patchsim's -y (south): patchsim yaw -pi/2
    assert cc.yaw_to_patchsim(90.0) == pytest.approx(-math.pi / 2)
    assert cc.yaw_to_carla(math.pi / 2) == pytest.approx(-90.0)
    assert cc.wrap_deg(-180.0) == 180.0 and cc.wrap_deg(540.0) == 180.0 and cc.wrap_deg(-190.0) == 170.0
    for yaw in np.linspace(-3.1, 3.1, 13):
        assert cc.yaw_to_patchsim(cc.yaw_to_carla(yaw)) == pytest.approx(yaw)


@pytest.mark.parametrize("pitch,yaw,roll", random_rotations())
def test_unreal_axes_match_carla(pitch, yaw, roll):
    tf = carla.Transform(carla.Location(), carla.Rotation(pitch=pitch, yaw=yaw, roll=roll))
    f, r, u = cc.carla_axes(pitch, yaw, roll)
    np.testing.assert_allclose(f, vec(tf.get_forward_vector()), atol=1e-5)
    np.testing.assert_allclose(r, vec(tf.get_right_vector()), atol=1e-5)
    np.testing.assert_allclose(u, vec(tf.get_up_vector()), atol=1e-5)
    # the test double uses the same rotator maths
    ft = fake_carla.Transform(rotation=fake_carla.Rotation(pitch, yaw, roll))
    np.testing.assert_allclose(vec(ft.get_right_vector()), r, atol=1e-9)
    np.testing.assert_allclose(vec(ft.get_up_vector()), u, atol=1e-9)


@pytest.mark.parametrize("pitch,yaw,roll", random_rotations())
def test_camera_rotation_is_carlas_camera_mirrored(pitch, yaw, roll):
    """A CARLA camera looks along its +x, image right along +y, image down along -z."""
    tf = carla.Transform(carla.Location(), carla.Rotation(pitch=pitch, yaw=yaw, roll=roll))
    rot = cc.camera_rotation(tf.rotation)
    np.testing.assert_allclose(rot[:, 0], MIRROR @ vec(tf.get_right_vector()), atol=1e-5)
    np.testing.assert_allclose(rot[:, 1], MIRROR @ -vec(tf.get_up_vector()), atol=1e-5)
    np.testing.assert_allclose(rot[:, 2], MIRROR @ vec(tf.get_forward_vector()), atol=1e-5)


@pytest.mark.parametrize("pitch,yaw,roll", random_rotations(6))
def test_rotation_and_transform_round_trip(pitch, yaw, roll):
    rot = carla.Rotation(pitch=pitch, yaw=yaw, roll=roll)
    y, p, r = cc.rotation_to_patchsim(rot)
    back = cc.rotation_from_patchsim(carla, y, p, r)
    assert (back.pitch, cc.wrap_deg(back.yaw - yaw), back.roll) == pytest.approx((pitch, 0.0, roll), abs=1e-3)
    pos = np.array([3.0, -4.0, 1.5])
    tf = cc.transform_from_pose(carla, pos, y, p, r, z_ref=2.0)
    got_pos, gy, gp, gr = cc.transform_to_pose(tf, z_ref=2.0)
    np.testing.assert_allclose(got_pos, pos, atol=1e-4)
    assert (cc.wrap_deg(math.degrees(gy - y)), gp, gr) == pytest.approx((0.0, p, r), abs=1e-5)
    # a point 1 m ahead of the CARLA transform is 1 m along patchsim's forward direction
    ahead = cc.location_to_xyz(tf.transform(carla.Location(x=1.0)), z_ref=2.0)
    forward = np.array([math.cos(p) * math.cos(y), math.cos(p) * math.sin(y), math.sin(p)])
    np.testing.assert_allclose(ahead - pos, forward, atol=1e-4)


def test_vectors_mirror_without_height_offset():
    np.testing.assert_allclose(cc.vector_to_xyz(carla.Vector3D(1.0, 2.0, 3.0)), [1.0, -2.0, 3.0])


# --------------------------------------------------------------------------- control and images


def test_steer_sign_is_flipped_for_carla():
    assert cc.steer_to_carla(0.4) == -0.4
    vc = cc.control_to_carla(carla, Control(steer=0.3, throttle=0.5, brake=0.0))
    assert isinstance(vc, carla.VehicleControl)
    assert (vc.steer, vc.throttle, vc.brake) == pytest.approx((-0.3, 0.5, 0.0))
    vc = cc.control_to_carla(carla, Control(steer=-2.0, throttle=3.0, brake=-1.0))  # clipped first
    assert (vc.steer, vc.throttle, vc.brake) == pytest.approx((1.0, 1.0, 0.0))


def test_bgra_to_rgb_and_size_check():
    bgra = np.zeros((2, 3, 4), np.uint8)
    bgra[0, 2] = (10, 20, 30, 255)  # row 0, column 2: B, G, R, A
    rgb = cc.bgra_to_rgb(bytearray(bgra.tobytes()), 3, 2)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8
    assert rgb[0, 2].tolist() == [30, 20, 10]
    assert rgb[1, 0].tolist() == [0, 0, 0]
    with pytest.raises(ShapeError):
        cc.bgra_to_rgb(bytes(10), 3, 2)


# --------------------------------------------------------------------------- weather


def test_weather_preset_values_are_carlas():
    for name, values in cc.CARLA_PRESET_VALUES.items():
        preset = getattr(carla.WeatherParameters, name)
        assert set(values) == set(cc.WEATHER_FIELDS)
        for field in cc.WEATHER_FIELDS:
            assert values[field] == pytest.approx(getattr(preset, field), abs=1e-6), (name, field)
    assert set(cc.CARLA_WEATHER_PRESET.values()) <= set(cc.CARLA_PRESET_VALUES)
    assert set(cc.CARLA_WEATHER_PRESET) == set(typing.get_args(typing.get_type_hints(LightingSpec)["preset"]))


def test_weather_for_lighting_starts_from_the_preset_and_leaves_it_alone():
    for preset in cc.CARLA_WEATHER_PRESET:
        spec = LightingSpec(preset=preset)
        before = {f: getattr(getattr(carla.WeatherParameters, cc.weather_preset(spec)), f) for f in cc.WEATHER_FIELDS}
        w = cc.weather_for_lighting(carla, spec)
        assert isinstance(w, carla.WeatherParameters)
        for field, value in cc.weather_values(spec).items():
            assert getattr(w, field) == pytest.approx(value, abs=1e-4), (preset, field)
        # never a WeatherParameters of zeros: the preset's scattering and haze are kept
        assert w.scattering_intensity == pytest.approx(1.0) and w.mie_scattering_scale > 0 and w.fog_distance > 0
        after = {f: getattr(getattr(carla.WeatherParameters, cc.weather_preset(spec)), f) for f in cc.WEATHER_FIELDS}
        assert after == before


def test_weather_adjustments_follow_the_scenario():
    noon = cc.weather_values(LightingSpec(preset="noon"))
    overcast = cc.weather_values(LightingSpec(preset="overcast"))
    morning = cc.weather_values(LightingSpec(preset="morning"))
    evening = cc.weather_values(LightingSpec(preset="evening"))
    dusk = cc.weather_values(LightingSpec(preset="dusk"))
    assert cc.weather_preset(LightingSpec(preset="overcast")) == "CloudyNoon"
    assert overcast["cloudiness"] > noon["cloudiness"]
    assert dusk["sun_altitude_angle"] < evening["sun_altitude_angle"] < noon["sun_altitude_angle"]
    assert morning["sun_azimuth_angle"] != evening["sun_azimuth_angle"]  # same CARLA preset, patchsim's sun
    assert noon["fog_density"] == 2.0 and noon["fog_distance"] == 0.75  # the preset's haze without scenario fog
    custom = cc.weather_values(LightingSpec(preset="noon", sun_azimuth_deg=180.0, sun_elevation_deg=33.0))
    assert custom["sun_altitude_angle"] == 33.0
    # compass bearing 90 (patchsim +x, east) is CARLA +x, yaw 0; bearing 180 (patchsim -y) is CARLA +y, yaw 90
    assert cc.compass_to_carla_azimuth(90.0) == 0.0
    assert custom["sun_azimuth_angle"] == 90.0
    fog = [cc.fog_density_for_visibility(v) for v in (20.0, 100.0, 1000.0)]
    assert fog[0] > fog[1] > fog[2] > 0 and fog[0] <= 100.0
    foggy = cc.weather_adjustments(LightingSpec(preset="evening", fog_visibility_m=150.0))
    assert foggy["fog_density"] == pytest.approx(cc.fog_density_for_visibility(150.0)) and foggy["fog_distance"] == 0.0
    assert "fog_density" not in cc.weather_adjustments(LightingSpec(preset="evening"))


# --------------------------------------------------------------------------- camera


def test_camera_attributes_fix_exposure_and_turn_off_motion_blur():
    attrs = cc.camera_attributes(CameraSpec(width_px=320, height_px=200, hfov_deg=62.5), LightingSpec(exposure=0.5))
    assert attrs == {"image_size_x": "320", "image_size_y": "200", "fov": "62.5", "exposure_mode": "manual",
                     "exposure_compensation": "-1.0000", "motion_blur_intensity": "0.0"}
    assert cc.exposure_compensation_ev(2.0) == pytest.approx(1.0)


def test_camera_mount_is_mirrored_and_measured_from_the_rear_axle():
    cam = CameraSpec(forward_m=1.8, lateral_m=0.3, height_m=1.4, pitch_deg=-2.0, yaw_deg=5.0)
    (x, y, z), (pitch, yaw, roll) = cc.camera_mount(cam, rear_axle_offset_m=1.35)
    assert (x, y, z) == pytest.approx((0.45, -0.3, 1.4))  # left in patchsim is -y in CARLA
    assert (pitch, yaw, roll) == pytest.approx((-2.0, -5.0, 0.0))  # a left yaw is a negative CARLA yaw


# --------------------------------------------------------------------------- texture check


def test_quad_mask_selects_pixel_centres_inside_the_quad():
    square = np.array([[2.0, 1.0], [6.0, 1.0], [6.0, 5.0], [2.0, 5.0]])
    mask = cc.quad_mask(square, 8, 6)
    assert mask.shape == (6, 8) and mask.sum() == 16 and mask[1:5, 2:6].all()
    np.testing.assert_array_equal(cc.quad_mask(square[::-1], 8, 6), mask)  # either direction around
    assert cc.quad_mask(square, 8, 6, shrink=0.5).sum() == 4  # the 2 x 2 px in the middle
    assert not cc.quad_mask(square + 100, 8, 6).any()  # outside the image
    assert not cc.quad_mask(np.full((4, 2), np.nan), 8, 6).any()


def test_mean_change_and_contrast_texture():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[1:3, 1:3] = 30
    mask = np.zeros((4, 4), bool)
    mask[1:3, 1:3] = True
    assert cc.mean_change(a, b, mask) == 30.0 and cc.mean_change(a, b, ~mask) == 0.0
    assert cc.mean_change(a, b, np.zeros_like(mask)) == 0.0
    red = np.zeros((5, 5, 4), np.uint8)
    red[..., 0] = 220
    test = cc.contrast_texture(red, size_px=3)
    assert test.shape == (3, 3, 4) and test[0, 0].tolist() == [0, 255, 255, 255]


# --------------------------------------------------------------------------- textures


def asymmetric_image(h: int, w: int) -> np.ndarray:
    img = np.zeros((h, w, 4), np.uint8)
    img[..., 3] = 255
    img[..., 0] = (np.arange(w) * 30)[None, :]  # red grows to the right
    img[..., 1] = (np.arange(h) * 50)[:, None]  # green grows downward
    return img


def test_texture_rows_follow_carlas_example_convention():
    img = asymmetric_image(3, 4)
    tex = cc.texture_from_image(carla, img)
    assert (tex.width, tex.height) == (4, 3)
    for y in range(3):
        for x in range(4):
            c = tex.get(x, 3 - 1 - y)  # CARLA's example writes image row y to texel row height-1-y
            assert (c.r, c.g, c.b, c.a) == tuple(int(v) for v in img[y, x])


def test_orient_texture_options():
    img = asymmetric_image(3, 4)
    np.testing.assert_array_equal(cc.orient_texture(img, flip_v=False), img)
    np.testing.assert_array_equal(cc.orient_texture(img, flip_u=True, flip_v=False), img[:, ::-1])
    np.testing.assert_array_equal(cc.orient_texture(img, transpose=True, flip_v=False), img.transpose(1, 0, 2))
    with pytest.raises(ShapeError):
        cc.texture_from_image(carla, img.astype(np.float32))


def test_compose_canvas_centres_content_over_fill():
    content = np.ones((4, 4, 4), np.float32)  # white, opaque
    same = cc.compose_canvas(content, (1.0, 1.0), (1.0, 1.0), 4, (0.0, 0.0, 0.0))
    assert same.shape == (4, 4, 4) and (same[..., :3] == 255).all() and (same[..., 3] == 255).all()
    out = cc.compose_canvas(content, (0.5, 1.0), (1.0, 1.0), 8, (0.0, 0.0, 0.0))
    assert (out[:, 2:6, :3] == 255).all() and (out[:, :2, :3] == 0).all() and (out[:, 6:, :3] == 0).all()
    clear = content.copy()
    clear[..., 3] = 0
    assert (cc.compose_canvas(clear, (1.0, 1.0), (1.0, 1.0), 4, (0.5, 0.5, 0.5))[..., :3] == 128).all()
    assert cc.canvas_shape((2.0, 1.0), 64) == (32, 64)
    with pytest.raises(PatchsimError, match="does not fit"):
        cc.compose_canvas(content, (1.2, 1.0), (1.0, 1.0), 4, (0.0, 0.0, 0.0))


# --------------------------------------------------------------------------- road


def test_road_from_waypoints_follows_the_carla_lane():
    road_spec = fake_carla.FakeRoad(heading_deg=30.0, origin=(10.0, -20.0, 2.0))
    fmap = fake_carla.Map("Town", road_spec)
    start = fmap.get_waypoint(fake_carla.Location(*road_spec.lane_point(50.0, 1)))
    z_ref = start.transform.location.z
    lane = cc.lane_polyline(start, behind_m=20.0, ahead_m=80.0, z_ref=z_ref)
    assert lane.lane_width_m == 3.5 and lane.start_index == 20
    road = cc.road_from_lane(lane, RoadSpec(lanes=2), ego_lane=1, start_s_m=20.0)
    assert road.length_m == pytest.approx(100.0, abs=0.3)
    assert road.spec.lane_width_m == 3.5
    for s in (0.0, 20.0, 57.0, 99.0):
        x, y = road.point(s, road.lane_centre_m(1))
        expect = cc.carla_to_xyz(*road_spec.lane_point(50.0 - 20.0 + s, 1), z_ref=z_ref)
        np.testing.assert_allclose([x, y], expect[:2], atol=0.05)
        # lane 0 of the scenario is CARLA's lane to the left of the ego lane
        x0, y0 = road.point(s, road.lane_centre_m(0))
        np.testing.assert_allclose([x0, y0], cc.carla_to_xyz(*road_spec.lane_point(30.0 + s, 0))[:2], atol=0.05)
    assert float(road.pose(10.0)[2]) == pytest.approx(cc.yaw_to_patchsim(30.0))
    assert road.project(*road.point(42.0, 0.7)) == pytest.approx((42.0, 0.7), abs=1e-6)
    assert float(road.z_at(30.0)) == pytest.approx(0.0) and road.curvature_at(30.0) == pytest.approx(0.0)


def test_road_continues_straight_past_the_end_of_the_lane():
    short = fake_carla.FakeRoad(heading_deg=0.0, origin=(0.0, 0.0, 0.0), start_m=0.0, end_m=30.0)
    start = fake_carla.Waypoint(short, 10.0, 0)
    lane = cc.lane_polyline(start, behind_m=25.0, ahead_m=40.0)
    assert len(lane.x) == 66
    np.testing.assert_allclose(np.diff(lane.x), 1.0, atol=1e-9)  # extrapolated 15 m back, 20 m ahead
    assert lane.x[0] == pytest.approx(short.lane_point(-15.0, 0)[0])
    with pytest.raises(PatchsimError):
        cc.CarlaRoad(RoadSpec(), np.zeros(1), np.zeros(1), np.zeros(1), np.zeros(1))
