from pathlib import Path

import pytest

from patchsim.errors import ConfigError
from patchsim.sim.scenario import load_scenario, randomized

SCENARIOS = sorted((Path(__file__).resolve().parents[2] / "scenarios").glob("*.yaml"))


def test_required_scenarios_ship():
    names = {p.stem for p in SCENARIOS}
    assert {"stop_sign_approach", "speed_limit_approach", "lane_keep_straight", "lane_keep_curve"} <= names


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_every_scenario_loads_and_randomizes(path):
    sc = load_scenario(path)
    assert sc.num_steps > 0
    a, b = randomized(sc, 3), randomized(sc, 3)
    assert a == b  # same seed, same scenario
    if sc.randomize:
        assert any(randomized(sc, s) != a for s in range(4, 12))


def test_curve_scenario_has_150m_radius():
    sc = load_scenario("scenarios/lane_keep_curve.yaml")
    assert any(seg.kind == "arc" and abs(seg.radius_m - 150) < 1 for seg in sc.road.segments)


def _bad(tmp_path, text):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    return p


def test_unknown_key_wrong_value_and_bad_references(tmp_path):
    with pytest.raises(ConfigError, match=r"bad.yaml:3: key 'road.lane_widht_m': unknown key"):
        load_scenario(_bad(tmp_path, "name: t\nroad:\n  lane_widht_m: 3.5\n"))
    with pytest.raises(ConfigError, match=r"bad.yaml:2: key 'camera.hfov_deg': 500.0 is out of range"):
        load_scenario(_bad(tmp_path, "camera:\n  hfov_deg: 500\n"))
    with pytest.raises(ConfigError, match=r"key 'patch_slots.0.sign'.*'nope', which is not in signs"):
        load_scenario(_bad(tmp_path, "patch_slots:\n  - {name: s, kind: sign_face, sign: nope}\n"))
    with pytest.raises(ConfigError, match=r"key 'randomize.ego.nothing'"):
        load_scenario(_bad(tmp_path, "randomize:\n  ego.nothing: [0, 1]\n"))
    with pytest.raises(ConfigError, match=r"key 'signs.0.kind'.*'stop_sing' is not one of"):
        load_scenario(_bad(tmp_path, "signs:\n  - {id: a, kind: stop_sing}\n"))
