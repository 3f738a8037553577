"""The CARLA dry run: a scenario in CARLA terms without a server or the ``carla`` package.

The description is checked against ``scenarios/stop_sign_approach.yaml`` and against what the
backend actually asks of ``tests/fakes/fake_carla.py`` (a test double of the carla client API)
for the same scenario.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from patchsim.sim.carla_backend import CarlaSimulator
from patchsim.sim.carla_dryrun import describe_in_carla, format_dry_run
from patchsim.sim.scenario import load_scenario
from tests.fakes import fake_carla

ROOT = Path(__file__).resolve().parents[2]
STOP_SIGN = ROOT / "scenarios" / "stop_sign_approach.yaml"


@pytest.fixture(scope="module")
def stop_sign():
    return load_scenario(STOP_SIGN)


def test_describes_the_stop_sign_scenario_in_carla_terms(stop_sign):
    d = describe_in_carla(stop_sign, spawn_index=3, town="Town03")
    assert json.loads(json.dumps(d)) == d  # JSON-ready
    assert set(d) == {"scenario", "server", "weather", "camera", "ego", "traffic", "props", "road", "not_used"}
    assert d["server"]["town"] == "Town03" and d["server"]["spawn_index"] == 3
    assert d["server"]["world_settings"] == {"synchronous_mode": True, "fixed_delta_seconds": 0.05}
    assert d["server"]["traffic_manager"] == {"synchronous_mode": True, "random_device_seed": 0}
    assert d["scenario"]["steps"] == 280
    assert d["scenario"]["randomized_at_reset"] == ["ego.lateral_offset_m", "lighting.preset", "signs.0.offset_m"]

    w = d["weather"]
    assert w["carla_preset"] == "ClearNoon" and w["lighting_preset"] == "noon"
    assert w["parameters"]["cloudiness"] == 5.0 and w["parameters"]["scattering_intensity"] == 1.0
    assert w["parameters"]["sun_altitude_angle"] == 60.0 == w["adjusted"]["sun_altitude_angle"]
    assert set(w["adjusted"]) == {"sun_azimuth_angle", "sun_altitude_angle"}  # no fog in this scenario

    cam = d["camera"]
    assert cam["blueprint"] == "sensor.camera.rgb"
    assert cam["attributes"] == {"image_size_x": "640", "image_size_y": "384", "fov": "50", "exposure_mode": "manual",
                                 "exposure_compensation": "0.0000", "motion_blur_intensity": "0.0"}
    assert cam["relative_location_m"] == pytest.approx({"x": 1.8 - 1.35, "y": 0.0, "z": 1.4})
    assert cam["relative_rotation_deg"] == {"pitch": -2.0, "yaw": 0.0, "roll": 0.0}

    assert d["ego"]["blueprint"] == "vehicle.tesla.model3" and d["ego"]["role_name"] == "hero"
    assert d["ego"]["start_s_m"] == 18.8 and d["ego"]["lane"] == 1
    assert [(v["id"], v["blueprint"]) for v in d["traffic"]] == [("parked_1", "vehicle.tesla.model3"),
                                                                 ("oncoming_1", "vehicle.mercedes.sprinter")]

    (prop,) = d["props"]  # the stop sign is covered by its slot, so it gets no board
    assert prop["name"] == "prop 1 (slot 'stop_face')" and prop["blueprint"] == "static.prop.mesh"
    assert prop["attributes"] == {"mesh_path": "/Engine/BasicShapes/Plane.Plane", "scale": "0.75000"}
    assert prop["face_size_m"] == prop["content_size_m"] == [0.75, 0.75]

    assert d["road"]["ahead_of_start_m"] == pytest.approx(160 - 18.8 + 1) and d["road"]["stop_line_s_m"] == 80.0
    assert any(line.startswith("road segments (straight 160 m)") for line in d["not_used"])
    assert any("stop line is not painted" in line for line in d["not_used"])


def test_agrees_with_what_the_backend_asks_of_the_server(stop_sign):
    d = describe_in_carla(stop_sign)
    cm = fake_carla.module()
    world = cm.server.world
    with CarlaSimulator(client_module=cm, texture_px=16) as sim:
        sim.reset(stop_sign)
        assert sim.camera_settings == d["camera"]["attributes"]
        assert world.weathers[-1].values() == pytest.approx(d["weather"]["parameters"])
        assert world.settings.fixed_delta_seconds == d["server"]["world_settings"]["fixed_delta_seconds"]
        ego = sim._episode.ego
        props = [a for a in world.alive() if a.type_id.startswith("static.prop.")]
        assert [a.attributes["scale"] for a in props] == [p["attributes"]["scale"] for p in d["props"]]
        assert [p.label for p in sim._episode.slots.values()] == [p["name"] for p in d["props"]]
        vehicles = [a for a in world.alive() if a.type_id.startswith("vehicle.") and a is not ego]
        assert [(a.type_id, a.attributes["color"]) for a in vehicles] == \
               [(v["blueprint"], v["color"]) for v in d["traffic"]]
        assert ego.type_id == d["ego"]["blueprint"] and ego.attributes["role_name"] == d["ego"]["role_name"]
        mount = sim._episode.camera._transform
        assert (mount.location.x, mount.location.y, mount.location.z) == \
               pytest.approx(tuple(d["camera"]["relative_location_m"].values()))
        assert sim.texture_checks["stop_face"].startswith("passed")  # 62 m away, 8 px wide on 640 px


def test_needs_no_carla_package():
    script = (
        "import json, sys\n"
        "sys.modules['carla'] = None  # any import of carla now fails\n"
        "from patchsim.sim.carla_dryrun import describe_in_carla, format_dry_run\n"
        "from patchsim.sim.scenario import load_scenario\n"
        f"d = describe_in_carla(load_scenario({str(STOP_SIGN)!r}))\n"
        "print(json.dumps(d['weather']['carla_preset']))\n"
        "format_dry_run(d)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '"ClearNoon"'


def test_format_dry_run_is_readable(stop_sign):
    text = format_dry_run(describe_in_carla(stop_sign, town="Town03"))
    for expected in ("Scenario 'stop_sign_approach' in CARLA (dry run, no server)", "town: Town03",
                     "carla_preset: ClearNoon", "exposure_mode: manual", "motion_blur_intensity: 0.0",
                     "parked_1: vehicle.tesla.model3 at s_m 55", "prop 1 (slot 'stop_face'): static.prop.mesh",
                     "scale=0.75000", "not used:", "  - road segments (straight 160 m)"):
        assert expected in text, expected


def test_fog_noise_and_boards_show_up(stop_sign):
    sc = load_scenario(STOP_SIGN)
    sc.lighting.fog_visibility_m = 300.0
    sc.lighting.preset = "overcast"
    sc.camera.noise_std = 0.02
    sc.patch_slots = []
    d = describe_in_carla(sc)
    assert d["weather"]["carla_preset"] == "CloudyNoon"
    adjusted = d["weather"]["adjusted"]
    assert adjusted["fog_density"] == pytest.approx(10.0) and adjusted["fog_distance"] == 0.0
    assert [p["name"] for p in d["props"]] == ["prop 1 (sign 'stop_1')"]  # a board when no slot covers the sign
    assert d["props"][0]["texture_check"] == "none"
    assert any(line.startswith("fog_visibility_m 300") for line in d["not_used"])
    assert any(line.startswith("camera noise_std") for line in d["not_used"])
