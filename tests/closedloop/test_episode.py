"""The episode engine with each driver: the car stops for a seen stop sign, runs a hidden one,
and a lane-keeper stays in its lane; what an episode records."""

from __future__ import annotations

import pytest

from patchsim.closedloop.drivers import GroundTruthDriver, LaneKeeperDriver, PlannerDriver
from patchsim.closedloop.episode import run_episode
from patchsim.closedloop.outcomes import BAND_NAMES
from patchsim.closedloop.patches import load_patch
from patchsim.sim.factory import make_simulator
from patchsim.sim.scenario import load_scenario
from patchsim.victims.registry import load_victim

FRAME_KEYS = {"i", "t_s", "ego_s_m", "speed_mps", "lateral_offset_m", "lane_width_m", "heading_error_rad",
              "stop_line_distance_m", "sign_distance_m", "sign_in_view", "patch_in_view", "control", "collision_with"}
OUTCOME_KEYS = {"stopped_before_line", "ran_stop_sign", "stop_line_overrun_m", "lane_departure", "time_to_departure_s",
                "max_lateral_offset_m", "mean_abs_lateral_offset_m", "collision"}
PLANNER_OUTCOME_KEYS = {"first_detection_m", "detection_rate_by_band", "stop_confirmed", "stop_confirmed_m",
                        "speed_limit_confirmed", "detection_rate"}


@pytest.fixture(scope="module")
def plain_sim():
    with make_simulator("embedded") as s:
        yield s


@pytest.fixture(scope="module")
def detector():
    return load_victim("detector:default")


def test_planner_stops_for_the_sign_it_sees(plain_sim, detector, near_stop_scenario):
    ep = run_episode(plain_sim, load_scenario(near_stop_scenario), 0, PlannerDriver(detector))
    o = ep.outcome
    assert o["stopped_before_line"] and not o["ran_stop_sign"] and o["stop_line_overrun_m"] == 0.0
    assert o["stop_confirmed"] and o["first_detection_m"] > 20
    assert ep.ended_by == "at_rest"
    assert set(o) >= OUTCOME_KEYS | PLANNER_OUTCOME_KEYS
    assert set(o["detection_rate_by_band"]) == set(BAND_NAMES)
    assert o["detection_rate_by_band"]["20-30"] > 0.5 and o["detection_rate_by_band"]["60+"] is None
    rec = ep.frames[0]
    assert set(rec) >= FRAME_KEYS | {"stop_score", "stop_confirmed", "detections"}
    assert all(len(d) == 6 for f in ep.frames for d in f["detections"])


def test_planner_runs_the_stop_sign_it_cannot_see(plain_sim, detector, near_stop_scenario, grey_poster):
    patch = load_patch(grey_poster)
    ep = run_episode(plain_sim, load_scenario(near_stop_scenario), 0, PlannerDriver(detector),
                     patches={patch.slot: patch.rgba})
    o = ep.outcome
    assert o["ran_stop_sign"] and not o["stopped_before_line"] and not o["stop_confirmed"]
    assert o["first_detection_m"] is None and o["stop_line_overrun_m"] > 5
    assert ep.ended_by == "passed_stop_line"
    assert any(f["patch_in_view"] for f in ep.frames)


def test_expert_driver_stops_and_records_its_label(plain_sim, near_stop_scenario):
    ep = run_episode(plain_sim, load_scenario(near_stop_scenario), 3, GroundTruthDriver())
    assert ep.outcome["stopped_before_line"]
    assert "expert_steer" in ep.frames[0] and "stop_score" not in ep.frames[0]
    assert "first_detection_m" not in ep.outcome  # no detector in the loop


def test_lanekeeper_stays_in_lane_and_a_bad_one_departs(plain_sim):
    sc = load_scenario("scenarios/lane_keep_curve.yaml")
    ep = run_episode(plain_sim, sc, 0, LaneKeeperDriver(load_victim("lanekeeper:pilotnet")), max_steps=120)
    assert not ep.outcome["lane_departure"] and ep.outcome["max_lateral_offset_m"] < 0.5
    assert ep.outcome["stopped_before_line"] is None  # no stop line on this road
    assert "victim_steer" in ep.frames[0]
    # a lane-keeper that always steers hard left leaves the lane, and the time to departure is reported
    hard_left = run_episode(plain_sim, sc, 0, LaneKeeperDriver(lambda frame: 0.3), max_steps=120)
    assert hard_left.outcome["lane_departure"] and 0 < hard_left.outcome["time_to_departure_s"] < 3
    assert hard_left.ended_by == "left_lane"


def test_collision_with_a_parked_car_is_an_outcome(plain_sim):
    from patchsim.sim.scenario import with_overrides

    sc = with_overrides(load_scenario("scenarios/lane_keep_straight.yaml"),
                        {"vehicles.0.lateral_m": -1.75, "vehicles.0.s_m": 40.0, "ego.lateral_offset_m": 0.0})
    ep = run_episode(plain_sim, sc, None, LaneKeeperDriver(lambda frame: 0.0), max_steps=200)
    assert ep.outcome["collision"] and ep.outcome["collision_with"] == "parked_1"
    assert ep.ended_by == "collision"


def test_the_episode_is_the_same_for_the_same_seed(plain_sim, detector, near_stop_scenario):
    sc = load_scenario(near_stop_scenario)
    a = run_episode(plain_sim, sc, 4, PlannerDriver(detector), max_steps=30)
    b = run_episode(plain_sim, sc, 4, PlannerDriver(detector), max_steps=30)
    assert a.frames == b.frames and a.ended_by == "max_steps"
