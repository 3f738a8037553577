"""Kinematic bicycle model of the ego vehicle, referenced at the rear axle."""

from __future__ import annotations

import math
from dataclasses import dataclass

from patchsim.sim.base import Control


@dataclass
class VehicleState:
    x_m: float
    y_m: float
    yaw_rad: float
    speed_mps: float
    steer: float = 0.0  # last applied steer command in [-1, 1]


@dataclass
class KinematicBicycle:
    """``x' = v cos(yaw)``, ``y' = v sin(yaw)``, ``yaw' = v tan(delta) / L``, ``v' = a``.

    Attributes:
        wheelbase_m: L.
        max_steer_rad: front wheel angle at steer = 1.
        max_accel_mps2, max_brake_mps2: acceleration at throttle = 1 and deceleration at brake = 1.
        drag_per_s: speed-proportional drag, so a coasting car slows down.
    """

    wheelbase_m: float = 2.7
    max_steer_rad: float = math.radians(35.0)
    max_accel_mps2: float = 3.0
    max_brake_mps2: float = 8.0
    drag_per_s: float = 0.02

    def step(self, state: VehicleState, control: Control, dt_s: float) -> VehicleState:
        """Advance ``dt_s`` seconds with constant control (exact arc for the position)."""
        c = control.clipped()
        delta = c.steer * self.max_steer_rad
        accel = c.throttle * self.max_accel_mps2 - c.brake * self.max_brake_mps2 - self.drag_per_s * state.speed_mps
        v0 = state.speed_mps
        v1 = max(0.0, v0 + accel * dt_s)
        # distance travelled with the speed clamped at zero
        if accel < 0 and v0 + accel * dt_s < 0:
            dist = v0 * v0 / (-2 * accel) if accel != 0 else 0.0
        else:
            dist = 0.5 * (v0 + v1) * dt_s
        k = math.tan(delta) / self.wheelbase_m
        yaw0 = state.yaw_rad
        if abs(k) < 1e-9:
            x = state.x_m + dist * math.cos(yaw0)
            y = state.y_m + dist * math.sin(yaw0)
            yaw = yaw0
        else:
            yaw = yaw0 + k * dist
            x = state.x_m + (math.sin(yaw) - math.sin(yaw0)) / k
            y = state.y_m - (math.cos(yaw) - math.cos(yaw0)) / k
        return VehicleState(x, y, yaw, v1, c.steer)
