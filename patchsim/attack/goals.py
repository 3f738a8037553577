"""One class per attack goal: the victim it needs, its loss on a rendered EOT batch, what it measures
on held-out samples, and its success test. The config, the optimizer and the held-out evaluation ask
the goal (``make_goal``) instead of branching on its name.

Detector goals act on the candidates near the attacked object (the slot's outline box), with the
hinged-logit terms of :mod:`patchsim.attack.losses`:

- :class:`Vanish` hides ``source_class``; success: the sign is no longer detected where the clean
  sign was.
- :class:`Misclassify` turns ``source_class`` into ``target_class``; success: the target is detected
  and the source is not, where the clean sign was detected.
- :class:`Appear` makes a phantom ``target_class``; success: the target is detected.

Lane-keeper goal:

- :class:`Steer` turns the wheel towards ``direction``; success: the steering changes towards that
  side by more than twice the clean steering's spread over the samples (at least 1 degree).
- :class:`Depart` takes the car out of its lane towards ``direction`` over a drive rolled out under
  the victim's own steering (:mod:`patchsim.attack.rollout`); success: the rolled-out drive leaves
  the lane with the marking, where it stayed in it without.

Each goal also names the closed-loop failure it is after (``drove_as_wanted``): the car fails to
stop (vanish), fails to stop and confirms the target sign instead (misclassify), leaves its lane
(steer). The optimizer uses it to choose among its best patches by driving them.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import numpy as np
import torch

from patchsim.attack.losses import (
    SCORE_FLOOR,
    SPACES,
    best_near,
    decision_logit,
    detected,
    drive_logit,
    logit,
    near_candidates,
    per_frame_share,
    push_down,
    push_down_logit,
    push_up,
)
from patchsim.attack.rollout import RolloutConfig, roll_out
from patchsim.closedloop.outcomes import departure_limit_m
from patchsim.errors import ConfigError

STEER_DEG_PER_UNIT = 35.0  # steer command 1.0 = the lane-keepers' 35 degree wheel angle


class HeldoutResult:
    """Per-sample outcomes of a patch on held-out conditions (each sample rendered with and without it).

    Attributes:
        success: (M,) bool, the goal's test per counted sample.
        counted: (N,) bool over all samples: those the test counts (M of them); e.g. a vanish counts only
            the samples where the clean sign was detected.
        margin: detector goals, when measured: how far the scores are past the goal (higher is better).
    """

    tiebreak_name: ClassVar[str | None] = None

    def __init__(self, success: np.ndarray, margin: float | None = None, counted: np.ndarray | None = None):
        self.success = success
        self.counted = np.ones(len(success), bool) if counted is None else counted
        self.margin = margin

    def failed_samples(self) -> np.ndarray:
        """Indices among all samples of the counted ones the patch failed on."""
        return np.flatnonzero(self.counted)[~self.success]

    def part_summary(self, part: np.ndarray) -> dict:
        """The figures of the samples in ``part`` ((N,) bool over all samples), e.g. one distance band."""
        ok = self.success[part[self.counted]]
        return {"samples": int(part.sum()), "counted": int(len(ok)),
                "heldout_success_rate": round(float(ok.mean()), 4) if len(ok) else None}

    @property
    def success_rate(self) -> float:
        return float(self.success.mean()) if len(self.success) else 0.0

    @property
    def selection_score(self) -> tuple[float, float]:
        """(success rate, tie-break) to rank patches, higher is better."""
        return self.success_rate, self.margin or 0.0

    def summary(self) -> dict:
        return {"heldout_success_rate": round(self.success_rate, 4), "heldout_samples": int(len(self.success))}


class DetectionResult(HeldoutResult):
    """Detector goals: ``clean_hit`` / ``adv_hit`` (N,) whether the source class was detected on the
    object without / with the patch; ``adv_target`` whether the target class was (with it)."""

    tiebreak_name = "score_margin"

    def __init__(self, success, clean_hit, adv_hit, adv_target=None, margin=None, counted=None):
        super().__init__(success, margin, counted)
        self.clean_hit, self.adv_hit, self.adv_target = clean_hit, adv_hit, adv_target

    def part_summary(self, part: np.ndarray) -> dict:
        return {**super().part_summary(part), "clean_detection_rate": round(float(self.clean_hit[part].mean()), 4),
                "adversarial_detection_rate": round(float(self.adv_hit[part].mean()), 4)}

    def summary(self) -> dict:
        out = {**super().summary(), "clean_detection_rate": round(float(self.clean_hit.mean()), 4),
               "adversarial_detection_rate": round(float(self.adv_hit.mean()), 4)}
        if self.adv_target is not None:
            out["adversarial_target_rate"] = round(float(self.adv_target.mean()), 4)
        return out


class SteerResult(HeldoutResult):
    """Lane-keeper goals: wheel angles in degrees without / with the patch; ``steer_sign`` +1 when
    the goal steers left, -1 right. The tie-break is the mean change towards that side, which keeps
    growing after every sample has passed the success margin."""

    tiebreak_name = "steer_change_to_side_deg"

    def __init__(self, success, clean_steer_deg, adv_steer_deg, steer_sign: float = 1.0):
        super().__init__(success)
        self.clean_steer_deg, self.adv_steer_deg, self.steer_sign = clean_steer_deg, adv_steer_deg, steer_sign

    @property
    def selection_score(self) -> tuple[float, float]:
        if not len(self.success):
            return 0.0, 0.0
        return self.success_rate, float(self.steer_sign * (self.adv_steer_deg - self.clean_steer_deg).mean())

    def summary(self) -> dict:
        change = self.adv_steer_deg - self.clean_steer_deg
        return {**super().summary(), "mean_steer_change_deg": round(float(change.mean()), 3),
                "steer_change_std_deg": round(float(change.std()), 3),
                "clean_steer_std_deg": round(float(self.clean_steer_deg.std()), 3),
                "clean_steer_mean_deg": round(float(self.clean_steer_deg.mean()), 3)}


class DepartResult(HeldoutResult):
    """Rolled-out drives without / with the patch: ``clean_side_m`` / ``adv_side_m`` (N,) the furthest the rear
    axle got towards the goal's side of the lane centre; ``clean_departed`` / ``adv_departed`` (N,) whether a
    wheel left the lane; ``adv_departure_s`` (N,) seconds from the drive's start to leaving it (NaN if not).
    Counted samples: those whose clean drive stayed in its lane. The tie-break is the mean furthest offset."""

    tiebreak_name = "side_offset_m"

    def __init__(self, clean_side_m, adv_side_m, clean_departed, adv_departed, adv_departure_s):
        super().__init__((adv_departed & ~clean_departed)[~clean_departed], counted=~clean_departed)
        self.clean_side_m, self.adv_side_m = clean_side_m, adv_side_m
        self.clean_departed, self.adv_departed, self.adv_departure_s = clean_departed, adv_departed, adv_departure_s

    @property
    def selection_score(self) -> tuple[float, float]:
        return self.success_rate, float(self.adv_side_m.mean()) if len(self.adv_side_m) else 0.0

    def summary(self) -> dict:
        t = self.adv_departure_s[self.adv_departed & ~self.clean_departed]
        return {**super().summary(), "clean_departure_rate": round(float(self.clean_departed.mean()), 4),
                "adversarial_departure_rate": round(float(self.adv_departed.mean()), 4),
                "clean_mean_side_offset_m": round(float(self.clean_side_m.mean()), 3),
                "adversarial_mean_side_offset_m": round(float(self.adv_side_m.mean()), 3),
                "mean_time_to_departure_s": round(float(t.mean()), 3) if len(t) else None}


class Goal(abc.ABC):
    """What an attack wants of its victim."""

    name: ClassVar[str]
    victim_kind: ClassVar[str]  # "detector" or "lanekeeper"

    @abc.abstractmethod
    def loss(self, victim, batch) -> torch.Tensor:
        """(B,) loss of an EOT batch (``batch.images`` (B, 3, H, W), ``batch.boxes`` (B, 4)); lower is a
        more successful attack. Differentiable in the images."""

    @abc.abstractmethod
    def measure(self, victim, batch, margin: bool = False) -> dict[str, torch.Tensor]:
        """Per-sample measurements of a rendered batch, on the CPU (the same for clean and patched frames)."""

    @abc.abstractmethod
    def result(self, clean: dict[str, np.ndarray], adv: dict[str, np.ndarray]) -> HeldoutResult:
        """The success test over all samples, from the clean and the patched measurements."""

    def drove_as_wanted(self, outcome: dict) -> bool | None:
        """Whether a closed-loop episode's ``outcome`` (see :mod:`patchsim.closedloop.outcomes`) is the
        failure this goal is after; None when the goal has no closed-loop test."""
        return None

    def check_victim(self, victim, spec: str) -> None:
        """A ConfigError naming the key when ``victim`` cannot serve this goal."""
        is_lanekeeper = hasattr(victim, "road_view")
        if is_lanekeeper != (self.victim_kind == "lanekeeper"):
            kind = "lane-keeper" if self.victim_kind == "lanekeeper" else "detector"
            raise ConfigError(f"goal {self.name!r} needs a {kind}, but victim {spec!r} is not one", key="victim")


class DetectorGoal(Goal):
    """A goal on the detector's scores near the attacked object."""

    victim_kind = "detector"
    hides_source: ClassVar[bool] = False
    wants_target: ClassVar[bool] = False

    def __init__(self, source_class: str = "stop_sign", target_class: str | None = None, conf: float = 0.25,
                 space: str = "logit", floor: float = SCORE_FLOOR, competition: bool = False):
        if space not in SPACES:
            raise ValueError(f"unknown loss space {space!r}; use one of {', '.join(SPACES)}")
        if self.wants_target and not target_class:
            raise ValueError(f"goal {self.name!r} needs a target class")
        self.source_class, self.target_class = source_class, target_class if self.wants_target else None
        self.conf, self.space, self.floor = conf, space, floor
        self.competition = competition

    def source_score(self, det, raw) -> torch.Tensor:
        """(B, N) the hidden class's score per candidate: its probability, or with ``competition`` the
        single-label decoding's verdict on it (:func:`~patchsim.attack.losses.decision_logit`), as a probability."""
        if not self.competition:
            return det.class_score(raw, self.source_class)
        return torch.sigmoid(decision_logit(raw.scores, det.class_indices(self.source_class), self.conf))

    def check_victim(self, victim, spec: str) -> None:
        super().check_victim(victim, spec)
        if self.competition and getattr(victim, "end2end", False):
            raise ConfigError(f"class_competition follows a decoding that keeps one class per box; victim {spec!r} "
                              "has an NMS-free head, whose decoding keeps every class that scores",
                              key="class_competition")
        for key, name in (("source_class", self.source_class), ("target_class", self.target_class)):
            if name is not None:
                try:
                    victim.class_indices(name)
                except ConfigError as exc:
                    raise ConfigError(exc.message, key=key) from exc

    def loss(self, victim, batch) -> torch.Tensor:
        return self.loss_of(victim, victim(batch.images), batch.boxes, batch.drive)

    def loss_of(self, det, raw, target_boxes: torch.Tensor, drive: torch.Tensor | None = None) -> torch.Tensor:
        """(B,) loss from the detector's dense outputs ``raw`` (boxes (B, N, 4)) and the object boxes (B, 4).
        With ``drive`` (B,) (samples drawn in drives), the hidden class's term is the drive's: a hinge on the
        soft-OR of its frames' scores (:func:`~patchsim.attack.losses.drive_logit`), shared among its frames."""
        if self.space == "logit":
            down, up = (lambda p: push_down(p, self.floor)), push_up
        else:
            down, up = (lambda p: p), (lambda p: -p)
        near = near_candidates(raw.boxes_xyxy.detach(), target_boxes)
        loss = torch.zeros(raw.scores.shape[0], dtype=raw.scores.dtype, device=raw.scores.device)
        if self.hides_source:
            p = best_near(self.source_score(det, raw), near)
            if drive is None:
                loss = loss + down(p)
            else:
                drive_seen, member = drive_logit(p, drive)
                per_drive = push_down_logit(drive_seen, self.floor) if self.space == "logit" else \
                    torch.sigmoid(drive_seen)
                loss = loss + per_frame_share(per_drive, member)
        if self.wants_target:
            loss = loss + up(best_near(det.class_score(raw, self.target_class), near))
        return loss

    def measure(self, det, batch, margin: bool = False) -> dict[str, torch.Tensor]:
        raw = det(batch.images)
        dets = det.predict(batch.images, conf=self.conf, raw=raw)
        out = {"hit": detected(dets, batch.boxes, det.class_indices(self.source_class), self.conf)}
        if self.target_class:
            out["target"] = detected(dets, batch.boxes, det.class_indices(self.target_class), self.conf)
        if margin:
            out["margin"] = self._margin(det, raw, batch.boxes)
        return out

    def _margin(self, det, raw, boxes: torch.Tensor) -> torch.Tensor:
        """(B,) minus the source class's best logit near the object (when hidden), plus the target's (when
        wanted): how far past the goal the scores are, growing after every sample has passed the threshold."""
        near = near_candidates(raw.boxes_xyxy, boxes)
        out = torch.zeros(raw.scores.shape[0])
        if self.hides_source:
            out -= logit(best_near(self.source_score(det, raw), near)).float().cpu()
        if self.wants_target:
            out += logit(best_near(det.class_score(raw, self.target_class), near)).float().cpu()
        return out

    #: whether the test counts only the samples where the clean sign was detected (a sign missed even
    #: without the patch is no success of the patch)
    counts_clean_hits: ClassVar[bool] = True

    @abc.abstractmethod
    def success(self, clean_hit: np.ndarray, adv_hit: np.ndarray, adv_target: np.ndarray | None) -> np.ndarray:
        """(N,) bool per sample."""

    def result(self, clean: dict[str, np.ndarray], adv: dict[str, np.ndarray]) -> DetectionResult:
        margin = float(adv["margin"].mean()) if "margin" in adv else None
        counted = clean["hit"] if self.counts_clean_hits else np.ones(len(clean["hit"]), bool)
        success = self.success(clean["hit"], adv["hit"], adv.get("target"))[counted]
        return DetectionResult(success, clean["hit"], adv["hit"], adv.get("target"), margin, counted)


class Vanish(DetectorGoal):
    name = "vanish"
    hides_source = True

    def drove_as_wanted(self, outcome: dict) -> bool | None:
        stopped = outcome.get("stopped_before_line")  # the car fails to stop: it runs the line or never brakes
        return None if stopped is None else not stopped

    def success(self, clean_hit, adv_hit, adv_target):
        return ~adv_hit


class Misclassify(DetectorGoal):
    name = "misclassify"
    hides_source = True
    wants_target = True

    def drove_as_wanted(self, outcome: dict) -> bool | None:
        stopped = outcome.get("stopped_before_line")
        if stopped is None:
            return None
        if self.target_class != "speed_limit":  # the planner confirms only stop signs and speed limits
            return not stopped
        return not stopped and bool(outcome.get("speed_limit_confirmed"))  # a speed limit confirmed instead

    def success(self, clean_hit, adv_hit, adv_target):
        return adv_target & ~adv_hit


class Appear(DetectorGoal):
    name = "appear"
    wants_target = True
    counts_clean_hits = False

    def success(self, clean_hit, adv_hit, adv_target):
        return adv_target


class Steer(Goal):
    """Steer a lane-keeper towards ``direction`` (``left`` is a positive steer command)."""

    name = "steer"
    victim_kind = "lanekeeper"

    def __init__(self, direction: str = "left"):
        self.direction, self.sign = direction, _side_sign(self.name, direction)

    def loss(self, victim, batch) -> torch.Tensor:
        return -self.sign * victim(batch.images).float()

    def drove_as_wanted(self, outcome: dict) -> bool | None:
        return bool(outcome.get("lane_departure"))

    def measure(self, victim, batch, margin: bool = False) -> dict[str, torch.Tensor]:
        return {"steer_deg": victim(batch.images).float().cpu() * STEER_DEG_PER_UNIT}

    def result(self, clean: dict[str, np.ndarray], adv: dict[str, np.ndarray]) -> SteerResult:
        change = adv["steer_deg"] - clean["steer_deg"]
        margin_deg = max(2.0 * float(clean["steer_deg"].std()), 1.0)
        return SteerResult(self.sign * change > margin_deg, clean["steer_deg"], adv["steer_deg"], self.sign)


def _side_sign(goal: str, direction: str) -> float:
    """+1 for ``left`` (a positive steer command), -1 for ``right``; a ValueError naming the goal otherwise."""
    if direction not in ("left", "right"):
        raise ValueError(f"{goal} direction must be left or right, not {direction!r}")
    return 1.0 if direction == "left" else -1.0


class Depart(Goal):
    """Take the car out of its lane towards ``direction`` (``left`` or ``right``) over drives rolled out under the
    victim's own steering from each sample's frame (:func:`~patchsim.attack.rollout.roll_out`); needs a bank
    with the road plane (:attr:`~patchsim.eot.scenes.SceneBank.ground`: a road slot in the simulator)."""

    name = "depart"
    victim_kind = "lanekeeper"
    SOFTNESS_M = 0.1

    def __init__(self, direction: str = "left", rollout: RolloutConfig | None = None):
        self.direction, self.sign = direction, _side_sign(self.name, direction)
        self.rollout = rollout or RolloutConfig()

    def _roll(self, victim, batch):
        if batch.ground is None:
            raise ConfigError("goal 'depart' rolls drives out on the road plane, which only simulator banks of a "
                              "road slot have", key="scenes.slot")
        r = self.rollout
        return roll_out(victim, batch.images, batch.ground, r.speeds(batch.images.shape[0], batch.images.device),
                        r.steps, r.dt_s)

    def loss(self, victim, batch) -> torch.Tensor:
        """(B,) a soft hinge on each step's offset towards the goal's side, short of ``rollout.past_edge_m`` past
        the departure limit, averaged over the drive: every step the car is nearer the edge counts."""
        r = self._roll(victim, batch)
        side = self.sign * r.lane_offset_m[:, 1:]
        goal = departure_limit_m(r.lane_width_m)[:, None] + self.rollout.past_edge_m
        return torch.nn.functional.softplus((goal - side) / self.SOFTNESS_M).mul(self.SOFTNESS_M).mean(1)

    def measure(self, victim, batch, margin: bool = False) -> dict[str, torch.Tensor]:
        r = self._roll(victim, batch)
        side = self.sign * r.lane_offset_m.float().cpu()
        out_of_lane = r.lane_offset_m.abs().cpu() > departure_limit_m(r.lane_width_m.cpu())[:, None]
        first = torch.where(out_of_lane.any(1), out_of_lane.float().argmax(1).float() * self.rollout.dt_s,
                            torch.full((side.shape[0],), float("nan")))
        return {"side_m": side.amax(1), "departed": out_of_lane.any(1), "departure_s": first}

    def result(self, clean: dict[str, np.ndarray], adv: dict[str, np.ndarray]) -> DepartResult:
        return DepartResult(clean["side_m"], adv["side_m"], clean["departed"], adv["departed"], adv["departure_s"])

    def drove_as_wanted(self, outcome: dict) -> bool | None:
        return bool(outcome.get("lane_departure"))


GOALS: dict[str, type[Goal]] = {g.name: g for g in (Vanish, Misclassify, Appear, Steer, Depart)}


def make_goal(name: str, source_class: str = "stop_sign", target_class: str | None = None,
              steer_direction: str = "left", conf: float = 0.25, space: str = "logit",
              floor: float = SCORE_FLOOR, rollout: RolloutConfig | None = None, competition: bool = False) -> Goal:
    """The goal called ``name`` with its settings (``rollout``: a
    :class:`~patchsim.attack.rollout.RolloutConfig`, for ``depart``; ``competition``: detector goals that hide
    a class count it hidden where another class outscores it, see :mod:`patchsim.attack.losses`)."""
    if name not in GOALS:
        raise ValueError(f"unknown goal {name!r} (goals: {', '.join(GOALS)})")
    cls = GOALS[name]
    if issubclass(cls, DetectorGoal):
        return cls(source_class, target_class, conf, space, floor, competition)
    if cls is Depart:
        return cls(steer_direction, rollout)
    return cls(steer_direction)
