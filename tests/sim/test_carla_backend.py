"""The CARLA backend, run against ``tests/fakes/fake_carla.py`` (a test double of the carla client API).

No CARLA server is involved: these tests check what the backend asks of the client API (settings,
spawns, textures, cleanup) and how it turns the answers into Frames. ``test_real_carla_has_*``
ties the double to the installed ``carla`` package.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from patchsim.errors import ConfigError, PatchsimError, ShapeError
from patchsim.sim import carla_convert as cc
from patchsim.sim.base import Control, Frame
from patchsim.sim.carla_backend import CARLA_API, CarlaSimulator, PropSpec
from patchsim.sim.expert import ExpertDriver
from patchsim.sim.scenario import (
    CameraSpec,
    EgoSpec,
    PatchSlotSpec,
    RoadSpec,
    Scenario,
    SegmentSpec,
    SignSpec,
    VehicleSpec,
)
from tests.fakes import fake_carla

TEXTURE_PX = 16


def scenario() -> Scenario:
    return Scenario(
        name="carla_test",
        seed=3,
        dt_s=0.05,
        road=RoadSpec(segments=[SegmentSpec(length_m=120.0)], lanes=2, stop_line_s_m=39.0),
        signs=[SignSpec(id="stop_1", kind="stop_sign", s_m=40.0, offset_m=2.5),
               SignSpec(id="limit_1", kind="speed_limit", s_m=60.0, offset_m=2.0)],
        vehicles=[VehicleSpec(id="parked", kind="car", s_m=30.0, lateral_m=-5.2),
                  VehicleSpec(id="mover", kind="van", s_m=35.0, lateral_m=1.75, speed_mps=5.0)],
        camera=CameraSpec(width_px=96, height_px=64, hfov_deg=50.0),
        ego=EgoSpec(start_s_m=10.0, speed_mps=5.0),
        patch_slots=[PatchSlotSpec(name="stop_face", kind="sign_face", sign="stop_1"),
                     PatchSlotSpec(name="road_1", kind="road", s_m=20.0, width_m=2.0, length_m=2.0)],
    )


def make_sim(sim_options: dict | None = None, **server_options) -> tuple[CarlaSimulator, fake_carla.FakeCarla]:
    cm = fake_carla.module(**server_options)
    return CarlaSimulator(client_module=cm, timeout_s=0.2, texture_px=TEXTURE_PX, **(sim_options or {})), cm


def close_up_scenario() -> Scenario:
    """Both slots large enough in view at reset for the texture check: the ego starts 12 m before the sign."""
    sc = scenario()
    sc.ego.start_s_m = 28.0
    sc.patch_slots[1].s_m = 36.0
    return sc


def non_default_settings() -> fake_carla.WorldSettings:
    return fake_carla.WorldSettings(synchronous_mode=True, fixed_delta_seconds=0.1, substepping=False,
                                    max_substeps=4)


# --------------------------------------------------------------------------- settings and cleanup


def test_reset_applies_synchronous_mode_and_seeds_traffic_manager():
    sim, cm = make_sim()
    world = cm.server.world
    with sim:
        frame = sim.reset(scenario(), seed=11)
        assert isinstance(frame, Frame)
        assert world.settings.synchronous_mode is True
        assert world.settings.fixed_delta_seconds == pytest.approx(0.05)
        tm = cm.server.traffic_managers[8000]
        assert tm.synchronous is True and tm.seed == 11 == sim.scenario.seed
        assert len(world.weathers) == 1
    assert world.settings == fake_carla.WorldSettings()  # the original, asynchronous settings
    assert cm.server.traffic_managers[8000].synchronous is False


def test_close_destroys_every_spawned_actor_and_is_safe_twice():
    sim, cm = make_sim()
    world = cm.server.world
    sim.reset(scenario())
    kinds = sorted(a.type_id for a in world.spawned)
    assert kinds.count("static.prop.mesh") == 3 and "sensor.camera.rgb" in kinds  # 2 slots, 1 board
    assert "vehicle.tesla.model3" in kinds and "vehicle.mercedes.sprinter" in kinds
    sim.reset(scenario())  # a second reset replaces the first episode's actors
    assert len(world.alive()) == len(kinds)
    sim.close()
    sim.close()
    assert world.alive() == []
    destroyed = [c.actor_id for batch in cm.server.batches for c in batch]
    assert sorted(destroyed) == sorted(a.id for a in world.spawned)
    first_batch = cm.server.batches[0]
    assert world.spawned[first_batch[0].actor_id - 1].type_id == "sensor.camera.rgb"  # sensors go first
    assert world.settings.synchronous_mode is False
    with pytest.raises(PatchsimError, match="closed"):
        sim.reset(scenario())


def test_cleanup_runs_when_the_run_raises():
    sim, cm = make_sim()
    world = cm.server.world
    with pytest.raises(ZeroDivisionError):
        with sim:
            sim.reset(scenario())
            sim.step(Control(throttle=0.2))
            raise ZeroDivisionError("a failure in the middle of a run")
    assert world.alive() == []
    assert world.settings == fake_carla.WorldSettings()
    assert cm.server.traffic_managers[8000].synchronous is False


def test_cleanup_when_a_tick_fails_mid_run():
    sim, cm = make_sim()
    with pytest.raises(PatchsimError, match="tick"):
        with sim:
            sim.reset(scenario())
            cm.server.fail_tick = True
            sim.step(Control())
    assert cm.server.world.alive() == []
    assert cm.server.world.settings.synchronous_mode is False


def test_failed_reset_releases_the_server():
    sim, cm = make_sim(fail_spawn_of="vehicle.mercedes.sprinter")
    with pytest.raises(PatchsimError, match="spawning the vehicle 'mover' .* failed: RuntimeError: Spawn failed"):
        sim.reset(scenario())
    world = cm.server.world
    assert world.spawned and world.alive() == []
    assert world.settings.synchronous_mode is False
    sim.close()


def test_backend_identity_and_observe_labels():
    sim, cm = make_sim()
    assert CarlaSimulator.backend == sim.backend == "carla" and sim.observes_without_time is False
    with sim:
        sim.reset(scenario())
        frame_id = cm.server.world.frame
        with pytest.raises(PatchsimError, match="no label render.*--sim embedded"):
            sim.observe(labels=True)
        assert cm.server.world.frame == frame_id  # refused before ticking
        for labels in (None, False):
            frame = sim.observe(labels=labels)
            assert frame.labels is None
        assert cm.server.world.frame == frame_id + 2  # each observe is one tick
        with pytest.raises(PatchsimError, match="no label render"):
            sim.label_id("slot:stop_face")


def test_original_non_default_settings_come_back_after_close():
    original = non_default_settings()
    sim, cm = make_sim(initial_settings=original, tm_synchronous=True)
    world = cm.server.world
    with sim:
        sim.reset(scenario(), seed=2)
        assert world.settings.fixed_delta_seconds == pytest.approx(0.05)
        assert world.settings.substepping is False  # fields the backend does not set are left as they were
    assert world.settings == original
    assert world.applied_settings[-1] == original
    tm = cm.server.traffic_managers[8000]
    assert tm.synchronous is True and tm.calls[-1] == ("set_synchronous_mode", True)


@pytest.mark.parametrize("fail_spawn_of", ["sensor.camera.rgb", "static.prop.mesh"])
def test_original_non_default_settings_come_back_after_a_failed_reset(fail_spawn_of):
    original = non_default_settings()
    sim, cm = make_sim(initial_settings=original, tm_synchronous=True, fail_spawn_of=fail_spawn_of)
    with pytest.raises(PatchsimError, match="spawning the"):
        sim.reset(scenario())
    world = cm.server.world
    assert world.settings == original and world.alive() == []
    assert cm.server.traffic_managers[8000].synchronous is True
    sim.close()
    assert world.settings == original


def test_original_settings_survive_a_town_load():
    original = non_default_settings()
    cm = fake_carla.module(initial_settings=original)
    with CarlaSimulator(town="Town03", client_module=cm, verify_textures=False) as sim:
        sim.reset(scenario())
    assert cm.server.load_calls[-1][2] is False  # reset_settings=False keeps the server's settings
    assert cm.server.world.map.name == "Carla/Maps/Town03" and cm.server.world.settings == original


def test_town_load_uses_the_load_timeout_then_the_call_timeout():
    cm = fake_carla.module()
    sim = CarlaSimulator(town="Town03", client_module=cm, timeout_s=2.0, load_timeout_s=90.0)
    assert cm.server.load_calls == [("Town03", 90.0, False)]
    assert sim.client.timeout == 2.0
    sim.close()
    cm = fake_carla.module()
    with pytest.raises(PatchsimError, match="loading town 'Town99' .*time-out 90 s.* failed: RuntimeError: Map 'Town9"):
        CarlaSimulator(town="Town99", client_module=cm, timeout_s=2.0, load_timeout_s=90.0)
    assert cm.server.clients[-1].timeout == 2.0


@pytest.mark.parametrize("server_options,step", [
    ({"fail_spawn_of": "vehicle.tesla.model3"}, "spawning the ego"),
    ({"fail_spawn_of": "sensor.camera.rgb"}, "spawning the camera"),
    ({"fail_spawn_of": "static.prop.mesh"}, "spawning the prop 1 (sign 'limit_1')"),
    ({"fail_calls": ("apply_settings",)}, "applying synchronous settings"),
    ({"fail_calls": ("set_weather",)}, "setting the weather (preset ClearNoon)"),
    ({"fail_tick": True}, "ticking the world"),
    ({"deliver_images": False}, "waiting for a camera image"),
])
def test_errors_name_the_step_that_failed(server_options, step):
    sim, cm = make_sim(**server_options)
    with pytest.raises(PatchsimError) as info:
        sim.reset(scenario())
    assert str(info.value).startswith(f"CARLA: {step}")
    assert cm.server.world.alive() == []


def test_a_camera_that_stopped_listening_is_not_stopped_again():
    """``Sensor.is_listening`` is a method in carla 0.9.16; a truthy bound method would stop it twice."""
    sim, _ = make_sim()
    sim.reset(scenario())
    camera = sim._episode.camera
    camera.stop()
    sim.close()
    assert camera.stop_calls == 1


def test_missing_server_gives_a_helpful_error():
    with pytest.raises(PatchsimError) as info:
        CarlaSimulator(host="carla-host", port=2345, client_module=fake_carla.module(running=False))
    msg = str(info.value)
    assert "connecting to carla-host:2345 failed" in msg and "CarlaUE4.sh -RenderOffScreen" in msg
    assert "must be running" in msg and "time-out of" in msg  # the client's own text is kept


def test_missing_camera_image_times_out_with_patchsim_error():
    sim, cm = make_sim(deliver_images=False)
    with pytest.raises(PatchsimError, match="waiting for a camera image failed: no camera image for frame"):
        sim.reset(scenario())
    assert cm.server.world.alive() == []


# --------------------------------------------------------------------------- control


def test_steer_sign_patchsim_left_is_carla_negative():
    sim, cm = make_sim()
    with sim:
        f0 = sim.reset(scenario())
        ego = next(a for a in cm.server.world.spawned if a.type_id == "vehicle.tesla.model3")
        frame = f0
        for _ in range(10):
            frame = sim.step(Control(steer=0.5, throttle=0.3))
        assert ego.controls[-1].steer == pytest.approx(-0.5)
        assert ego.controls[-1].throttle == pytest.approx(0.3)
        assert frame.ego.steer == pytest.approx(0.5)
        assert frame.ego.yaw_rad > f0.ego.yaw_rad  # patchsim yaw is counter-clockwise: a left turn
        assert frame.lane.lateral_offset_m > 0.05 and frame.lane.heading_error_rad > 0
        assert frame.index == 10 and frame.time_s == pytest.approx(0.5)


def test_expert_driver_keeps_the_lane_on_the_carla_road():
    sim, _ = make_sim()
    with sim:
        sc = scenario()
        frame = sim.reset(sc)
        e = sc.ego
        driver = ExpertDriver(sim.road, sim.road.lane_centre_m(sc.ego_lane), e.wheelbase_m,
                              math.radians(e.max_steer_deg), target_speed_mps=5.0)
        sim.set_ego_pose(12.0, lateral_offset_m=0.6, speed_mps=5.0)
        for _ in range(40):
            frame = sim.step(driver.control(frame))
        assert abs(frame.lane.lateral_offset_m) < 0.3
        assert frame.ego.s_m > 20.0


# --------------------------------------------------------------------------- patches


def corner_colours(h: int, w: int) -> np.ndarray:
    """An image with no symmetry: red, green, blue, white quadrants, and a yellow top-left pixel."""
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2, : w // 2] = (255, 0, 0)
    img[: h // 2, w // 2:] = (0, 255, 0)
    img[h // 2:, : w // 2] = (0, 0, 255)
    img[h // 2:, w // 2:] = (255, 255, 255)
    img[0, 0] = (255, 255, 0)
    return img


def test_set_patch_sends_the_image_to_the_slot_prop():
    sim, cm = make_sim()
    world = cm.server.world
    with sim:
        sim.reset(scenario())
        prop = next(a for a in world.alive() if a.type_id == "static.prop.mesh"
                    and a.get_transform().rotation.pitch == 0.0)  # the road slot lies flat
        img = corner_colours(TEXTURE_PX, TEXTURE_PX)  # a 2 x 2 m slot on a plane scaled to 2 m: no margin
        n = len(world.textures)
        sim.set_patch("road_1", img)
        name, param, tex = world.textures[n]
        assert name == world.prop_name(prop) and param == fake_carla.MaterialParameter.Diffuse
        assert prop.attributes["scale"] == "2.00000"
        assert (tex.width, tex.height) == (TEXTURE_PX, TEXTURE_PX)
        for y in range(TEXTURE_PX):
            for x in range(TEXTURE_PX):
                c = tex.get(x, TEXTURE_PX - 1 - y)  # default PropSpec: image rows run down the texels
                assert (c.r, c.g, c.b, c.a) == (*img[y, x], 255)
        sim.set_patch("road_1", None)
        assert (world.textures[-1][2].pixels[..., :3] == 82).all()  # plain road grey


def test_set_patch_texture_orientation_options():
    cm = fake_carla.module()
    prop = PropSpec(texture_flip_v=False, texture_flip_u=True)
    with CarlaSimulator(client_module=cm, texture_px=TEXTURE_PX, prop=prop) as sim:
        sim.reset(scenario())
        img = corner_colours(TEXTURE_PX, TEXTURE_PX)
        sim.set_patch("road_1", img)
        np.testing.assert_array_equal(cm.server.world.textures[-1][2].pixels[..., :3], img[:, ::-1])


def test_sign_face_patch_is_laid_over_the_clean_face():
    sim, cm = make_sim()
    world = cm.server.world
    with sim:
        sim.reset(scenario())
        name = sim._episode.slots["stop_face"].name
        sent = [t for n, _, t in world.textures if n == name]
        assert len(sent) == 1  # after reset the slot's prop shows the clean face
        clean = sent[0].pixels.copy()
        patch = np.zeros((8, 8, 4), np.float32)
        patch[..., 1] = 1.0
        patch[:4, :, 3] = 1.0  # opaque green top half, transparent bottom half
        sim.set_patch("stop_face", patch)
        painted = world.textures[-1][2].pixels
        rows_top, rows_bottom = painted[TEXTURE_PX // 2 + 2:], painted[: TEXTURE_PX // 2 - 2]  # texel rows flip
        centre = slice(TEXTURE_PX // 4, 3 * TEXTURE_PX // 4)
        assert (rows_top[:, centre, 1] > 200).all() and (rows_top[:, centre, 0] < 60).all()
        np.testing.assert_array_equal(rows_bottom, clean[: TEXTURE_PX // 2 - 2])
        sim.set_patch("stop_face", None)
        np.testing.assert_array_equal(world.textures[-1][2].pixels, clean)


def test_set_patch_rejects_a_wrong_image_and_slot():
    sim, _ = make_sim()
    with sim:
        sim.reset(scenario())
        with pytest.raises(ShapeError, match="stop_face"):
            sim.set_patch("stop_face", np.zeros((10, 20, 3), np.uint8))  # aspect 2, the face is square
        with pytest.raises(ShapeError, match="road_1"):
            sim.set_patch("road_1", np.zeros((8, 8), np.uint8))
        with pytest.raises(ConfigError, match="no_such_slot"):
            sim.set_patch("no_such_slot", np.zeros((8, 8, 3), np.uint8))


# --------------------------------------------------------------------------- weather and camera


def test_weather_is_the_preset_with_the_scenarios_sun_and_fog():
    sim, cm = make_sim()
    sc = scenario()
    sc.lighting.preset = "overcast"
    sc.lighting.fog_visibility_m = 200.0
    sc.lighting.sun_elevation_deg = 33.0
    with sim:
        sim.reset(sc)
    weather = cm.server.world.weathers[-1]
    assert weather is not fake_carla.WeatherParameters.CloudyNoon
    assert weather.values() == pytest.approx(cc.weather_values(sc.lighting))
    assert weather.cloudiness == 60.0 and weather.scattering_intensity == 1.0 and weather.mie_scattering_scale > 0
    assert weather.sun_altitude_angle == 33.0 and weather.fog_distance == 0.0
    assert weather.fog_density == pytest.approx(cc.fog_density_for_visibility(200.0))
    assert fake_carla.WeatherParameters.CloudyNoon.sun_altitude_angle == 45.0  # the shared preset is untouched


def test_camera_has_fixed_exposure_and_no_motion_blur():
    sim, _ = make_sim()
    sc = scenario()
    sc.lighting.exposure = 2.0
    with sim:
        sim.reset(sc)
        cam = sim._episode.camera
    assert cam.attributes["exposure_mode"] == "manual"
    assert float(cam.attributes["exposure_compensation"]) == pytest.approx(1.0)
    assert float(cam.attributes["motion_blur_intensity"]) == 0.0
    assert (cam.attributes["image_size_x"], cam.attributes["image_size_y"], cam.attributes["fov"]) == ("96", "64", "50")
    assert sim.camera_settings == cc.camera_attributes(sc.camera, sc.lighting)


def test_camera_attributes_the_blueprint_lacks_are_skipped_and_extras_applied(monkeypatch):
    bare = {k: v for k, v in fake_carla._BLUEPRINTS["sensor.camera.rgb"].items()
            if k not in ("exposure_mode", "motion_blur_intensity")}
    monkeypatch.setitem(fake_carla._BLUEPRINTS, "sensor.camera.rgb", bare)
    sim, _ = make_sim({"camera_attributes": {"shutter_speed": "500", "no_such_attribute": "1"}})
    with sim:
        sim.reset(scenario())
        cam = sim._episode.camera
    assert "exposure_mode" not in cam.attributes and "exposure_mode" not in sim.camera_settings
    assert cam.attributes["shutter_speed"] == "500" and sim.camera_settings["shutter_speed"] == "500"
    assert "no_such_attribute" not in sim.camera_settings


# --------------------------------------------------------------------------- texture check


def test_texture_check_passes_for_slots_in_view_and_restores_their_textures():
    sim, cm = make_sim()
    world = cm.server.world
    with sim:
        frame = sim.reset(close_up_scenario())
        assert set(sim.texture_checks) == {"stop_face", "road_1"}
        assert all(v.startswith("passed") for v in sim.texture_checks.values()), sim.texture_checks
        for name, prop in sim._episode.slots.items():
            sent = [t for n, _, t in world.textures if n == prop.name]
            assert len(sent) == 3  # the slot's content, the test texture, the content again
            assert (sent[1].pixels == sent[1].pixels[0, 0]).all()  # a plain test texture
            assert np.abs(sent[1].pixels[0, 0, :3].astype(int) - sent[0].pixels[..., :3].mean((0, 1))).min() > 60
            np.testing.assert_array_equal(sent[2].pixels, sent[0].pixels)
            # the first frame shows the slot's own content again (the double draws a prop in its texture's mean)
            mask = cc.quad_mask(frame.slots[name].corners_px, 96, 64, 0.6)
            want = np.round(prop.last_texture[..., :3].reshape(-1, 3).mean(0))
            np.testing.assert_allclose(frame.image[mask].mean(0), want, atol=1)
        assert sim._episode.ego.physics is True


def test_texture_check_does_not_move_the_start():
    frames = []
    for verify in (True, False):
        sim, _ = make_sim({"verify_textures": verify})
        with sim:
            frames.append(sim.reset(close_up_scenario()))
    checked, unchecked = frames
    assert checked.ego.s_m == pytest.approx(unchecked.ego.s_m, abs=1e-6)
    assert checked.ego.speed_mps == pytest.approx(unchecked.ego.speed_mps, abs=1e-6)
    assert checked.index == unchecked.index == 0 and checked.time_s == unchecked.time_s == 0.0


def test_texture_check_fails_for_a_prop_whose_material_takes_no_textures():
    sim, cm = make_sim(props_accept_textures=False)
    with pytest.raises(PatchsimError) as info:
        sim.reset(close_up_scenario())
    msg = str(info.value)
    world = cm.server.world
    slot_prop = [a for a in world.spawned if a.type_id == "static.prop.mesh"][1]  # after the board of limit_1
    assert f"prop 2 (slot 'stop_face') (Unreal object {world.prop_name(slot_prop)!r})" in msg
    assert "no runtime texture parameters" in msg and "verify_textures=False" in msg
    assert world.alive() == [] and world.settings.synchronous_mode is False
    # switched off, the same server resets without complaint
    sim2, _ = make_sim({"verify_textures": False}, props_accept_textures=False)
    with sim2:
        sim2.reset(close_up_scenario())
        assert sim2.texture_checks == {}


def test_texture_check_skips_slots_out_of_view_or_too_small():
    sim, _ = make_sim()
    sc = scenario()
    sc.patch_slots.append(PatchSlotSpec(name="behind", kind="road", s_m=2.0, width_m=2.0, length_m=2.0))
    with sim:
        sim.reset(sc)
    checks = sim.texture_checks
    assert checks["behind"] == "not checked: out of view at reset"
    assert checks["stop_face"].startswith("not checked: 1 px to compare")  # 30 m away on a 96 px image
    assert checks["road_1"].startswith("passed")


def test_test_double_shows_a_texture_only_where_the_material_takes_it():
    for accepts in (True, False):
        cm = fake_carla.module(props_accept_textures=accepts)
        world = cm.server.world
        world.apply_settings(fake_carla.WorldSettings(synchronous_mode=True, fixed_delta_seconds=0.05))
        bp = world.get_blueprint_library().find("static.prop.mesh")
        bp.set_attribute("scale", "2.0")
        facing_back = fake_carla.Transform(fake_carla.Location(10, 0, 0), fake_carla.Rotation(90, 180, 0))
        prop = world.spawn_actor(bp, facing_back)
        cam_bp = world.get_blueprint_library().find("sensor.camera.rgb")
        for k, v in (("image_size_x", "32"), ("image_size_y", "32")):
            cam_bp.set_attribute(k, v)
        cam = world.spawn_actor(cam_bp, fake_carla.Transform())
        images = []
        cam.listen(images.append)
        red = fake_carla.TextureColor(2, 2)
        for x in range(2):
            for y in range(2):
                red.set(x, y, fake_carla.Color(255, 0, 0, 255))
        # no error either way, as on a server
        world.apply_color_texture_to_object(world.prop_name(prop), fake_carla.MaterialParameter.Diffuse, red)
        world.tick()
        centre = np.frombuffer(images[-1].raw_data, np.uint8).reshape(32, 32, 4)[16, 16]
        assert centre.tolist() == ([0, 0, 255, 255] if accepts else [180, 180, 180, 255])


def test_test_double_refuses_textures_for_unknown_objects():
    cm = fake_carla.module()
    world = cm.server.world
    tex = fake_carla.TextureColor(2, 2)
    with pytest.raises(RuntimeError, match="unable to find Actor to apply the texture"):
        world.apply_color_texture_to_object("NoSuchObject_1", fake_carla.MaterialParameter.Diffuse, tex)
    empty = fake_carla.TextureFloatColor(0, 0)
    with pytest.raises(RuntimeError, match="unable to find Actor"):
        world.apply_textures_to_object("NoSuchObject_1", tex, empty, empty, empty)
    world.apply_textures_to_object("Road_Road_1", tex, empty, empty, empty)  # the map's own objects take them
    assert [p for _, p, _ in world.textures] == [fake_carla.MaterialParameter.Diffuse]  # empty ones are skipped


# --------------------------------------------------------------------------- frames


def test_step_returns_rgb_image_and_ground_truth_that_matches_the_props():
    sim, cm = make_sim()
    world = cm.server.world
    with sim:
        sim.reset(scenario())
        frame = sim.step(Control(throttle=0.2))
        h, w = 64, 96
        assert frame.image.shape == (h, w, 3) and frame.image.dtype == np.uint8
        # the double's camera writes B = x, G = y, R = frame id (mod 256) in BGRA order
        assert frame.image[5, 7].tolist() == [world.frame % 256, 5, 7]
        assert frame.image[63, 95].tolist() == [world.frame % 256, 63, 95]
        cam = frame.camera
        assert (cam.width_px, cam.height_px) == (w, h)
        assert cam.fx_px == pytest.approx((w / 2) / math.tan(math.radians(25)))

        slot = frame.slots["stop_face"]
        assert slot.in_view and np.isfinite(slot.corners_px).all()
        assert ((slot.corners_px >= 0) & (slot.corners_px <= [w, h])).all()
        assert slot.corners_px[0, 0] < slot.corners_px[1, 0] and slot.corners_px[0, 1] < slot.corners_px[3, 1]
        assert frame.slots["road_1"].in_view
        # the prop the double holds sits where the ground truth says the slot is
        for name in ("stop_face", "road_1"):
            actor = sim._episode.slots[name].actor
            centre = cc.location_to_xyz(actor.get_transform().location, sim._z_ref)
            uv, _ = cam.project(centre[None])
            np.testing.assert_allclose(uv[0], frame.slots[name].corners_px.mean(0), atol=0.5)

        sign = frame.sign("stop_1")
        assert sign.box_xyxy is not None and sign.distance_m == pytest.approx(30.0, abs=3.0)
        boxes = {o.id: o.box_xyxy for o in frame.objects}
        assert boxes["parked"] is not None
        bumper_s = frame.ego.s_m + 2.7 + 0.9  # straight road: rear axle + wheelbase + front overhang
        assert frame.stop_line_distance_m == pytest.approx(39.0 - 0.45 - bumper_s, abs=1e-6)
        assert frame.lane.width_m == 3.5 and abs(frame.lane.lateral_offset_m) < 0.05
        assert frame.lane.centre_px.shape == (25, 2)
        assert json.loads(json.dumps(frame.ground_truth()))["slots"]["stop_face"]["in_view"] is True


def test_props_face_the_camera_with_image_axes_along_the_slot():
    """PropSpec's mesh convention: face normal local +z, image up local +x, image right local +y."""
    sim, _ = make_sim()
    with sim:
        frame = sim.reset(scenario())
        for name, placement in sim.layout.slots.items():
            tf = sim._episode.slots[name].actor.get_transform()
            fwd, right, up = (cc.vector_to_xyz(v) for v in
                              (tf.get_forward_vector(), tf.get_right_vector(), tf.get_up_vector()))
            tl, tr, _, bl = placement.corners_m
            np.testing.assert_allclose(right, (tr - tl) / np.linalg.norm(tr - tl), atol=1e-6)
            np.testing.assert_allclose(fwd, (tl - bl) / np.linalg.norm(tl - bl), atol=1e-6)
            np.testing.assert_allclose(up, placement.normal, atol=1e-6)
            assert float(up @ (frame.camera.position_m - placement.corners_m.mean(0))) > 0  # seen from the front
            scale = float(sim._episode.slots[name].actor.attributes["scale"])
            assert scale == pytest.approx(max(placement.size_m))


def test_ego_truth_is_the_rear_axle_in_patchsims_frame():
    sim, cm = make_sim()
    with sim:
        sim.reset(scenario())
        frame = sim.set_ego_pose(25.0, lateral_offset_m=0.5, heading_offset_rad=0.1, speed_mps=0.0)
        assert frame.ego.s_m == pytest.approx(25.0, abs=0.01)
        assert frame.lane.lateral_offset_m == pytest.approx(0.5, abs=0.01)
        assert frame.lane.heading_error_rad == pytest.approx(0.1, abs=1e-6)
        road_heading = cc.yaw_to_patchsim(cm.server.road.heading_deg)
        assert frame.ego.yaw_rad == pytest.approx(road_heading + 0.1, abs=1e-6)
        moving = next(t for t in sim._episode.traffic if t.spec.id == "mover")
        assert moving.actor.physics is False


def test_uncovered_sign_gets_a_board_with_its_face():
    sim, cm = make_sim()
    world = cm.server.world
    with sim:
        sim.reset(scenario())
        board = sim._episode.boards["limit_1"]
        assert set(sim._episode.boards) == {"limit_1"}  # stop_1 is shown by its slot's prop
        sent = [t for n, _, t in world.textures if n == board.name]
        assert len(sent) == 1
        face = np.flipud(sent[0].pixels)  # back to image rows
        assert face.shape == (TEXTURE_PX, TEXTURE_PX, 4)  # 0.60 x 0.75 m face on a 0.75 m square plane
        assert (face[:, :1, :3] == 128).all() and (face[:, -1:, :3] == 128).all()  # grey margins left and right
        assert (face[:, 3:-3, :3].max(-1) < 100).any()  # black lettering on the white face
    _, cm2 = make_sim()
    with CarlaSimulator(client_module=cm2, texture_px=TEXTURE_PX, sign_boards=False) as sim2:
        sim2.reset(scenario())
        assert sim2._episode.boards == {}


def test_prop_names_that_appear_only_after_a_tick_are_found():
    sim, cm = make_sim(names_lag_one_tick=True)
    with sim:
        sim.reset(scenario())
        props = [a for a in cm.server.world.alive() if a.type_id == "static.prop.mesh"]
        names = [p.name for p in sim._episode.slots.values()] + [sim._episode.boards["limit_1"].name]
        assert sorted(names) == sorted(f"StaticMeshActor_{a.id}" for a in props)


def test_town_is_loaded_when_the_server_has_another():
    cm = fake_carla.module()
    with CarlaSimulator(town="Town03", client_module=cm) as sim:
        assert sim.map.name == "Carla/Maps/Town03"
        first = cm.server.world
    with CarlaSimulator(town="Town03", client_module=cm):
        assert cm.server.world is first  # already loaded: kept


def test_map_traffic_signs_lists_carlas_own_signs():
    sim, _ = make_sim()
    with sim:
        sim.reset(scenario())
        names = [n for n, _ in sim.map_traffic_signs()]
        assert names == ["SM_StopSign_3"]


# --------------------------------------------------------------------------- the real package


def _resolve(root, dotted: str):
    obj = root
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def test_real_carla_has_every_name_the_backend_uses():
    import carla

    missing = [n for n in CARLA_API if not _has(carla, n)]
    assert missing == [], f"carla 0.9.16 lacks {missing}"


def test_test_double_has_every_name_the_backend_uses():
    missing = [n for n in CARLA_API if not _has(fake_carla, n)]
    assert missing == [], f"the test double lacks {missing}"
    assert callable(fake_carla.module().Client)


def test_is_listening_is_a_method_in_the_real_package_and_the_double():
    import carla

    assert callable(carla.Sensor.is_listening) and callable(fake_carla.Sensor.is_listening)
    assert not isinstance(fake_carla.Sensor.__dict__["is_listening"], property)


def test_test_double_weather_presets_and_defaults_match_the_real_package():
    import carla

    for name in ("ClearNoon", "CloudyNoon", "ClearSunset", "CloudySunset"):
        real, fake = getattr(carla.WeatherParameters, name), getattr(fake_carla.WeatherParameters, name)
        for f in cc.WEATHER_FIELDS:
            assert getattr(fake, f) == pytest.approx(getattr(real, f), abs=1e-6), (name, f)
    real, fake = carla.WeatherParameters(), fake_carla.WeatherParameters()
    assert fake.values() == pytest.approx({f: getattr(real, f) for f in cc.WEATHER_FIELDS}, abs=1e-6)
    with pytest.raises(TypeError):
        fake_carla.WeatherParameters(sunshine=1.0)


def test_test_double_world_settings_match_the_real_defaults():
    import carla

    real, fake = carla.WorldSettings(), fake_carla.WorldSettings()
    for name in vars(fake):
        want = getattr(real, name)
        assert getattr(fake, name) == (None if name == "fixed_delta_seconds" and want == 0 else pytest.approx(want))


def _has(root, dotted: str) -> bool:
    try:
        _resolve(root, dotted)
    except AttributeError:
        return False
    return True
