from patchsim.sim.render import expert_for
from patchsim.sim.scenario import load_scenario
from patchsim.victims.evaluate import drive_closed_loop


def test_expert_keeps_the_curve_within_30cm(sim):
    sc = load_scenario("scenarios/lane_keep_curve.yaml")
    driver = {}

    def steer(frame):
        if "e" not in driver:
            driver["e"] = expert_for(sim.scenario, sim.road)
        e = frame.ego
        return driver["e"].steering(e.x_m, e.y_m, e.yaw_rad, e.speed_mps)

    sim.labels_mode = False
    try:
        result = drive_closed_loop(steer, sc, seed=1, distance_m=200.0, sim=sim)
    finally:
        sim.labels_mode = True
    assert result.distance_m > 195
    assert max(abs(o) for o in result.offsets_m) <= 0.3
    assert not result.departed


def test_expert_stops_at_the_stop_line(sim):
    from patchsim.sim.base import Control  # noqa: F401

    sc = load_scenario("scenarios/stop_sign_approach.yaml")
    frame = sim.reset(sc, seed=0)
    driver = expert_for(sim.scenario, sim.road)
    for _ in range(sim.scenario.num_steps):
        frame = sim.step(driver.control(frame))
        if frame.ego.speed_mps < 0.01:
            break
    assert frame.ego.speed_mps < 0.05
    assert -0.5 <= frame.stop_line_distance_m <= 1.5
