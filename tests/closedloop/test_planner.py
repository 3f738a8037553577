"""The perception-driven planner: confirmation after k of n frames, the latch, speed limits."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from patchsim.closedloop.drivers import PlannerConfig, PlannerDriver
from patchsim.config import from_dict
from patchsim.errors import ConfigError
from patchsim.sim.scenario import load_scenario


@dataclass
class _Dets:
    boxes_xyxy: torch.Tensor
    scores: torch.Tensor
    classes: torch.Tensor


class ScriptedDetector:
    """A detector test double that returns, per call, the scripted (class, score) detections."""

    names = {0: "stop_sign", 1: "speed_limit", 2: "yield", 3: "vehicle"}
    device = torch.device("cpu")

    def __init__(self, script: list[list[tuple[int, float]]]):
        self.script = list(script)
        self.calls = 0

    def class_indices(self, name: str) -> list[int]:
        return [k for k, v in self.names.items() if v == name]

    def predict(self, images, conf=0.25, **_):
        dets = [d for d in self.script[self.calls] if d[1] >= conf]
        self.calls += 1
        n = len(dets)
        return [_Dets(torch.tensor([[10.0, 10.0, 30.0, 30.0]] * n).reshape(n, 4),
                      torch.tensor([s for _, s in dets]), torch.tensor([c for c, _ in dets], dtype=torch.long))]


def _planner(script, **cfg) -> PlannerDriver:
    return PlannerDriver(ScriptedDetector(script), from_dict(PlannerConfig, cfg))




STOP, LIMIT = 0, 1


def test_confirms_after_two_of_three_and_keeps_it(sim):
    script = [[(STOP, 0.9)], [], [(STOP, 0.3)], [], [], []]
    p = _planner(script)
    frame = sim.reset(load_scenario("scenarios/stop_sign_approach.yaml"), seed=0)
    p.begin(sim.scenario, sim.road)
    confirmed = []
    for _ in script:
        p.act(frame)
        confirmed.append(p.state()["stop_confirmed"])
    # frame 0: 1 of 1; frame 1: 1 of 2; frame 2: 2 of 3 -> confirmed; then latched although nothing is seen
    assert confirmed == [False, False, True, True, True, True]
    assert p.law.stop_at_line  # it brakes for the line once confirmed


def test_a_weak_or_isolated_detection_does_not_confirm(sim):
    script = [[(STOP, 0.2)], [(STOP, 0.24)], [(STOP, 0.9)], [], [], [(STOP, 0.9)], [], []]
    p = _planner(script)
    frame = sim.reset(load_scenario("scenarios/stop_sign_approach.yaml"), seed=0)
    p.begin(sim.scenario, sim.road)
    for _ in script:
        p.act(frame)
    assert not p.state()["stop_confirmed"] and not p.law.stop_at_line
    assert p.state()["stop_score"] == 0.0


def test_one_frame_confirms_in_the_most_cautious_setting(sim):
    p = _planner([[(STOP, 0.5)]], confirm_k=1, confirm_n=1)
    frame = sim.reset(load_scenario("scenarios/stop_sign_approach.yaml"), seed=0)
    p.begin(sim.scenario, sim.road)
    p.act(frame)
    assert p.state()["stop_confirmed"]


def test_a_confirmed_speed_limit_lowers_the_cruise_speed(sim):
    p = _planner([[(LIMIT, 0.8)], [(LIMIT, 0.8)], []], speed_limit_mps=5.0)
    frame = sim.reset(load_scenario("scenarios/stop_sign_approach.yaml"), seed=0)
    p.begin(sim.scenario, sim.road)
    p.act(frame)
    assert p.law.target_speed_mps == sim.scenario.driver.target_speed_mps
    p.act(frame)
    assert p.state()["speed_limit_confirmed"] and p.law.target_speed_mps == 5.0
    assert not p.state()["stop_confirmed"]


def test_thresholds_are_checked():
    with pytest.raises(ConfigError, match="confirm_k"):
        from_dict(PlannerConfig, {"confirm_k": 4, "confirm_n": 3})
    with pytest.raises(ConfigError, match="min_score"):
        from_dict(PlannerConfig, {"min_score": 1.5})
