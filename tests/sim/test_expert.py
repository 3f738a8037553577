from patchsim.closedloop.drivers import GroundTruthDriver
from patchsim.closedloop.episode import run_episode
from patchsim.sim.scenario import load_scenario


def test_expert_keeps_the_curve_within_30cm(sim):
    sc = load_scenario("scenarios/lane_keep_curve.yaml")
    sim.labels_mode = False
    try:
        ep = run_episode(sim, sc, 1, GroundTruthDriver())
    finally:
        sim.labels_mode = True
    travelled = ep.frames[-1]["ego_s_m"] - ep.frames[0]["ego_s_m"]
    assert travelled > 190
    assert ep.outcome["max_lateral_offset_m"] <= 0.3
    assert not ep.outcome["lane_departure"]


def test_expert_stops_at_the_stop_line(sim):
    sc = load_scenario("scenarios/stop_sign_approach.yaml")
    sim.labels_mode = False
    try:
        ep = run_episode(sim, sc, 0, GroundTruthDriver())
    finally:
        sim.labels_mode = True
    assert ep.ended_by == "at_rest"
    assert ep.outcome["stopped_before_line"] and not ep.outcome["ran_stop_sign"]
    assert -0.5 <= ep.frames[-1]["stop_line_distance_m"] <= 1.5
