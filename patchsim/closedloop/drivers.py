"""Drivers: who is at the wheel in an episode.

A driver has ``begin(scenario, road)`` (called once the simulator has reset, with the resolved
scenario), ``act(frame) -> Control``, and ``state() -> dict``, the per-frame facts the episode
records (planner state, detections, the victim's steering). Three drivers:

- :class:`GroundTruthDriver`: the expert on ground truth (pure pursuit on the true lane centre,
  stopping at the stop line when the scenario says so). Renders and lane-keeper training data.
- :class:`PlannerDriver`: the detector in the loop. A stop sign is confirmed after ``confirm_k``
  of the last ``confirm_n`` frames had a stop-sign detection scoring at least ``min_score``, and
  kept once confirmed; the car then brakes to stop at the stop line (its position comes from the
  map, as in an HD-map stack). A confirmed speed-limit sign lowers the cruise speed to
  ``speed_limit_mps``. Steering is the expert's: this driver tests the detector, not the steering.
- :class:`LaneKeeperDriver`: a lane-keeping victim steers; speed is the expert's cruise control,
  or another driver's throttle and brake (a planner) when given.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import numpy as np
import torch

from patchsim.config import param
from patchsim.errors import ConfigError
from patchsim.sim.base import Control, Frame
from patchsim.sim.expert import ExpertDriver
from patchsim.sim.road import Road
from patchsim.sim.scenario import Scenario


class Driver(Protocol):
    name: str

    def begin(self, scenario: Scenario, road: Road) -> None:
        """Start an episode of the resolved ``scenario`` on ``road``."""

    def act(self, frame: Frame) -> Control:
        """The control for this frame."""

    def state(self) -> dict[str, Any]:
        """JSON-ready facts about the last ``act`` (recorded with the frame)."""


def image_tensor(image: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(1, 3, H, W) float in [0, 1] of an (H, W, 3) uint8 image."""
    return torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255).to(device)


def frame_tensor(frame: Frame, device: torch.device | str = "cpu") -> torch.Tensor:
    """(1, 3, H, W) float in [0, 1] of a frame's image."""
    return image_tensor(frame.image, device)


def best_of(d, class_idx: torch.Tensor) -> tuple[float, int | None]:
    """Score and row of the best detection of any of ``class_idx`` in ``d`` (CPU
    :class:`~patchsim.victims.detector.Detections`), or (0.0, None) when there is none."""
    mine = torch.isin(d.classes, class_idx)
    if not bool(mine.any()):
        return 0.0, None
    row = int(torch.where(mine, d.scores, torch.full_like(d.scores, -1.0)).argmax())
    return float(d.scores[row]), row


def detection_rows(d, names: dict[int, str]) -> list[list]:
    """``[[class name, score, x1, y1, x2, y2], ...]`` of CPU detections, rounded for the records."""
    return [[names[int(c)], round(float(s), 4), *[round(float(v), 1) for v in b]]
            for b, s, c in zip(d.boxes_xyxy.tolist(), d.scores.tolist(), d.classes.tolist())]


def detect(detector, image: torch.Tensor, min_score: float):
    """The detector's decoded detections of one (1, 3, H, W) image with score >= ``min_score``, on the CPU."""
    from patchsim.victims.detector import Detections

    d = detector.predict(image, conf=min_score)[0]
    return Detections(d.boxes_xyxy.cpu(), d.scores.cpu(), d.classes.cpu())


class GroundTruthDriver:
    """The expert on ground truth.

    Args:
        stop_at_line: None follows the scenario (stop when a stop sign governs the line).
        steer_noise_std: Gaussian noise added to the steering command (DART data collection);
            ``state()["expert_steer"]`` is always the noise-free command, the label to learn.
        policy: ``frame -> steer`` that steers instead of the expert (DAgger data collection).
        rng: draws the noise (seeded by the caller).
    """

    name = "expert"

    def __init__(self, stop_at_line: bool | None = None, steer_noise_std: float = 0.0,
                 policy: Callable[[Frame], float] | None = None, rng: np.random.Generator | None = None):
        self.stop_at_line = stop_at_line
        self.steer_noise_std = float(steer_noise_std)
        self.policy = policy
        self._rng = rng if rng is not None else np.random.default_rng(0)
        self.law: ExpertDriver | None = None
        self._expert_steer = 0.0

    def begin(self, scenario: Scenario, road: Road) -> None:
        self.law = ExpertDriver.for_scenario(scenario, road)
        if self.stop_at_line is not None:
            self.law.stop_at_line = self.stop_at_line and scenario.road.stop_line_s_m is not None

    def act(self, frame: Frame) -> Control:
        c = self.law.control(frame)
        self._expert_steer = c.steer
        if self.policy is not None:
            c.steer = float(np.clip(self.policy(frame), -1.0, 1.0))
        elif self.steer_noise_std:
            c.steer = float(np.clip(c.steer + self._rng.normal(0.0, self.steer_noise_std), -1.0, 1.0))
        return c

    def state(self) -> dict[str, Any]:
        return {"expert_steer": self._expert_steer}


@dataclass
class PlannerConfig:
    """Thresholds of the perception-driven planner (the victim's side of the test, not the attacker's)."""

    min_score: float = param(0.25, range=(0.0, 1.0), help="detection score that counts as seeing a sign")
    confirm_k: int = param(2, range=(1, 30), help="frames with a detection needed among the last confirm_n")
    confirm_n: int = param(3, range=(1, 30), help="window of recent frames for confirmation")
    record_min_score: float = param(0.05, range=(0.0, 1.0), help="detections kept in the per-frame record")
    speed_limit_mps: float = param(6.7, unit="m/s", range=(0.0, 40.0),
                                   help="cruise speed once a speed-limit sign is confirmed (15 mph)")

    def __post_init__(self) -> None:
        from patchsim.config import FieldError

        if self.confirm_k > self.confirm_n:
            raise FieldError("confirm_k", f"confirm_k {self.confirm_k} is above confirm_n {self.confirm_n}")


class _Confirmer:
    """k of the last n frames, latched once reached."""

    def __init__(self, k: int, n: int):
        self.k = k
        self.recent: deque[bool] = deque(maxlen=n)
        self.confirmed = False

    def update(self, hit: bool) -> bool:
        self.recent.append(hit)
        if sum(self.recent) >= self.k:
            self.confirmed = True
        return self.confirmed


class PlannerDriver:
    """The detector in the loop (see the module docstring).

    Args:
        detector: a :class:`~patchsim.victims.detector.YoloDetector`; it must have ``stop_sign``;
            ``speed_limit`` is used when it has one.
    """

    name = "planner"

    def __init__(self, detector, config: PlannerConfig | None = None):
        self.detector = detector
        self.cfg = config or PlannerConfig()
        self._stop_idx = torch.tensor(detector.class_indices("stop_sign"))
        try:
            self._limit_idx = torch.tensor(detector.class_indices("speed_limit"))
        except ConfigError:  # a detector without speed limits
            self._limit_idx = None
        self.law: ExpertDriver | None = None

    def begin(self, scenario: Scenario, road: Road) -> None:
        self.law = ExpertDriver.for_scenario(scenario, road)
        self._stop_line = scenario.road.stop_line_s_m is not None
        self._cruise = self.law.target_speed_mps
        self.law.stop_at_line = False
        self.stop = _Confirmer(self.cfg.confirm_k, self.cfg.confirm_n)
        self.limit = _Confirmer(self.cfg.confirm_k, self.cfg.confirm_n)
        self._state: dict[str, Any] = {}

    def perceive(self, frame: Frame) -> dict[str, Any]:
        """Run the detector on the frame and update the confirmations; returns the state to record."""
        d = detect(self.detector, frame_tensor(frame, self.detector.device), self.cfg.record_min_score)
        stop_score, _ = best_of(d, self._stop_idx)
        limit_score = best_of(d, self._limit_idx)[0] if self._limit_idx is not None else 0.0
        self.stop.update(stop_score >= self.cfg.min_score)
        self.limit.update(limit_score >= self.cfg.min_score)
        self._state = {
            "stop_score": round(stop_score, 4),
            "speed_limit_score": round(limit_score, 4),
            "stop_confirmed": self.stop.confirmed,
            "speed_limit_confirmed": self.limit.confirmed,
            "detections": detection_rows(d, self.detector.names),
        }
        return self._state

    def act(self, frame: Frame) -> Control:
        self.perceive(frame)
        self.law.stop_at_line = self.stop.confirmed and self._stop_line
        self.law.target_speed_mps = min(self._cruise, self.cfg.speed_limit_mps) if self.limit.confirmed else self._cruise
        return self.law.control(frame)

    def state(self) -> dict[str, Any]:
        return self._state


class LaneKeeperDriver:
    """A lane-keeping victim at the wheel.

    Args:
        model: a :class:`~patchsim.victims.lanekeeper.LaneKeeper` (or any ``frame -> steer`` callable).
        speed_driver: another driver whose throttle and brake are used (a planner); None keeps the
            expert's cruise control.
    """

    name = "lanekeeper"

    def __init__(self, model: torch.nn.Module | Callable[[Frame], float], speed_driver: Any = None):
        self.model = model
        self.speed_driver = speed_driver
        self.law: ExpertDriver | None = None
        self._steer = 0.0

    def begin(self, scenario: Scenario, road: Road) -> None:
        self.law = ExpertDriver.for_scenario(scenario, road)
        if self.speed_driver is not None:
            self.speed_driver.begin(scenario, road)

    def steer(self, frame: Frame) -> float:
        if isinstance(self.model, torch.nn.Module):
            device = next(self.model.parameters()).device
            with torch.no_grad():
                return float(self.model(frame_tensor(frame, device))[0])
        return float(self.model(frame))

    def act(self, frame: Frame) -> Control:
        self._steer = self.steer(frame)
        if self.speed_driver is not None:
            c = self.speed_driver.act(frame)
            throttle, brake = c.throttle, c.brake
        else:
            throttle, brake = self.law.speed_control(frame)
        return Control(float(np.clip(self._steer, -1.0, 1.0)), throttle, brake)

    def state(self) -> dict[str, Any]:
        out = {"victim_steer": round(self._steer, 5)}
        if self.speed_driver is not None:
            out.update(self.speed_driver.state())
        return out
