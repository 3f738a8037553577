"""The ground-truth expert driver: pure pursuit on the true lane centre, and a speed controller
that stops at a stop line. It drives scenario renders and labels lane-keeper training data."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from patchsim.sim.base import Control, Frame
from patchsim.sim.layout import FRONT_OVERHANG_M
from patchsim.sim.road import Road
from patchsim.sim.scenario import Scenario


@dataclass
class ExpertDriver:
    """Pure pursuit with a speed-dependent look-ahead.

    Attributes:
        lane_centre_m: lateral position of the lane centre to follow.
        lookahead_m: minimum look-ahead; the look-ahead grows as 0.6 s x speed.
        target_speed_mps: cruise speed.
        stop_at_line: brake to stop the front bumper at the stop line.
    """

    road: Road
    lane_centre_m: float
    wheelbase_m: float
    max_steer_rad: float
    lookahead_m: float = 8.0
    target_speed_mps: float = 10.0
    stop_at_line: bool = False
    stop_line_s_m: float | None = None
    comfort_brake_mps2: float = 3.0

    def steering(self, x_m: float, y_m: float, yaw_rad: float, speed_mps: float) -> float:
        """Steer command in [-1, 1] for a rear-axle pose."""
        s, _ = self.road.project(x_m, y_m)
        ld = max(self.lookahead_m, 0.6 * speed_mps)
        tx, ty = self.road.point(s + ld, self.lane_centre_m)
        dx, dy = tx - x_m, ty - y_m
        local_y = -math.sin(yaw_rad) * dx + math.cos(yaw_rad) * dy
        dist2 = dx * dx + dy * dy
        delta = math.atan(2.0 * self.wheelbase_m * local_y / max(dist2, 1e-6))
        return float(np.clip(delta / self.max_steer_rad, -1.0, 1.0))

    def speed_control(self, frame: Frame) -> tuple[float, float]:
        """(throttle, brake) for the frame's speed and stop line."""
        v = frame.ego.speed_mps
        target = self.target_speed_mps
        if self.stop_at_line and frame.stop_line_distance_m is not None:
            gap = frame.stop_line_distance_m
            if gap <= 0.3:
                return 0.0, 1.0 if v > 0.05 else 0.3
            needed = v * v / (2 * gap)
            if needed >= self.comfort_brake_mps2 * 0.8:
                return 0.0, float(np.clip(needed / 8.0 * 1.1, 0.0, 1.0))
            target = min(target, math.sqrt(2 * self.comfort_brake_mps2 * 0.7 * gap))
        err = target - v
        if err >= 0:
            return float(np.clip(0.5 * err + 0.02 * v, 0.0, 1.0)), 0.0
        return 0.0, float(np.clip(-0.3 * err, 0.0, 1.0))

    @classmethod
    def for_scenario(cls, scenario: Scenario, road: Road) -> "ExpertDriver":
        """The ground-truth driver a (resolved) scenario asks for: its lane, cruise speed and look-ahead,
        stopping at the stop line when the scenario says so and a stop sign governs the line."""
        sc = scenario
        governs = any(s.kind == "stop_sign" for s in sc.signs) and sc.road.stop_line_s_m is not None
        return cls(
            road=road,
            lane_centre_m=road.lane_centre_m(sc.ego_lane),
            wheelbase_m=sc.ego.wheelbase_m,
            max_steer_rad=math.radians(sc.ego.max_steer_deg),
            lookahead_m=sc.driver.lookahead_m,
            target_speed_mps=sc.driver.target_speed_mps,
            stop_at_line=sc.driver.stop_at_stop_line and governs,
            stop_line_s_m=sc.road.stop_line_s_m,
        )

    def control(self, frame: Frame) -> Control:
        e = frame.ego
        throttle, brake = self.speed_control(frame)
        return Control(self.steering(e.x_m, e.y_m, e.yaw_rad, e.speed_mps), throttle, brake)


def front_bumper_s(road: Road, x_m: float, y_m: float, yaw_rad: float, wheelbase_m: float) -> float:
    """Road position of the front bumper centre."""
    reach = wheelbase_m + FRONT_OVERHANG_M
    s, _ = road.project(x_m + reach * math.cos(yaw_rad), y_m + reach * math.sin(yaw_rad))
    return s
